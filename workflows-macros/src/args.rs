//! Parsing the options of `#[step(...)]` and `#[workflow(...)]`.
//!
//! Options are `key = value`, `key(...)` or a bare `key`, separated by commas. Each key has
//! one setter; a repeated or unknown key is an error that lists the valid ones.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ExprPath, Ident, Lit, LitInt, LitStr, Path, Token};

/// One `key = value`, `key(...)` or `key`.
pub(crate) struct Arg {
    pub key: Ident,
    pub value: Value,
}

pub(crate) enum Value {
    Flag,
    Assign(Expr),
    /// `key(...)`: the tokens inside the parentheses.
    List(TokenStream),
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        // `parse_any` accepts keywords such as `crate` and `async` as keys.
        let key = Ident::parse_any(input)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Value::Assign(input.parse()?)
        } else if input.peek(syn::token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            Value::List(content.parse()?)
        } else {
            Value::Flag
        };
        Ok(Self { key, value })
    }
}

/// Collects several errors so that all of them are reported at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub fn push_result<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    pub fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Parses the option list, rejecting repeated keys.
pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> Vec<Arg> {
    let args = match Punctuated::<Arg, Token![,]>::parse_terminated.parse2(tokens) {
        Ok(args) => args,
        Err(error) => {
            errors.push(error);
            return Vec::new();
        }
    };
    let mut seen: Vec<String> = Vec::new();
    let mut unique = Vec::new();
    for arg in args {
        let key = arg.key.to_string();
        if seen.contains(&key) {
            errors.push(syn::Error::new_spanned(&arg.key, format!("option `{key}` is given twice; keep one")));
        } else {
            seen.push(key);
            unique.push(arg);
        }
    }
    unique
}

/// The error for a key that is not one of `valid`.
pub(crate) fn unknown(arg: &Arg, attribute: &str, valid: &[&str]) -> syn::Error {
    let expected = valid.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
    syn::Error::new_spanned(
        &arg.key,
        format!("unknown option `{}` for #[{attribute}]; expected one of: {expected}", arg.key),
    )
}

impl Arg {
    fn assigned(&self, expected: &str) -> syn::Result<&Expr> {
        match &self.value {
            Value::Assign(expr) => Ok(ungroup(expr)),
            _ => Err(syn::Error::new_spanned(&self.key, format!("expected `{} = {expected}`", self.key))),
        }
    }

    /// `key = "string"`, not empty.
    pub fn string(&self) -> syn::Result<LitStr> {
        match self.assigned("\"...\"")? {
            Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) if !s.value().trim().is_empty() => Ok(s.clone()),
            Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => {
                Err(syn::Error::new_spanned(s, format!("`{}` must not be empty", self.key)))
            }
            other => Err(syn::Error::new_spanned(other, format!("expected a string: `{} = \"...\"`", self.key))),
        }
    }

    /// `key = path::to::item`.
    pub fn path(&self) -> syn::Result<Path> {
        match self.assigned("path::to::function")? {
            Expr::Path(ExprPath { path, qself: None, .. }) => Ok(path.clone()),
            other => Err(syn::Error::new_spanned(
                other,
                format!("expected the path of a function: `{} = my_module::my_function`", self.key),
            )),
        }
    }

    /// `key = 3`, a `u32`.
    pub fn u32(&self) -> syn::Result<u32> {
        match self.assigned("N")? {
            Expr::Lit(ExprLit { lit: Lit::Int(int), .. }) => parse_u32(int),
            other => Err(syn::Error::new_spanned(other, format!("expected a whole number: `{} = 1`", self.key))),
        }
    }

    /// `key = "duration"`, checked at expansion time.
    pub fn duration(&self) -> syn::Result<std::time::Duration> {
        match self.assigned("\"30s\"")? {
            Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => crate::duration::parse(s),
            other => {
                Err(syn::Error::new_spanned(other, format!("expected a duration string: `{} = \"30s\"`", self.key)))
            }
        }
    }

    /// `key = 1.5` or `key = 2`, a number.
    pub fn number(&self) -> syn::Result<f64> {
        match self.assigned("1.5")? {
            Expr::Lit(ExprLit { lit: Lit::Float(f), .. }) => f.base10_parse(),
            Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => i.base10_parse::<u32>().map(f64::from),
            other => Err(syn::Error::new_spanned(other, format!("expected a number: `{} = 0.2`", self.key))),
        }
    }

    /// `key = "word"` or `key = word`: one of `choices`.
    pub fn choice(&self, choices: &[&str]) -> syn::Result<String> {
        let expected = || choices.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
        let (word, spanned): (String, &dyn quote::ToTokens) = match self.assigned("\"...\"")? {
            Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => (s.value(), s),
            Expr::Path(ExprPath { path, qself: None, .. }) if path.get_ident().is_some() => {
                (path.get_ident().map(ToString::to_string).unwrap_or_default(), path)
            }
            // `continue` is a keyword, so it parses as an expression of its own.
            Expr::Continue(c) if c.label.is_none() => ("continue".to_owned(), c),
            other => return Err(syn::Error::new_spanned(other, format!("expected one of {}", expected()))),
        };
        if choices.contains(&word.as_str()) {
            Ok(word)
        } else {
            Err(syn::Error::new_spanned(
                spanned,
                format!("`{word}` is not a choice for `{}`; expected one of {}", self.key, expected()),
            ))
        }
    }

    /// `key(...)`: the options inside the parentheses.
    pub fn list(&self, errors: &mut Errors) -> Option<Vec<Arg>> {
        match &self.value {
            Value::List(tokens) => Some(parse(tokens.clone(), errors)),
            _ => {
                errors.push(syn::Error::new_spanned(&self.key, format!("expected `{}(...)`", self.key)));
                None
            }
        }
    }

    /// `crate = "path"` (or an unquoted path): where the runtime crate is.
    pub fn crate_path(&self) -> syn::Result<Path> {
        match self.assigned("\"path\"")? {
            Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => s.parse(),
            Expr::Path(ExprPath { path, qself: None, .. }) => Ok(path.clone()),
            other => {
                Err(syn::Error::new_spanned(other, "expected a path: `crate = \"my_reexport::workflows_runtime\"`"))
            }
        }
    }
}

/// Values passed through `macro_rules!` fragments (`$name:literal`, `$path:path`) arrive
/// wrapped in invisible groups.
fn ungroup(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(group) => ungroup(&group.expr),
        other => other,
    }
}

fn parse_u32(int: &LitInt) -> syn::Result<u32> {
    int.base10_parse::<u32>().map_err(|_| syn::Error::new_spanned(int, "expected a whole number from 0 to 4294967295"))
}

/// The path generated code uses to reach the runtime.
pub(crate) fn runtime_path(krate: Option<Path>) -> Path {
    krate.unwrap_or_else(|| {
        let mut path: Path = Ident::new("workflows_runtime", Span::call_site()).into();
        path.leading_colon = Some(Default::default());
        path
    })
}
