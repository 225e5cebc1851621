//! A stable hash of a step's input, used by replay to check that a step is called with the
//! same input as the journal recorded.
//!
//! The hash is computed by a serde serializer that writes a tagged byte stream into a reused
//! buffer (no JSON text is built) and hashes it once with xxh3. Map entries are hashed independently and combined with a commutative sum, so a
//! `HashMap`, whose iteration order changes from process to process, hashes the same after a
//! restart. Sequences keep their order (a `HashSet` is a sequence to serde: use a `BTreeSet`
//! in step inputs). The hash is part of the journal format: changing it is a schema change.

use std::fmt;

use serde::ser::{self, Serialize};
use xxhash_rust::xxh3::xxh3_64;

type Buffer = Vec<u8>;

thread_local! {
    /// Reused between calls: hashing a typical input allocates nothing.
    static BUFFER: std::cell::RefCell<Buffer> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The hash of `value`'s serde representation (see the module docs).
pub fn input_hash<T: Serialize + ?Sized>(value: &T) -> u64 {
    BUFFER.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            let hash = hash_into(value, &mut buffer);
            if buffer.capacity() > 64 * 1024 {
                *buffer = Vec::new();
            }
            hash
        }
        // A `Serialize` impl that hashes another input re-enters: use a fresh buffer.
        Err(_) => hash_into(value, &mut Vec::new()),
    })
}

fn hash_into<T: Serialize + ?Sized>(value: &T, buffer: &mut Buffer) -> u64 {
    // Only a `Serialize` impl that reports its own custom error can fail; hash the message
    // then, so a broken input still yields a deterministic value.
    if let Err(error) = value.serialize(Hasher { h: buffer }) {
        buffer.extend_from_slice(error.0.as_bytes());
    }
    xxh3_64(buffer)
}

/// Appends the tagged byte stream of a value to a buffer.
struct Hasher<'a> {
    h: &'a mut Buffer,
}

trait Update {
    fn update(&mut self, bytes: &[u8]);
}

impl Update for Buffer {
    #[inline]
    fn update(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

#[derive(Debug)]
struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

// One tag byte per kind of value keeps e.g. `Some(1)` and `1`, or `"a"` and `b"a"`, apart.
mod tag {
    pub const BOOL: u8 = 1;
    pub const INT: u8 = 2;
    pub const UINT: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const CHAR: u8 = 5;
    pub const STR: u8 = 6;
    pub const BYTES: u8 = 7;
    pub const NONE: u8 = 8;
    pub const SOME: u8 = 9;
    pub const UNIT: u8 = 10;
    pub const VARIANT: u8 = 11;
    pub const SEQ: u8 = 12;
    pub const MAP: u8 = 13;
    pub const STRUCT: u8 = 14;
    pub const END: u8 = 15;
}

impl Hasher<'_> {
    fn tag(&mut self, tag: u8) {
        self.h.update(&[tag]);
    }

    fn str(&mut self, s: &str) {
        self.h.update(&(s.len() as u64).to_le_bytes());
        self.h.update(s.as_bytes());
    }
}

impl<'a> ser::Serializer for Hasher<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = MapHasher<'a>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(mut self, v: bool) -> Result<(), Error> {
        self.tag(tag::BOOL);
        self.h.update(&[v as u8]);
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.serialize_i128(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.serialize_i128(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.serialize_i128(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.serialize_i128(v.into())
    }
    fn serialize_i128(mut self, v: i128) -> Result<(), Error> {
        // All integer widths hash alike, so widening a field's type keeps the hash.
        if let Ok(unsigned) = u128::try_from(v) {
            return self.serialize_u128(unsigned);
        }
        self.tag(tag::INT);
        self.h.update(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.serialize_u128(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.serialize_u128(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.serialize_u128(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.serialize_u128(v.into())
    }
    fn serialize_u128(mut self, v: u128) -> Result<(), Error> {
        self.tag(tag::UINT);
        self.h.update(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(mut self, v: f64) -> Result<(), Error> {
        self.tag(tag::FLOAT);
        self.h.update(&v.to_bits().to_le_bytes());
        Ok(())
    }
    fn serialize_char(mut self, v: char) -> Result<(), Error> {
        self.tag(tag::CHAR);
        self.h.update(&u32::from(v).to_le_bytes());
        Ok(())
    }
    fn serialize_str(mut self, v: &str) -> Result<(), Error> {
        self.tag(tag::STR);
        self.str(v);
        Ok(())
    }
    fn serialize_bytes(mut self, v: &[u8]) -> Result<(), Error> {
        self.tag(tag::BYTES);
        self.h.update(&(v.len() as u64).to_le_bytes());
        self.h.update(v);
        Ok(())
    }
    fn serialize_none(mut self) -> Result<(), Error> {
        self.tag(tag::NONE);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(mut self, value: &T) -> Result<(), Error> {
        self.tag(tag::SOME);
        value.serialize(self)
    }
    fn serialize_unit(mut self) -> Result<(), Error> {
        self.tag(tag::UNIT);
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(mut self, _: &'static str, _: u32, variant: &'static str) -> Result<(), Error> {
        self.tag(tag::VARIANT);
        self.str(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.tag(tag::VARIANT);
        self.str(variant);
        value.serialize(self)
    }
    fn serialize_seq(mut self, _len: Option<usize>) -> Result<Self, Error> {
        self.tag(tag::SEQ);
        Ok(self)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Self, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self, Error> {
        self.tag(tag::VARIANT);
        self.str(variant);
        self.tag(tag::SEQ);
        Ok(self)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapHasher<'a>, Error> {
        Ok(MapHasher { parent: self.h, sum: 0, count: 0, entry: Buffer::new() })
    }
    fn serialize_struct(mut self, _name: &'static str, _len: usize) -> Result<Self, Error> {
        self.tag(tag::STRUCT);
        Ok(self)
    }
    fn serialize_struct_variant(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self, Error> {
        self.tag(tag::VARIANT);
        self.str(variant);
        self.tag(tag::STRUCT);
        Ok(self)
    }
}

impl Hasher<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(Hasher { h: self.h })
    }

    fn end(mut self) -> Result<(), Error> {
        self.tag(tag::END);
        Ok(())
    }
}

/// Sequences, tuples and tuple structs hash their elements in order.
macro_rules! elements {
    ($($trait:ident :: $method:ident),* $(,)?) => {$(
        impl ser::$trait for Hasher<'_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.element(value)
            }
            fn end(self) -> Result<(), Error> {
                Hasher::end(self)
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

/// Structs hash their fields' names and values in declaration order.
macro_rules! fields {
    ($($trait:ident),* $(,)?) => {$(
        impl ser::$trait for Hasher<'_> {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
                self.str(key);
                self.element(value)
            }
            fn end(self) -> Result<(), Error> {
                Hasher::end(self)
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

/// Hashes each entry on its own and sums the digests, so entry order does not matter.
struct MapHasher<'a> {
    parent: &'a mut Buffer,
    sum: u64,
    count: u64,
    entry: Buffer,
}

impl ser::SerializeMap for MapHasher<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.entry.clear();
        key.serialize(Hasher { h: &mut self.entry })
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(Hasher { h: &mut self.entry })?;
        self.sum = self.sum.wrapping_add(xxh3_64(&self.entry));
        self.count += 1;
        Ok(())
    }

    fn end(self) -> Result<(), Error> {
        self.parent.update(&[tag::MAP]);
        self.parent.update(&self.sum.to_le_bytes());
        self.parent.update(&self.count.to_le_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::Serialize;

    use super::input_hash;

    #[derive(Serialize)]
    struct Order {
        id: u32,
        items: Vec<String>,
        note: Option<String>,
    }

    #[test]
    fn equal_values_hash_equal_and_different_values_differ() {
        let a = Order { id: 1, items: vec!["x".into()], note: None };
        let b = Order { id: 1, items: vec!["x".into()], note: None };
        let c = Order { id: 2, items: vec!["x".into()], note: None };
        assert_eq!(input_hash(&a), input_hash(&b));
        assert_ne!(input_hash(&a), input_hash(&c));
        assert_ne!(input_hash(&Some(1u8)), input_hash(&1u8));
        assert_ne!(input_hash(&("ab", "c")), input_hash(&("a", "bc")));
        assert_eq!(input_hash(&(1u8,)), input_hash(&(1u64,)));
    }

    #[test]
    fn map_order_does_not_matter() {
        let mut hashes = Vec::new();
        for _ in 0..20 {
            // Each HashMap gets its own random iteration order.
            let map: HashMap<String, u32> = (0..50).map(|i| (format!("k{i}"), i)).collect();
            hashes.push(input_hash(&map));
        }
        let btree: BTreeMap<String, u32> = (0..50).map(|i| (format!("k{i}"), i)).collect();
        assert!(hashes.iter().all(|h| *h == input_hash(&btree)));
        let mut other = btree.clone();
        other.insert("k0".into(), 99);
        assert_ne!(input_hash(&other), input_hash(&btree));
    }

    #[test]
    fn hash_is_stable_across_releases() {
        // Part of the journal format: if this changes, stored executions would mismatch.
        assert_eq!(input_hash(&("John", 3u32)), 0x6b5c_a42f_2cf7_9043_u64, "{:#x}", input_hash(&("John", 3u32)));
    }
}
