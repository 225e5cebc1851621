//! Step policies in `#[step(...)]`: `retry(...)`, `timeout = "..."`, `on_failure = "..."`.

use proc_macro2::TokenStream;
use quote::quote;

use crate::args::{self, Arg, Errors};
use crate::duration::{self, Backoff};

/// The checked policy options of a step.
#[derive(Default)]
pub(crate) struct StepPolicy {
    retry: Option<Retry>,
    timeout: Option<std::time::Duration>,
    on_failure: Option<String>,
}

struct Retry {
    max_attempts: u32,
    backoff: Backoff,
    factor: f64,
    jitter: f64,
}

/// Without a `backoff`, retries wait 100 ms, then twice as long each time, up to 30 s.
const DEFAULT_BACKOFF: (u64, u64) = (100, 30_000);
const DEFAULT_JITTER: f64 = 0.2;

impl StepPolicy {
    /// Takes `arg` if it is a policy option; returns false for other keys.
    pub(crate) fn take(&mut self, arg: &Arg, errors: &mut Errors) -> bool {
        match arg.key.to_string().as_str() {
            "retry" => self.retry = parse_retry(arg, errors),
            "timeout" => self.timeout = errors.push_result(arg.duration()),
            "on_failure" => self.on_failure = errors.push_result(arg.choice(&["fail", "continue", "skip", "pause"])),
            _ => return false,
        }
        true
    }

    /// The policy's option names, for "expected one of" messages.
    pub(crate) const KEYS: [&'static str; 3] = ["retry", "timeout", "on_failure"];

    pub(crate) fn skips(&self) -> bool {
        self.on_failure.as_deref() == Some("skip")
    }

    /// `StepPolicy { .. }` for the step's definition.
    pub(crate) fn tokens(&self, private: &TokenStream) -> TokenStream {
        let retry = match &self.retry {
            None => quote!(#private::None),
            Some(Retry { max_attempts, backoff, factor, jitter }) => {
                let backoff = match backoff {
                    Backoff::Fixed(delay) => {
                        let delay = duration::tokens(*delay);
                        quote!(#private::Backoff::Fixed(#delay))
                    }
                    Backoff::Exponential(initial, max) => {
                        let (initial, max) = (duration::tokens(*initial), duration::tokens(*max));
                        quote!(#private::Backoff::exponential(#initial, #factor, #max))
                    }
                };
                quote!(#private::Some(#private::RetryPolicy::new(#max_attempts, #backoff).with_jitter(#jitter)))
            }
        };
        let timeout = match self.timeout {
            None => quote!(#private::None),
            Some(timeout) => {
                let timeout = duration::tokens(timeout);
                quote!(#private::Some(#timeout))
            }
        };
        let on_failure = match self.on_failure.as_deref() {
            Some("continue") => quote!(#private::OnFailure::Continue),
            Some("skip") => quote!(#private::OnFailure::Skip),
            Some("pause") => quote!(#private::OnFailure::Pause),
            _ => quote!(#private::OnFailure::Fail),
        };
        quote!(#private::StepPolicy { retry: #retry, timeout: #timeout, on_failure: #on_failure })
    }
}

fn parse_retry(arg: &Arg, errors: &mut Errors) -> Option<Retry> {
    let options = arg.list(errors)?;
    let mut max_attempts = None;
    let mut backoff = None;
    let mut factor = None;
    let mut jitter = None;
    for option in &options {
        match option.key.to_string().as_str() {
            "max_attempts" => match option.u32() {
                Ok(0) => {
                    errors.push(syn::Error::new_spanned(&option.key, "`max_attempts` counts every attempt: at least 1"))
                }
                Ok(n) => max_attempts = Some(n),
                Err(e) => errors.push(e),
            },
            "backoff" => backoff = errors.push_result(option.string().and_then(|s| duration::parse_backoff(&s))),
            "factor" => match option.number() {
                Ok(f) if f >= 1.0 => factor = Some((f, option.key.span())),
                Ok(_) => errors.push(syn::Error::new_spanned(&option.key, "`factor` must be at least 1")),
                Err(e) => errors.push(e),
            },
            "jitter" => match option.number() {
                Ok(j) if (0.0..=1.0).contains(&j) => jitter = Some(j),
                Ok(_) => {
                    errors.push(syn::Error::new_spanned(&option.key, "`jitter` is a fraction from 0 to 1, e.g. 0.2"))
                }
                Err(e) => errors.push(e),
            },
            _ => {
                errors.push(args::unknown(option, "step(retry(...))", &["max_attempts", "backoff", "factor", "jitter"]))
            }
        }
    }
    let Some(max_attempts) = max_attempts else {
        if !options.iter().any(|o| o.key == "max_attempts") {
            errors.push(syn::Error::new_spanned(&arg.key, "`retry(...)` needs `max_attempts = N`"));
        }
        return None;
    };
    let backoff = backoff.unwrap_or(Backoff::Exponential(
        std::time::Duration::from_millis(DEFAULT_BACKOFF.0),
        std::time::Duration::from_millis(DEFAULT_BACKOFF.1),
    ));
    if let (Backoff::Fixed(_), Some((_, span))) = (&backoff, factor) {
        errors.push(syn::Error::new(
            span,
            "`factor` applies to an exponential backoff such as `backoff = \"100ms..10s\"`",
        ));
    }
    let exponential = matches!(backoff, Backoff::Exponential(..));
    Some(Retry {
        max_attempts,
        backoff,
        factor: factor.map_or(2.0, |(f, _)| f),
        jitter: jitter.unwrap_or(if exponential { DEFAULT_JITTER } else { 0.0 }),
    })
}
