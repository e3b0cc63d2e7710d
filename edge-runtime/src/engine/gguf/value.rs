//! GGUF metadata: one typed value enum (arrays hold values of one type, as the file does)
//! and the key/value map with typed getters that name the key in their errors.

use std::collections::BTreeMap;

use super::GgufError;

/// One typed metadata value; an array's elements all have the type its header names.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7.
    Bool(bool),
    /// Type 8.
    String(String),
    /// Type 9.
    Array(Vec<MetadataValue>),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

impl MetadataValue {
    /// Name of the value's GGUF type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::I8(_) => "i8",
            Self::U16(_) => "u16",
            Self::I16(_) => "i16",
            Self::U32(_) => "u32",
            Self::I32(_) => "i32",
            Self::F32(_) => "f32",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::Array(_) => "array",
            Self::U64(_) => "u64",
            Self::I64(_) => "i64",
            Self::F64(_) => "f64",
        }
    }

    /// The value as an integer, for any integer type.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(v) => v.into(),
            Self::I8(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U64(v) => v.into(),
            Self::I64(v) => v.into(),
            _ => return None,
        })
    }
}

/// The key/value metadata of a GGUF file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: BTreeMap<String, MetadataValue>,
}

impl FromIterator<(String, MetadataValue)> for Metadata {
    /// Builds metadata from pairs; a later pair replaces an earlier one with the same key.
    fn from_iter<I: IntoIterator<Item = (String, MetadataValue)>>(iter: I) -> Self {
        Self {
            entries: iter.into_iter().collect(),
        }
    }
}

impl Metadata {
    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.entries.get(key)
    }

    /// All entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetadataValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn require(&self, key: &str) -> Result<&MetadataValue, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    fn wrong(key: &str, expected: &'static str, found: impl Into<String>) -> GgufError {
        GgufError::WrongType {
            key: key.to_owned(),
            expected,
            found: found.into(),
        }
    }

    /// The string under `key`.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.require(key)? {
            MetadataValue::String(s) => Ok(s),
            other => Err(Self::wrong(key, "string", other.type_name())),
        }
    }

    /// The integer under `key` (any integer type) if it fits in `u64`.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let value = self.require(key)?;
        let int = value
            .as_i128()
            .ok_or_else(|| Self::wrong(key, "unsigned integer", value.type_name()))?;
        u64::try_from(int).map_err(|_| Self::wrong(key, "unsigned integer", format!("{int}")))
    }

    /// The integer under `key` (any integer type) if it fits in `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.get_u64(key)?;
        u32::try_from(v).map_err(|_| Self::wrong(key, "u32", format!("{v}")))
    }

    /// The integer under `key` (any integer type) if it fits in `usize`.
    pub fn get_usize(&self, key: &str) -> Result<usize, GgufError> {
        let v = self.get_u64(key)?;
        usize::try_from(v).map_err(|_| Self::wrong(key, "usize", format!("{v}")))
    }

    /// The float under `key` (f32, or f64 narrowed to f32).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        match self.require(key)? {
            MetadataValue::F32(v) => Ok(*v),
            // Narrowing is the contract: hyper-parameters are used as f32.
            #[allow(clippy::cast_possible_truncation)]
            MetadataValue::F64(v) => Ok(*v as f32),
            other => Err(Self::wrong(key, "float", other.type_name())),
        }
    }

    /// The boolean under `key`.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.require(key)? {
            MetadataValue::Bool(v) => Ok(*v),
            other => Err(Self::wrong(key, "bool", other.type_name())),
        }
    }

    /// The array under `key`.
    pub fn get_array(&self, key: &str) -> Result<&[MetadataValue], GgufError> {
        match self.require(key)? {
            MetadataValue::Array(a) => Ok(a),
            other => Err(Self::wrong(key, "array", other.type_name())),
        }
    }

    /// The array of strings under `key`.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let array = self.get_array(key)?;
        array
            .iter()
            .map(|v| match v {
                MetadataValue::String(s) => Some(s.as_str()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Self::wrong(key, "array of string", element_types(array)))
    }

    /// The array of integers (any integer element type) under `key`, widened to `i128`.
    pub fn get_int_array(&self, key: &str) -> Result<Vec<i128>, GgufError> {
        let array = self.get_array(key)?;
        array
            .iter()
            .map(MetadataValue::as_i128)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Self::wrong(key, "array of integer", element_types(array)))
    }
}

/// "array of T" for messages, T being the type of the first element.
fn element_types(array: &[MetadataValue]) -> String {
    let first = array.first().map_or("nothing", MetadataValue::type_name);
    format!("array of {first}")
}
