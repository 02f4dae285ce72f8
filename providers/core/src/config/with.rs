//! [`With`]: one table of the configuration file read by two types at once — a struct of the
//! table's own keys, and a set of [`Keys`] that many tables share (the HTTP keys of an issuer
//! and of every cloud, an output's provider keys) — without nesting them in a sub-table.
//!
//! `#[serde(flatten)]` would do the same but loses what makes an error useful: a flattened key's
//! value is buffered before it is read, so its errors carry neither the key's path nor its line,
//! and `deny_unknown_fields` cannot be combined with it. Here every key is read straight from
//! the file's own deserializer, so a bad value is reported at its key and position exactly as in
//! a flat struct, and an unknown key gets serde's own message listing the keys of both parts.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer as _, MapAccess, Visitor};

/// Keys that may sit in a table beside the table's own, read one at a time.
pub trait Keys: Default {
    /// The key's name as written in [`Keys::names`], when it is one of these keys.
    fn find(key: &str) -> Option<&'static str>;
    /// Every key, in the order an "expected one of" message lists them.
    fn names() -> Vec<&'static str>;
    /// Reads the value of `key` (a name [`Keys::find`] gave).
    fn read<'de, D: Deserializer<'de>>(
        &mut self,
        key: &'static str,
        value: D,
    ) -> Result<(), D::Error>;
}

/// Two sets of keys in one table (compose sets this way, not by nesting [`With`]).
impl<A: Keys, B: Keys> Keys for (A, B) {
    fn find(key: &str) -> Option<&'static str> {
        A::find(key).or_else(|| B::find(key))
    }

    fn names() -> Vec<&'static str> {
        let mut names = A::names();
        names.extend(B::names());
        names
    }

    fn read<'de, D: Deserializer<'de>>(
        &mut self,
        key: &'static str,
        value: D,
    ) -> Result<(), D::Error> {
        if A::find(key).is_some() {
            self.0.read(key, value)
        } else {
            self.1.read(key, value)
        }
    }
}

/// Three sets of keys in one table.
impl<A: Keys, B: Keys, C: Keys> Keys for (A, B, C) {
    fn find(key: &str) -> Option<&'static str> {
        A::find(key)
            .or_else(|| B::find(key))
            .or_else(|| C::find(key))
    }

    fn names() -> Vec<&'static str> {
        let mut names = A::names();
        names.extend(B::names());
        names.extend(C::names());
        names
    }

    fn read<'de, D: Deserializer<'de>>(
        &mut self,
        key: &'static str,
        value: D,
    ) -> Result<(), D::Error> {
        if A::find(key).is_some() {
            self.0.read(key, value)
        } else if B::find(key).is_some() {
            self.1.read(key, value)
        } else {
            self.2.read(key, value)
        }
    }
}

/// A table holding the keys of `T` (a struct deriving `Deserialize`, without `alias`es) and
/// those of `K`, and no others: a key neither knows is refused like `deny_unknown_fields`
/// refuses it. `T` must not have a field named like one of `K`'s keys (`K` would take it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct With<T, K> {
    pub table: T,
    pub keys: K,
}

impl<T, K> Deref for With<T, K> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.table
    }
}

impl<'de, T: Deserialize<'de>, K: Keys> Deserialize<'de> for With<T, K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TableVisitor(PhantomData))
    }
}

struct TableVisitor<T, K>(PhantomData<(T, K)>);

impl<'de, T: Deserialize<'de>, K: Keys> Visitor<'de> for TableVisitor<T, K> {
    type Value = With<T, K>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut keys = K::default();
        let table = T::deserialize(Split {
            map,
            keys: &mut keys,
        })?;
        Ok(With { table, keys })
    }
}

/// The table as `T` sees it: its own keys only, `K`'s taken out on the way.
struct Split<'k, A, K> {
    map: A,
    keys: &'k mut K,
}

impl<'de, A: MapAccess<'de>, K: Keys> Deserializer<'de> for Split<'_, A, K> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_map(SplitMap {
            map: self.map,
            keys: self.keys,
            fields: &[],
        })
    }

    /// A derived struct names its fields here: keys that are neither its nor `K`'s are refused.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_map(SplitMap {
            map: self.map,
            keys: self.keys,
            fields,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

struct SplitMap<'k, A, K> {
    map: A,
    keys: &'k mut K,
    /// `T`'s keys; empty when `T` did not say (every key not `K`'s is then `T`'s).
    fields: &'static [&'static str],
}

impl<'de, A: MapAccess<'de>, K: Keys> MapAccess<'de> for SplitMap<'_, A, K> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        let mut seed = Some(seed);
        loop {
            let key = self.map.next_key_seed(KeySeed::<S, K> {
                seed: &mut seed,
                fields: self.fields,
                keys: PhantomData,
            })?;
            match key {
                None => return Ok(None),
                Some(Key::Own(key)) => return Ok(Some(key)),
                Some(Key::Shared(name)) => self.map.next_value_seed(ValueSeed {
                    key: name,
                    keys: &mut *self.keys,
                })?,
            }
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

enum Key<V> {
    /// One of `T`'s keys, as `T`'s field identifier.
    Own(V),
    /// One of `K`'s.
    Shared(&'static str),
}

/// Reads a key and decides whose it is. `T`'s seed is kept for the next key when this one is
/// `K`'s, since a seed can be used once.
struct KeySeed<'s, S, K> {
    seed: &'s mut Option<S>,
    fields: &'static [&'static str],
    keys: PhantomData<K>,
}

impl<'de, S: DeserializeSeed<'de>, K: Keys> DeserializeSeed<'de> for KeySeed<'_, S, K> {
    type Value = Key<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl<'de, S: DeserializeSeed<'de>, K: Keys> Visitor<'de> for KeySeed<'_, S, K> {
    type Value = Key<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        if let Some(name) = K::find(key) {
            return Ok(Key::Shared(name));
        }
        if !self.fields.is_empty() && !self.fields.contains(&key) {
            return Err(E::custom(unknown_field(key, self.fields, &K::names())));
        }
        let seed = self
            .seed
            .take()
            .ok_or_else(|| E::custom("a key was read twice"))?;
        seed.deserialize(key.into_deserializer()).map(Key::Own)
    }
}

struct ValueSeed<'k, K> {
    key: &'static str,
    keys: &'k mut K,
}

impl<'de, K: Keys> DeserializeSeed<'de> for ValueSeed<'_, K> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.keys.read(self.key, deserializer)
    }
}

/// serde's own words for an unknown field, listing both parts' keys.
fn unknown_field(key: &str, own: &[&str], shared: &[&str]) -> String {
    let names: Vec<&str> = own.iter().chain(shared).copied().collect();
    if names.is_empty() {
        format!("unknown field `{key}`, there are no fields")
    } else {
        format!("unknown field `{key}`, expected {}", super::one_of(&names))
    }
}
