//! Completion tokens: what an async step hands out so that another system completes it later.
//!
//! A token is `wf1.<execution>.<call key>.<signature>`: the execution id and the step's call key in
//! base64url (no padding), so the token survives a URL path segment, a query string or a
//! header as it is, and a keyed MAC of both (HMAC-SHA-256, the first 128 bits) with a key kept
//! in the store. A token is handed to third parties (a payment provider, a manager's inbox):
//! knowing an execution's id is not enough to forge the token of one of its steps.
//!
//! Tokens of earlier releases (`<execution>/<call key>`) are still accepted for the steps that
//! were already waiting when the store was upgraded, and only for those (see
//! [`Store::deliver`](crate::store::Store::deliver)).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::execution::ExecutionId;
use crate::journal::CallKey;

/// What marks a token of this format (and version).
const PREFIX: &str = "wf1.";

/// How many bytes of the MAC a token carries.
const SIGNATURE_BYTES: usize = 16;

/// The key tokens are signed with: one per store, shared by every process that uses it.
#[derive(Clone)]
pub(crate) struct TokenKey([u8; 32]);

impl TokenKey {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    fn mac(&self, execution: &str, step: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("any key length"));
        // Lengths first: no two (execution, step) pairs sign the same bytes.
        mac.update(&(execution.len() as u64).to_le_bytes());
        mac.update(execution.as_bytes());
        mac.update(step.as_bytes());
        mac
    }

    /// The token of the step call `step` of `execution`.
    pub(crate) fn issue(&self, execution: &ExecutionId, step: &CallKey) -> String {
        let step = step.to_string();
        let signature = self.mac(execution.as_str(), &step).finalize().into_bytes();
        format!(
            "{PREFIX}{}.{}.{}",
            URL_SAFE_NO_PAD.encode(execution.as_str()),
            URL_SAFE_NO_PAD.encode(&step),
            URL_SAFE_NO_PAD.encode(&signature[..SIGNATURE_BYTES])
        )
    }

    /// The execution and step a token names, if its signature is right (or, for a token of an
    /// earlier release, `Legacy`: the store decides whether it is still accepted).
    pub(crate) fn verify(&self, token: &str) -> Option<Token> {
        match token.strip_prefix(PREFIX) {
            Some(signed) => {
                let (execution, step) = decode(signed)?;
                let mut parts = signed.rsplit('.');
                let signature = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
                self.mac(execution.as_str(), &step.to_string()).verify_truncated_left(&signature).ok()?;
                Some(Token { execution, step, legacy: false })
            }
            None => {
                let (execution, step) = token.rsplit_once('/')?;
                if execution.is_empty() {
                    return None;
                }
                Some(Token { execution: ExecutionId::from(execution), step: step.parse().ok()?, legacy: true })
            }
        }
    }
}

/// What a token names.
pub(crate) struct Token {
    pub execution: ExecutionId,
    pub step: CallKey,
    /// A token of an earlier release: no signature.
    pub legacy: bool,
}

/// The execution and step a token names, without checking its signature (to say which
/// execution a command is about; the delivery checks the token).
#[cfg(any(feature = "cli", test))]
pub(crate) fn execution_of(token: &str) -> Option<ExecutionId> {
    match token.strip_prefix(PREFIX) {
        Some(signed) => decode(signed).map(|(execution, _)| execution),
        None => token.rsplit_once('/').map(|(execution, _)| ExecutionId::from(execution)),
    }
}

fn decode(signed: &str) -> Option<(ExecutionId, CallKey)> {
    let mut parts = signed.split('.');
    let execution = String::from_utf8(URL_SAFE_NO_PAD.decode(parts.next()?).ok()?).ok()?;
    let step = String::from_utf8(URL_SAFE_NO_PAD.decode(parts.next()?).ok()?).ok()?;
    let (_signature, None) = (parts.next()?, parts.next()) else { return None };
    Some((ExecutionId::from(execution), step.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_url_safe_signed_and_name_their_step() {
        let key = TokenKey::new([7; 32]);
        let execution = ExecutionId::from("order-1001:@child:pay#1");
        let step = CallKey::new("approval.request_approval", 1);
        let token = key.issue(&execution, &step);
        assert!(token.starts_with("wf1."), "{token}");
        assert!(token.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "{token}");
        let parsed = key.verify(&token).expect("a valid token");
        assert_eq!((parsed.execution, parsed.step, parsed.legacy), (execution.clone(), step.clone(), false));
        assert_eq!(execution_of(&token), Some(execution.clone()));

        // Another store's key, a changed signature, another step: refused.
        assert!(TokenKey::new([8; 32]).verify(&token).is_none());
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(key.verify(&forged).is_none());
        let other = key.issue(&execution, &CallKey::new("approval.request_approval", 2));
        let spliced = format!("{}{}", &other[..other.rfind('.').unwrap()], &token[token.rfind('.').unwrap()..]);
        assert!(key.verify(&spliced).is_none());

        // The form of earlier releases parses, marked legacy (the store decides).
        let legacy = key.verify("order-7/approval.request_approval#1").unwrap();
        assert!(legacy.legacy);
        assert_eq!(legacy.execution.as_str(), "order-7");
        assert!(key.verify("garbage").is_none());
    }
}
