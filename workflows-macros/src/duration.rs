//! Durations in options (`timeout = "30s"`, `backoff = "100ms..10s"`), parsed and checked at
//! expansion time so a typo is a compile error on the string, and generated code only splices
//! integers.

use proc_macro2::TokenStream;
use quote::quote;
use syn::LitStr;

/// Parses `"30s"`, `"5m"`, `"1h 30m"`, `"250ms"`, `"7d"`: a positive duration.
pub(crate) fn parse(lit: &LitStr) -> syn::Result<std::time::Duration> {
    parse_text(lit, &lit.value())
}

fn parse_text(lit: &LitStr, text: &str) -> syn::Result<std::time::Duration> {
    let duration = humantime::parse_duration(text.trim()).map_err(|e| {
        syn::Error::new_spanned(
            lit,
            format!("`{text}` is not a duration ({e}); write it like \"250ms\", \"30s\", \"5m\", \"1h 30m\" or \"7d\""),
        )
    })?;
    if duration.is_zero() {
        return Err(syn::Error::new_spanned(lit, format!("`{text}` is zero; a duration here must be positive")));
    }
    Ok(duration)
}

/// A backoff written `"1s"` (fixed) or `"100ms..10s"` (exponential, from..to).
#[derive(Debug)]
pub(crate) enum Backoff {
    Fixed(std::time::Duration),
    Exponential(std::time::Duration, std::time::Duration),
}

pub(crate) fn parse_backoff(lit: &LitStr) -> syn::Result<Backoff> {
    let text = lit.value();
    match text.split_once("..") {
        None => Ok(Backoff::Fixed(parse_text(lit, &text)?)),
        Some((from, to)) => {
            let (from, to) = (parse_text(lit, from)?, parse_text(lit, to)?);
            if from > to {
                return Err(syn::Error::new_spanned(
                    lit,
                    format!("the backoff `{text}` starts above its cap; write `first..longest`, e.g. \"100ms..10s\""),
                ));
            }
            Ok(Backoff::Exponential(from, to))
        }
    }
}

/// `::core::time::Duration::new(secs, nanos)`.
pub(crate) fn tokens(duration: std::time::Duration) -> TokenStream {
    let (secs, nanos) = (duration.as_secs(), duration.subsec_nanos());
    quote!(::core::time::Duration::new(#secs, #nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> LitStr {
        LitStr::new(s, proc_macro2::Span::call_site())
    }

    #[test]
    fn parses_and_checks() {
        assert_eq!(parse(&lit("30s")).unwrap().as_secs(), 30);
        assert_eq!(parse(&lit("1h 30m")).unwrap().as_secs(), 5400);
        assert!(parse(&lit("0s")).unwrap_err().to_string().contains("zero"));
        assert!(parse(&lit("soon")).unwrap_err().to_string().contains("is not a duration"));
        assert!(matches!(parse_backoff(&lit("100ms..10s")).unwrap(), Backoff::Exponential(..)));
        assert!(matches!(parse_backoff(&lit("2s")).unwrap(), Backoff::Fixed(..)));
        assert!(parse_backoff(&lit("10s..1s")).unwrap_err().to_string().contains("above its cap"));
    }
}
