//! The typed service container steps resolve their dependencies from.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A typed map of services (one value per type) handed to the engine, and optionally to a
/// single run, so that steps can reach the application's clients and repositories with
/// [`StepContext::resolve`](crate::StepContext::resolve).
///
/// Cloning is cheap: services are shared.
///
/// ```
/// use std::sync::Arc;
/// use workflows_runtime::Container;
///
/// struct ProductService { count: usize }
/// trait Mailer: Send + Sync { fn send(&self, to: &str); }
/// struct Smtp;
/// impl Mailer for Smtp { fn send(&self, _to: &str) {} }
///
/// let container = Container::new()
///     .with(ProductService { count: 3 })
///     .with::<Arc<dyn Mailer>>(Arc::new(Smtp)); // trait objects: register the Arc
/// assert_eq!(container.resolve::<ProductService>().unwrap().count, 3);
/// assert!(container.resolve::<String>().is_err());
/// ```
#[derive(Clone, Default)]
pub struct Container {
    services: Arc<HashMap<TypeId, Service>>,
}

#[derive(Clone)]
struct Service {
    value: Arc<dyn Any + Send + Sync>,
    type_name: &'static str,
}

impl Container {
    /// An empty container.
    pub fn new() -> Self {
        Self::default()
    }

    /// This container with `service` added (replacing any service of the same type).
    pub fn with<T: Send + Sync + 'static>(mut self, service: T) -> Self {
        self.insert(service);
        self
    }

    /// Adds `service`, replacing any service of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, service: T) {
        self.insert_shared(Arc::new(service));
    }

    /// Adds a service that is already shared, replacing any service of the same type.
    pub fn insert_shared<T: Send + Sync + 'static>(&mut self, service: Arc<T>) {
        let service = Service { value: service, type_name: std::any::type_name::<T>() };
        Arc::make_mut(&mut self.services).insert(TypeId::of::<T>(), service);
    }

    /// The service of type `T`, if there is one.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.services.get(&TypeId::of::<T>()).and_then(|s| s.value.downcast_ref::<T>())
    }

    /// The service of type `T`, or an error naming the type and the registered ones.
    pub fn resolve<T: Send + Sync + 'static>(&self) -> Result<&T, ResolveError> {
        self.get::<T>().ok_or_else(|| ResolveError::new::<T>(&[self]))
    }

    /// The names of the registered services' types, sorted.
    pub fn type_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.services.values().map(|s| s.type_name).collect();
        names.sort_unstable();
        names
    }

    /// True if no service is registered.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

impl fmt::Debug for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.type_names()).finish()
    }
}

/// A step asked the container for a service type that was not registered.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "no service of type `{type_name}` is registered in the container (registered: {registered}); \
     add it with `Container::new().with(...)` and pass the container to `Engine::builder().container(...)` \
     or to `RunOptions::container(...)`"
)]
pub struct ResolveError {
    /// The requested type's name.
    pub type_name: &'static str,
    registered: String,
}

impl ResolveError {
    pub(crate) fn new<T>(containers: &[&Container]) -> Self {
        let mut names: Vec<_> = containers.iter().flat_map(|c| c.type_names()).collect();
        names.sort_unstable();
        names.dedup();
        let registered = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
        Self { type_name: std::any::type_name::<T>(), registered }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_service_names_the_type() {
        let c = Container::new().with(5u32);
        let err = c.resolve::<String>().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`alloc::string::String`"), "{text}");
        assert!(text.contains("registered: u32"), "{text}");
    }

    #[test]
    fn clones_share_but_inserts_do_not_leak() {
        let a = Container::new().with(1u8);
        let b = a.clone().with(2u16);
        assert!(a.get::<u16>().is_none());
        assert_eq!(b.get::<u8>(), Some(&1));
    }
}
