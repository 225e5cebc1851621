//! Pieces of generated code shared by both macros.

use proc_macro2::{Group, Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, Item, ItemFn, Path};

/// On error: the original item (so the rest of the crate and IDEs still see it) and the errors.
pub(crate) fn with_errors(item: impl ToTokens, error: syn::Error) -> TokenStream {
    let mut out = error.to_compile_error();
    item.to_tokens(&mut out);
    out
}

/// The function an attribute is on; on error, what to emit instead: the item is not a function
/// (`#[step] struct ...`), or it does not parse (then syn's error, at the token it stopped at).
pub(crate) fn parse_function(item: TokenStream, attribute: &str) -> Result<ItemFn, TokenStream> {
    let error = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => return Ok(function),
        Err(error) => error,
    };
    if syn::parse2::<Item>(item.clone()).is_ok() {
        let error = syn::Error::new(Span::call_site(), format!("#[{attribute}] must be applied to an `async fn`"));
        Err(with_errors(item, error))
    } else {
        // syn's error, at the token it stopped at; the item as written is not emitted again,
        // so rustc does not report its own parse error of it twice.
        Err(error.to_compile_error())
    }
}

/// A span at `tokens`' location that resolves names like the macro's own code.
///
/// Generated code spanned at user tokens points errors at the user's code; but a span taken
/// from tokens that came through `macro_rules!` also carries that macro's hygiene, and the
/// generated locals (`__wf_err`, ...) would no longer resolve. `located_at` keeps only the location.
pub(crate) fn span_at(tokens: &impl Spanned) -> Span {
    Span::call_site().located_at(tokens.span())
}

/// `tokens` shown at `at`'s location, each resolving as before (see [`span_at`]).
///
/// For generated code that is about a user's token (a bound on their type) and should be
/// reported there as a whole, not from the macro's call site to that token.
pub(crate) fn located_at(tokens: TokenStream, at: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut inner = Group::new(group.delimiter(), located_at(group.stream(), at));
                inner.set_span(group.span().located_at(at));
                token = TokenTree::Group(inner);
            } else {
                token.set_span(token.span().located_at(at));
            }
            token
        })
        .collect()
}

/// A generated local variable's name, resolved at the macro's call site but shown at `tokens`
/// (errors about the value then point at the user's code).
pub(crate) fn local_at(name: &str, tokens: &impl Spanned) -> Ident {
    Ident::new(name, span_at(tokens))
}

/// `SourceLocation { .. }` of the item named `ident` (the line of its name).
pub(crate) fn location(krate: &Path, ident: &Ident) -> TokenStream {
    // The ident's own span, context included: `line!()` resolves its expansion context, and
    // these macros bind no names, so hygiene does not matter here.
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
