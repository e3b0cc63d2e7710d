//! The GGUF parser: a bounded little-endian cursor, metadata values, tensor infos and the
//! data-section layout, with every count and offset bounded by the file size before anything
//! is allocated.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;

use super::{
    DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufError, MAX_ARRAY_DEPTH, MAX_DIMS, Metadata, MetadataValue,
    TensorInfo,
};
use crate::engine::quant::GgmlType;

/// Initial capacity cap for vectors whose final length comes from the file.
const MAX_PREALLOC: usize = 1 << 16;

/// The parsed, validated layout of a GGUF file.
pub(super) struct Layout {
    pub(super) version: u32,
    pub(super) alignment: u64,
    pub(super) data_offset: u64,
    pub(super) metadata: Metadata,
    pub(super) tensors: Vec<TensorInfo>,
}

/// A bounded little-endian reader that tracks its offset and the file length.
struct Cursor<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Cursor<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn need(&self, needed: u64, what: &'static str) -> Result<(), GgufError> {
        if needed > self.remaining() {
            return Err(GgufError::Truncated {
                what,
                offset: self.pos,
                needed,
                file_len: self.len,
            });
        }
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), GgufError> {
        self.need(buf.len() as u64, what)?;
        self.inner.read_exact(buf).map_err(|cause| GgufError::Io {
            context: format!("reading {what} at offset {}", self.pos),
            cause,
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.fill(&mut b, what)?;
        Ok(b)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, GgufError> {
        Ok(u8::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, GgufError> {
        let offset = self.pos;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(GgufError::InvalidBool { value, offset }),
        }
    }

    /// Reads a count whose elements each take at least `min_elem_bytes`, rejecting counts the
    /// rest of the file cannot hold.
    fn count(&mut self, what: &'static str, min_elem_bytes: u64) -> Result<usize, GgufError> {
        let offset = self.pos;
        let count = self.u64(what)?;
        let remaining = self.remaining();
        let fits = count
            .checked_mul(min_elem_bytes)
            .is_some_and(|bytes| bytes <= remaining);
        if !fits {
            return Err(GgufError::CountTooLarge {
                what,
                count,
                remaining,
                offset,
            });
        }
        usize::try_from(count).map_err(|_| GgufError::TooLarge { what, value: count })
    }

    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let len = self.count(what, 1)?;
        let offset = self.pos;
        let mut bytes = vec![0u8; len];
        self.fill(&mut bytes, what)?;
        String::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 { what, offset })
    }

    fn vec<T>(
        &mut self,
        n: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, GgufError>,
    ) -> Result<Vec<T>, GgufError> {
        let mut v = Vec::with_capacity(n.min(MAX_PREALLOC));
        for _ in 0..n {
            v.push(item(self)?);
        }
        Ok(v)
    }
}

/// Smallest encoded size of one value of metadata type `type_id`, or `None` if unknown.
fn min_value_bytes(type_id: u32) -> Option<u64> {
    Some(match type_id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

/// One value of metadata type `type_id` (found at `type_offset`); `depth` counts the arrays
/// it is nested in.
fn read_value<R: Read>(
    c: &mut Cursor<R>,
    type_id: u32,
    type_offset: u64,
    depth: usize,
) -> Result<MetadataValue, GgufError> {
    const W: &str = "metadata value";
    Ok(match type_id {
        0 => MetadataValue::U8(c.u8(W)?),
        1 => MetadataValue::I8(i8::from_le_bytes(c.array(W)?)),
        2 => MetadataValue::U16(u16::from_le_bytes(c.array(W)?)),
        3 => MetadataValue::I16(i16::from_le_bytes(c.array(W)?)),
        4 => MetadataValue::U32(c.u32(W)?),
        5 => MetadataValue::I32(i32::from_le_bytes(c.array(W)?)),
        6 => MetadataValue::F32(f32::from_le_bytes(c.array(W)?)),
        7 => MetadataValue::Bool(c.bool(W)?),
        8 => MetadataValue::String(c.string(if depth == 0 {
            "metadata string"
        } else {
            "array string"
        })?),
        9 => MetadataValue::Array(read_array(c, depth + 1)?),
        10 => MetadataValue::U64(c.u64(W)?),
        11 => MetadataValue::I64(i64::from_le_bytes(c.array(W)?)),
        12 => MetadataValue::F64(f64::from_le_bytes(c.array(W)?)),
        _ => {
            return Err(GgufError::UnknownValueType {
                type_id,
                offset: type_offset,
            });
        }
    })
}

/// The elements of an array whose header starts here, `depth` arrays deep (1 for a value's
/// own array).
fn read_array<R: Read>(c: &mut Cursor<R>, depth: usize) -> Result<Vec<MetadataValue>, GgufError> {
    let header_offset = c.pos;
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            offset: header_offset,
        });
    }
    let elem_type = c.u32("array element type")?;
    let min = min_value_bytes(elem_type).ok_or(GgufError::UnknownValueType {
        type_id: elem_type,
        offset: header_offset,
    })?;
    let n = c.count("array length", min)?;
    c.vec(n, |c| read_value(c, elem_type, header_offset, depth))
}

/// Parses and validates everything up to the data section of a GGUF file of `file_len`
/// bytes read from `reader` (positioned at its start).
pub(super) fn parse_layout<R: Read>(reader: R, file_len: u64) -> Result<Layout, GgufError> {
    let mut c = Cursor {
        inner: reader,
        pos: 0,
        len: file_len,
    };
    let (version, n_tensors, n_kv) = read_header(&mut c)?;
    let metadata = read_metadata(&mut c, n_kv)?;
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(_) => metadata.get_u64("general.alignment")?,
    };
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(GgufError::BadAlignment(alignment));
    }
    let raw = read_tensor_infos(&mut c, n_tensors)?;
    let data_offset = c
        .pos
        .checked_next_multiple_of(alignment)
        .ok_or(GgufError::BadAlignment(alignment))?;
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dims, type_id, rel_offset) in raw {
        tensors.push(validate_tensor(
            name,
            dims,
            type_id,
            rel_offset,
            data_offset,
            alignment,
            file_len,
        )?);
    }
    Ok(Layout {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
    })
}

/// Magic, version and the two counts: `(version, tensor count, key/value count)`, each count
/// bounded by what the rest of the file can hold.
fn read_header<R: Read>(c: &mut Cursor<R>) -> Result<(u32, usize, usize), GgufError> {
    let magic: [u8; 4] = c.array("magic")?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32("version")?;
    if version & 0xFFFF == 0 && matches!(version.swap_bytes(), 2 | 3) {
        return Err(GgufError::BigEndian {
            version: version.swap_bytes(),
        });
    }
    if !matches!(version, 2 | 3) {
        return Err(GgufError::UnsupportedVersion { version });
    }
    // Smallest tensor info: empty name (8), n_dims (4), type (4), offset (8).
    let n_tensors_offset = c.pos;
    let n_tensors_raw = c.u64("tensor count")?;
    // Smallest key/value: empty key (8), type (4), one-byte value (1).
    let n_kv = c.count("metadata entry count", 8 + 4 + 1)?;
    let n_tensors_fit = n_tensors_raw
        .checked_mul(24)
        .is_some_and(|b| b <= c.remaining());
    if !n_tensors_fit {
        return Err(GgufError::CountTooLarge {
            what: "tensor count",
            count: n_tensors_raw,
            remaining: c.remaining(),
            offset: n_tensors_offset,
        });
    }
    let n_tensors = usize::try_from(n_tensors_raw).map_err(|_| GgufError::TooLarge {
        what: "tensor count",
        value: n_tensors_raw,
    })?;
    Ok((version, n_tensors, n_kv))
}

/// `n_kv` key/value pairs; a key seen twice is an error.
fn read_metadata<R: Read>(c: &mut Cursor<R>, n_kv: usize) -> Result<Metadata, GgufError> {
    let mut entries = BTreeMap::new();
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let type_offset = c.pos;
        let type_id = c.u32("metadata value type")?;
        let value = read_value(c, type_id, type_offset, 0)?;
        if entries.contains_key(&key) {
            return Err(GgufError::DuplicateKey(key));
        }
        entries.insert(key, value);
    }
    Ok(entries.into_iter().collect())
}

/// One tensor info as stored: name, dims (innermost first), type id, offset in the data.
type RawTensorInfo = (String, Vec<u64>, u32, u64);

/// `n_tensors` tensor infos; a name seen twice is an error.
fn read_tensor_infos<R: Read>(
    c: &mut Cursor<R>,
    n_tensors: usize,
) -> Result<Vec<RawTensorInfo>, GgufError> {
    let mut raw = Vec::with_capacity(n_tensors.min(MAX_PREALLOC));
    let mut seen = HashSet::new();
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let n_dims_offset = c.pos;
        let n_dims = c.u32("tensor dimension count")?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::BadTensorShape {
                name,
                reason: format!(
                    "{n_dims} dimensions at offset {n_dims_offset} (at most {MAX_DIMS})"
                ),
            });
        }
        let dims = c.vec(n_dims as usize, |c| c.u64("tensor dimension"))?;
        let type_id = c.u32("tensor type")?;
        let rel_offset = c.u64("tensor offset")?;
        if !seen.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor(name));
        }
        raw.push((name, dims, type_id, rel_offset));
    }
    Ok(raw)
}

/// A tensor's info once its shape, alignment and extent in the file are checked.
fn validate_tensor(
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    rel_offset: u64,
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<TensorInfo, GgufError> {
    let shape_err = |name: &str, reason: String| GgufError::BadTensorShape {
        name: name.to_owned(),
        reason,
    };
    if dims.contains(&0) {
        return Err(shape_err(
            &name,
            format!("zero-sized dimension in {dims:?}"),
        ));
    }
    let n_values = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| shape_err(&name, format!("dimensions {dims:?} overflow")))?;
    if !rel_offset.is_multiple_of(alignment) {
        return Err(GgufError::TensorMisaligned {
            name,
            offset: rel_offset,
            alignment,
        });
    }
    let offset =
        data_offset
            .checked_add(rel_offset)
            .ok_or_else(|| GgufError::TensorOutOfBounds {
                name: name.clone(),
                end: u64::MAX,
                file_len,
            })?;
    let n_bytes = match GgmlType::from_id(type_id) {
        None => None,
        Some(kind) => {
            let block = kind.block_values() as u64;
            let row = dims.first().copied().unwrap_or(1);
            if !row.is_multiple_of(block) {
                return Err(shape_err(
                    &name,
                    format!("rows of {row} values are not whole {kind:?} blocks of {block}"),
                ));
            }
            let bytes = (n_values / block)
                .checked_mul(kind.block_bytes() as u64)
                .ok_or_else(|| shape_err(&name, format!("byte size of {dims:?} overflows")))?;
            let end = offset.saturating_add(bytes);
            if end > file_len {
                return Err(GgufError::TensorOutOfBounds {
                    name,
                    end,
                    file_len,
                });
            }
            Some(bytes)
        }
    };
    Ok(TensorInfo {
        name,
        dims,
        type_id,
        offset,
        n_bytes,
    })
}
