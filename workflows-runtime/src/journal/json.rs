//! Serializing values into the JSON the journal stores.

use std::cell::RefCell;

use serde::Serialize;
use serde_json::value::RawValue;

thread_local! {
    /// Reused between calls, so a value's JSON costs one exact-size allocation.
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
}

/// Buffers that grew beyond this are not kept.
const KEEP_CAPACITY: usize = 64 * 1024;

/// `value` as JSON text. Same result as `serde_json::value::to_raw_value`, which allocates a
/// 128-byte buffer and then shrinks it: this is on the per-step path.
pub(crate) fn to_raw<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Box<RawValue>> {
    BUFFER.with(|buffer| {
        // A `Serialize` impl that itself serializes to JSON would re-enter: let it allocate.
        let Ok(mut buffer) = buffer.try_borrow_mut() else { return serde_json::value::to_raw_value(value) };
        buffer.clear();
        serde_json::to_writer(&mut *buffer, value)?;
        let text = String::from_utf8(buffer.to_vec()).map_err(serde::ser::Error::custom)?;
        if buffer.capacity() > KEEP_CAPACITY {
            *buffer = Vec::with_capacity(256);
        }
        // SAFETY: `text` is exactly what `serde_json::to_writer` wrote for one value: a single
        // well-formed JSON value with no surrounding whitespace, which is what
        // `from_string_unchecked` requires (and what `to_raw_value` itself relies on).
        Ok(unsafe { RawValue::from_string_unchecked(text) })
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::to_raw;

    #[test]
    fn same_text_as_serde_json() {
        let value: BTreeMap<&str, Vec<Option<f64>>> = [("a", vec![Some(1.5), None]), ("b\"", vec![])].into();
        assert_eq!(to_raw(&value).unwrap().get(), serde_json::to_string(&value).unwrap());
        assert_eq!(to_raw(&"é").unwrap().get(), "\"é\"");
        let big = "x".repeat(100_000);
        assert_eq!(to_raw(&big).unwrap().get().len(), 100_002);
        let map_with_bad_keys: BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        assert!(to_raw(&map_with_bad_keys).is_err());
    }
}
