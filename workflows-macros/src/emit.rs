//! Pieces of generated code shared by both macros.

use proc_macro2::{Ident, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::{Attribute, Path};

/// On error: the original item (so the rest of the crate and IDEs still see it) and the errors.
pub(crate) fn with_errors(item: impl ToTokens, error: syn::Error) -> TokenStream {
    let mut out = error.to_compile_error();
    item.to_tokens(&mut out);
    out
}

/// `SourceLocation { .. }` of the item named `ident` (the line of its name).
pub(crate) fn location(krate: &Path, ident: &Ident) -> TokenStream {
    let span = ident.span();
    let line = quote_spanned!(span=> ::core::line!());
    let file = quote_spanned!(span=> ::core::file!());
    let module = quote_spanned!(span=> ::core::module_path!());
    quote! {
        #krate::__private::SourceLocation { module_path: #module, file: #file, line: #line }
    }
}

/// The lint attributes (`allow`, `warn`, ...) among `attrs`.
pub(crate) fn lint_attributes(attrs: &[Attribute]) -> Vec<&Attribute> {
    attrs
        .iter()
        .filter(|a| ["allow", "expect", "warn", "deny", "forbid"].iter().any(|lint| a.path().is_ident(lint)))
        .collect()
}
