//! Checking and taking apart the signatures of step and workflow functions.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, Ident, Pat, PatIdent, PathArguments, ReturnType, Signature, Type, TypePath, TypeReference,
};

use crate::args::Errors;

/// One input parameter: its pattern (as written) and type.
pub(crate) struct Input {
    pub pat: Pat,
    pub ty: Type,
}

/// `Result<Ok, Err>` split.
pub(crate) struct ResultType {
    pub ok: Type,
    pub err: Type,
}

/// Checks what every step and workflow function must be: a free, non-generic `async fn`.
pub(crate) fn check_common(sig: &Signature, attribute: &str, errors: &mut Errors) {
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            format!("#[{attribute}] must be applied to an `async fn`; write `async fn {}(...)`", sig.ident),
        ));
    }
    if let Some(receiver) = sig.receiver() {
        errors.push(syn::Error::new_spanned(
            receiver,
            format!("#[{attribute}] cannot be applied to a method; make `{}` a free function", sig.ident),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            format!(
                "#[{attribute}] functions cannot be generic: their input and output types must be known to store them"
            ),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(variadic, format!("#[{attribute}] functions cannot be variadic")));
    }
    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new_spanned(constness, format!("#[{attribute}] functions cannot be `const`")));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(abi, format!("#[{attribute}] functions cannot have an `extern` ABI")));
    }
}

/// The typed parameters (receivers were reported by [`check_common`]).
pub(crate) fn typed_inputs(sig: &Signature) -> Vec<Input> {
    sig.inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(pat_type) => Some(Input { pat: (*pat_type.pat).clone(), ty: (*pat_type.ty).clone() }),
            FnArg::Receiver(_) => None,
        })
        .collect()
}

/// The last path segment's name of a type, looking through references.
pub(crate) fn last_segment(ty: &Type) -> Option<&Ident> {
    match ty {
        Type::Path(TypePath { path, qself: None, .. }) => path.segments.last().map(|s| &s.ident),
        Type::Reference(TypeReference { elem, .. }) => last_segment(elem),
        Type::Paren(p) => last_segment(&p.elem),
        Type::Group(g) => last_segment(&g.elem),
        _ => None,
    }
}

/// The generic type arguments of the last path segment (`Result<A, B>` → `[A, B]`).
fn type_arguments(ty: &Type) -> Vec<&Type> {
    let Type::Path(TypePath { path, qself: None, .. }) = ty else { return Vec::new() };
    let Some(segment) = path.segments.last() else { return Vec::new() };
    let PathArguments::AngleBracketed(args) = &segment.arguments else { return Vec::new() };
    args.args
        .iter()
        .filter_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect()
}

/// Splits a return type written `Result<T, E>`.
pub(crate) fn result_type(sig: &Signature, expected: &str) -> syn::Result<ResultType> {
    let ReturnType::Type(_, ty) = &sig.output else {
        return Err(syn::Error::new(
            sig.paren_token.span.close(),
            format!("missing return type: `{}` must return `{expected}`", sig.ident),
        ));
    };
    let is_result = last_segment(ty).is_some_and(|id| id == "Result");
    match (is_result, type_arguments(ty).as_slice()) {
        (true, [ok, err]) => Ok(ResultType { ok: (*ok).clone(), err: (*err).clone() }),
        (true, [_]) => Err(syn::Error::new_spanned(
            ty,
            format!("write the error type out: `{expected}` (type aliases such as `Result<T>` hide it from the macro)"),
        )),
        _ => Err(syn::Error::new_spanned(ty, format!("`{}` must return `{expected}`", sig.ident))),
    }
}

/// `StepResponse<T, C>` → `(T, C)`; `StepResponse<T>` → `(T, T)`; anything else → `None`.
pub(crate) fn step_response(ty: &Type) -> Option<(Type, Type)> {
    if last_segment(ty).is_none_or(|id| id != "StepResponse") {
        return None;
    }
    match type_arguments(ty).as_slice() {
        [output] => Some(((*output).clone(), (*output).clone())),
        [output, compensation] => Some(((*output).clone(), (*compensation).clone())),
        _ => None,
    }
}

/// `T` of `Completion<T>` (an async step's output), if the type is one.
pub(crate) fn completion(ty: &Type) -> Option<Type> {
    if last_segment(ty).is_none_or(|id| id != "Completion") {
        return None;
    }
    match type_arguments(ty).as_slice() {
        [output] => Some((*output).clone()),
        _ => None,
    }
}

/// True for `&StepContext` (or `&'a path::StepContext`).
pub(crate) fn is_step_context_ref(ty: &Type) -> bool {
    matches!(ty, Type::Reference(r) if r.mutability.is_none() && last_segment(&r.elem).is_some_and(|id| id == "StepContext"))
}

/// True for `StepContext` taken by value or by `&mut`.
pub(crate) fn is_step_context_misused(ty: &Type) -> bool {
    match ty {
        Type::Reference(r) => r.mutability.is_some() && last_segment(&r.elem).is_some_and(|id| id == "StepContext"),
        _ => last_segment(ty).is_some_and(|id| id == "StepContext"),
    }
}

/// The identifier a parameter binds, if it is a plain `name: Type` (or `mut name`).
pub(crate) fn binding(pat: &Pat) -> Option<&Ident> {
    match pat {
        Pat::Ident(PatIdent { ident, subpat: None, by_ref: None, .. }) => Some(ident),
        _ => None,
    }
}

/// A type written compactly for messages and docs: `Vec<Order>`, `&str`.
pub(crate) fn type_string(ty: &impl ToTokens) -> String {
    compact(ty.to_token_stream())
}

fn compact(tokens: TokenStream) -> String {
    let text = tokens.to_string();
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            let tight_after = matches!(prev, Some('<' | '&' | '(' | '[' | ':' | '\''));
            let tight_before = matches!(next, Some('<' | '>' | ',' | ')' | ']' | ':'));
            if tight_after || tight_before {
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The span of a signature's inputs (for errors about missing parameters).
pub(crate) fn inputs_span(sig: &Signature) -> proc_macro2::Span {
    if sig.inputs.is_empty() { sig.paren_token.span.join() } else { sig.inputs.span() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_types() {
        let ty: Type = syn::parse_quote!(std::collections::HashMap<String, Vec<u8>>);
        assert_eq!(type_string(&ty), "std::collections::HashMap<String, Vec<u8>>");
        let ty: Type = syn::parse_quote!(&'a str);
        assert_eq!(type_string(&ty), "&'a str");
        let ty: Type = syn::parse_quote!((u32, String));
        assert_eq!(type_string(&ty), "(u32, String)");
    }
}
