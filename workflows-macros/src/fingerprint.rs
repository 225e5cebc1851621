//! The fingerprint of a workflow's code: a hash of its signature's and body's tokens.
//!
//! Tokens, not text: reformatting and comments do not change it; any change to the code does.
//! Executions record it so a replay mismatch can tell whether the code changed since.

use quote::ToTokens;
use syn::ItemFn;

/// 16 hex digits of xxh3-64 over the function's signature and body tokens.
pub(crate) fn fingerprint(function: &ItemFn) -> String {
    let mut tokens = function.sig.to_token_stream();
    function.block.to_tokens(&mut tokens);
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(tokens.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn formatting_and_comments_do_not_matter_but_code_does() {
        let a: syn::ItemFn =
            syn::parse_str("async fn w(wf: &Workflow, i: u32) -> Result<u32, E> { step(wf, i).await }").unwrap();
        let b: syn::ItemFn =
            syn::parse_str("async fn w(wf: &Workflow,\n i: u32) -> Result<u32, E> {\n // hi\n step(wf, i)\n .await }")
                .unwrap();
        let c: syn::ItemFn =
            syn::parse_str("async fn w(wf: &Workflow, i: u32) -> Result<u32, E> { step(wf, i + 1).await }").unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_eq!(fingerprint(&a).len(), 16);
    }
}
