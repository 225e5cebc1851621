//! Event sources: brokers whose messages become events (see [`crate::Engine::emit`]), each
//! recorded once (deduplicated on its broker's message id) and acknowledged only after it is
//! durably recorded.

#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
pub use self::redis::RedisSource;
