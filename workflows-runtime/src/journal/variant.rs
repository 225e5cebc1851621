//! The name serde gives an enum variant, read from the enum's `Serialize` impl: the one table
//! of names is the enum's own serde attributes (`rename_all = "snake_case"`), so the names
//! the journal stores, the event stream prints and the JSON carries cannot drift apart.
//!
//! A [`Serializer`] that stops at the first thing that names the variant — an externally
//! tagged variant's name, or an internally tagged enum's tag field — and serializes nothing
//! else: no allocation, and no walk over the variant's fields.

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

use parking_lot::Mutex;
use serde::Serialize;
use serde::ser::{self, Impossible, SerializeStruct};

/// The serde name of `value`'s variant, for an externally tagged enum (`{"name": {..}}`).
pub(crate) fn external<T: Serialize>(value: &T) -> &'static str {
    match value.serialize(Variant) {
        Err(Found::Name(name)) => name,
        _ => unreachable!("`{}` is not an externally tagged enum", std::any::type_name::<T>()),
    }
}

/// The serde name of `value`'s variant, for an internally tagged enum (`{"tag": "name", ..}`).
///
/// serde hands the tag's value over as a borrowed string; the few distinct names are kept
/// once, for the life of the process.
pub(crate) fn internal<T: Serialize>(value: &T, tag: &'static str) -> &'static str {
    let name = match value.serialize(TagOf(tag)) {
        Err(Found::Tag(name)) => name,
        _ => unreachable!("`{}` is not an enum tagged with `{tag}`", std::any::type_name::<T>()),
    };
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Mutex::default).lock();
    match names.get(name.as_str()) {
        Some(known) => known,
        None => {
            let leaked: &'static str = Box::leak(name.into_boxed_str());
            names.insert(leaked);
            leaked
        }
    }
}

/// How the search ends: the name found, or something that names no variant.
#[derive(Debug)]
enum Found {
    Name(&'static str),
    Tag(String),
    Nothing,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Found {}

impl ser::Error for Found {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Found::Nothing
    }
}

/// Finds an externally tagged variant's name.
struct Variant;

/// Finds the value of an internally tagged enum's tag field.
struct TagOf(&'static str);

/// The tag's value, a string.
struct TagValue;

macro_rules! nothing {
    ($($method:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $method(self, $(_: $arg),*) -> Result<Self::Ok, Found> { Err(Found::Nothing) })*
    };
}

macro_rules! not_a_variant {
    () => {
        type Ok = ();
        type Error = Found;
        type SerializeSeq = Impossible<(), Found>;
        type SerializeTuple = Impossible<(), Found>;
        type SerializeTupleStruct = Impossible<(), Found>;
        type SerializeTupleVariant = Impossible<(), Found>;
        type SerializeMap = Impossible<(), Found>;
        type SerializeStructVariant = Impossible<(), Found>;

        nothing!(
            serialize_bool(bool),
            serialize_i8(i8),
            serialize_i16(i16),
            serialize_i32(i32),
            serialize_i64(i64),
            serialize_u8(u8),
            serialize_u16(u16),
            serialize_u32(u32),
            serialize_u64(u64),
            serialize_f32(f32),
            serialize_f64(f64),
            serialize_char(char),
            serialize_bytes(&[u8]),
            serialize_none(),
            serialize_unit(),
            serialize_unit_struct(&'static str),
        );

        fn serialize_some<V: ?Sized + Serialize>(self, _: &V) -> Result<(), Found> {
            Err(Found::Nothing)
        }

        fn serialize_newtype_struct<V: ?Sized + Serialize>(self, _: &'static str, _: &V) -> Result<(), Found> {
            Err(Found::Nothing)
        }

        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Found> {
            Err(Found::Nothing)
        }

        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Found> {
            Err(Found::Nothing)
        }

        fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Found> {
            Err(Found::Nothing)
        }

        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Found> {
            Err(Found::Nothing)
        }
    };
}

/// The variant methods, for a serializer that looks inside a variant, not at its name.
macro_rules! no_variant {
    () => {
        fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Found> {
            Err(Found::Nothing)
        }

        fn serialize_newtype_variant<V: ?Sized + Serialize>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &V,
        ) -> Result<(), Found> {
            Err(Found::Nothing)
        }

        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Found> {
            Err(Found::Nothing)
        }

        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Found> {
            Err(Found::Nothing)
        }
    };
}

impl ser::Serializer for Variant {
    type SerializeStruct = Impossible<(), Found>;
    not_a_variant!();

    nothing!(serialize_str(&str));

    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<(), Found> {
        Err(Found::Name(variant))
    }

    fn serialize_newtype_variant<V: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: &V,
    ) -> Result<(), Found> {
        Err(Found::Name(variant))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Found> {
        Err(Found::Name(variant))
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Found> {
        Err(Found::Nothing)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Found> {
        Err(Found::Name(variant))
    }
}

impl ser::Serializer for TagOf {
    type SerializeStruct = Self;
    not_a_variant!();

    nothing!(serialize_str(&str));

    no_variant!();

    // An internally tagged variant is a struct whose first field is the tag.
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Found> {
        Ok(self)
    }
}

impl SerializeStruct for TagOf {
    type Ok = ();
    type Error = Found;

    fn serialize_field<V: ?Sized + Serialize>(&mut self, key: &'static str, value: &V) -> Result<(), Found> {
        if key == self.0 {
            return value.serialize(TagValue);
        }
        Err(Found::Nothing)
    }

    fn end(self) -> Result<(), Found> {
        Err(Found::Nothing)
    }
}

impl ser::Serializer for TagValue {
    type SerializeStruct = Impossible<(), Found>;
    not_a_variant!();

    fn serialize_str(self, value: &str) -> Result<(), Found> {
        Err(Found::Tag(value.to_owned()))
    }

    no_variant!();

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Found> {
        Err(Found::Nothing)
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    enum External {
        UnitOne,
        StructTwo { _a: u32 },
        NewtypeThree(String),
    }

    #[derive(Serialize)]
    #[serde(tag = "event", rename_all = "snake_case")]
    enum Internal {
        UnitOne,
        StructTwo { _a: u32 },
    }

    #[test]
    fn names_come_from_serde() {
        assert_eq!(super::external(&External::UnitOne), "unit_one");
        assert_eq!(super::external(&External::StructTwo { _a: 1 }), "struct_two");
        assert_eq!(super::external(&External::NewtypeThree("x".into())), "newtype_three");
        assert_eq!(super::internal(&Internal::UnitOne, "event"), "unit_one");
        let name = super::internal(&Internal::StructTwo { _a: 1 }, "event");
        assert_eq!(name, "struct_two");
        // Interned: the same name is the same string.
        assert!(std::ptr::eq(name, super::internal(&Internal::StructTwo { _a: 2 }, "event")));
    }
}
