//! A minimal GGUF writer for synthetic files, for tests only (the `test-util` feature gives
//! it to the fuzz targets): the reader's tests build their inputs with it. It writes what it
//! is told, valid or not.

#[cfg(test)]
use std::path::{Path, PathBuf};

use super::MetadataValue;

/// Metadata value type id of `u8` (GGUF specification).
pub const T_U8: u32 = 0;
/// Type id of `i8`.
pub const T_I8: u32 = 1;
/// Type id of `u16`.
pub const T_U16: u32 = 2;
/// Type id of `i16`.
pub const T_I16: u32 = 3;
/// Type id of `u32`.
pub const T_U32: u32 = 4;
/// Type id of `i32`.
pub const T_I32: u32 = 5;
/// Type id of `f32`.
pub const T_F32: u32 = 6;
/// Type id of `bool`.
pub const T_BOOL: u32 = 7;
/// Type id of a string.
pub const T_STRING: u32 = 8;
/// Type id of an array.
pub const T_ARRAY: u32 = 9;
/// Type id of `u64`.
pub const T_U64: u32 = 10;
/// Type id of `i64`.
pub const T_I64: u32 = 11;
/// Type id of `f64`.
pub const T_F64: u32 = 12;

/// The type id and encoding of a metadata value. An array takes its first element's type
/// (an empty one is written as an array of `u8`).
pub fn encode(value: &MetadataValue) -> (u32, Vec<u8>) {
    match value {
        MetadataValue::U8(v) => (T_U8, v.to_le_bytes().to_vec()),
        MetadataValue::I8(v) => (T_I8, v.to_le_bytes().to_vec()),
        MetadataValue::U16(v) => (T_U16, v.to_le_bytes().to_vec()),
        MetadataValue::I16(v) => (T_I16, v.to_le_bytes().to_vec()),
        MetadataValue::U32(v) => (T_U32, v.to_le_bytes().to_vec()),
        MetadataValue::I32(v) => (T_I32, v.to_le_bytes().to_vec()),
        MetadataValue::F32(v) => (T_F32, v.to_le_bytes().to_vec()),
        MetadataValue::Bool(v) => (T_BOOL, vec![u8::from(*v)]),
        MetadataValue::String(v) => (T_STRING, string(v)),
        MetadataValue::U64(v) => (T_U64, v.to_le_bytes().to_vec()),
        MetadataValue::I64(v) => (T_I64, v.to_le_bytes().to_vec()),
        MetadataValue::F64(v) => (T_F64, v.to_le_bytes().to_vec()),
        MetadataValue::Array(items) => {
            let elem = items.first().map_or(T_U8, |v| encode(v).0);
            let mut out = elem.to_le_bytes().to_vec();
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                out.extend(encode(item).1);
            }
            (T_ARRAY, out)
        }
    }
}

/// A GGUF string: its length as u64, then its bytes.
pub fn string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// A tensor entry: name, dims (innermost first), type id, data.
pub struct RawTensor {
    /// The tensor's name.
    pub name: String,
    /// Dimensions, innermost first.
    pub dims: Vec<u64>,
    /// ggml type id.
    pub type_id: u32,
    /// The data, written at the next aligned offset.
    pub data: Vec<u8>,
}

/// A GGUF file under construction.
pub struct GgufBuilder {
    /// Format version written in the header.
    pub version: u32,
    /// Alignment of tensor data, in bytes.
    pub alignment: u64,
    /// Key and (type id, encoded value) pairs, in order.
    pub kvs: Vec<(String, u32, Vec<u8>)>,
    /// Tensors, in order.
    pub tensors: Vec<RawTensor>,
}

impl Default for GgufBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufBuilder {
    /// An empty version-3 file with 32-byte alignment.
    pub fn new() -> Self {
        Self {
            version: 3,
            alignment: 32,
            kvs: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Sets `key` to an encoded value of type `type_id` (replacing an earlier one).
    pub fn kv(mut self, key: &str, type_id: u32, value: Vec<u8>) -> Self {
        self.kvs.retain(|(k, _, _)| k != key);
        self.kvs.push((key.to_owned(), type_id, value));
        self
    }

    /// Removes `key`.
    pub fn without(mut self, key: &str) -> Self {
        self.kvs.retain(|(k, _, _)| k != key);
        self
    }

    /// Sets `key` to `value`, encoded with [`encode`].
    pub fn value(self, key: &str, value: &MetadataValue) -> Self {
        let (type_id, bytes) = encode(value);
        self.kv(key, type_id, bytes)
    }

    /// Sets a string value.
    pub fn str(self, key: &str, v: &str) -> Self {
        self.kv(key, T_STRING, string(v))
    }

    /// Sets a `u32` value.
    pub fn u32(self, key: &str, v: u32) -> Self {
        self.kv(key, T_U32, v.to_le_bytes().to_vec())
    }

    /// Sets an `f32` value.
    pub fn f32(self, key: &str, v: f32) -> Self {
        self.kv(key, T_F32, v.to_le_bytes().to_vec())
    }

    /// Sets an array of strings.
    pub fn str_array(self, key: &str, items: &[&str]) -> Self {
        let mut v = T_STRING.to_le_bytes().to_vec();
        v.extend((items.len() as u64).to_le_bytes());
        for s in items {
            v.extend(string(s));
        }
        self.kv(key, T_ARRAY, v)
    }

    /// Sets an array of `i32`.
    pub fn i32_array(self, key: &str, items: &[i32]) -> Self {
        let mut v = T_I32.to_le_bytes().to_vec();
        v.extend((items.len() as u64).to_le_bytes());
        for x in items {
            v.extend(x.to_le_bytes());
        }
        self.kv(key, T_ARRAY, v)
    }

    /// Adds (or replaces) a tensor with raw data.
    pub fn tensor(mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> Self {
        self.tensors.retain(|t| t.name != name);
        self.tensors.push(RawTensor {
            name: name.to_owned(),
            dims: dims.to_vec(),
            type_id,
            data,
        });
        self
    }

    /// Adds (or replaces) an F32 tensor.
    pub fn tensor_f32(self, name: &str, dims: &[u64], values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, dims, 0, data)
    }

    /// Removes a tensor.
    pub fn without_tensor(mut self, name: &str) -> Self {
        self.tensors.retain(|t| t.name != name);
        self
    }

    fn pad(buf: &mut Vec<u8>, alignment: u64) {
        while !(buf.len() as u64).is_multiple_of(alignment) {
            buf.push(0);
        }
    }

    /// Encodes the file; tensor offsets are assigned in order, each aligned.
    pub fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kvs.len() as u64).to_le_bytes());
        for (k, t, v) in &self.kvs {
            out.extend(string(k));
            out.extend(t.to_le_bytes());
            out.extend(v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            out.extend(string(&t.name));
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.type_id.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.data.len() as u64).next_multiple_of(self.alignment);
        }
        Self::pad(&mut out, self.alignment);
        let data_start = out.len();
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off as usize, 0);
            out.extend(&t.data);
        }
        out
    }

    /// Writes the file into `dir`.
    #[cfg(test)]
    pub fn write(&self, dir: &Path, file_name: &str) -> PathBuf {
        let path = dir.join(file_name);
        std::fs::write(&path, self.build()).expect("write test GGUF");
        path
    }
}

/// A loadable one-layer Llama: hidden 16, two query heads of 8, one key/value head,
/// MLP 32, five tokens, F32 weights of small distinct values.
pub fn small_llama() -> GgufBuilder {
    const HIDDEN: u64 = 16;
    const KV_ROWS: u64 = 8;
    const INTER: u64 = 32;
    const VOCAB: u64 = 5;
    let values = |n: u64| -> Vec<f32> { (0..n).map(|i| (i % 7) as f32 * 0.125).collect() };
    let tokens = ["<s>", "</s>", "a", "b", "c"];
    let mut b = GgufBuilder::new()
        .str("general.architecture", "llama")
        .u32("llama.block_count", 1)
        .u32("llama.context_length", 64)
        .u32("llama.embedding_length", HIDDEN as u32)
        .u32("llama.feed_forward_length", INTER as u32)
        .u32("llama.attention.head_count", 2)
        .u32("llama.attention.head_count_kv", 1)
        .f32("llama.rope.freq_base", 10_000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .str_array("tokenizer.ggml.tokens", &tokens)
        .u32("tokenizer.ggml.bos_token_id", 0)
        .u32("tokenizer.ggml.eos_token_id", 1)
        .tensor_f32(
            "token_embd.weight",
            &[HIDDEN, VOCAB],
            &values(HIDDEN * VOCAB),
        )
        .tensor_f32("output_norm.weight", &[HIDDEN], &values(HIDDEN));
    let layer: [(&str, [u64; 2]); 7] = [
        ("attn_q", [HIDDEN, HIDDEN]),
        ("attn_k", [HIDDEN, KV_ROWS]),
        ("attn_v", [HIDDEN, KV_ROWS]),
        ("attn_output", [HIDDEN, HIDDEN]),
        ("ffn_gate", [HIDDEN, INTER]),
        ("ffn_up", [HIDDEN, INTER]),
        ("ffn_down", [INTER, HIDDEN]),
    ];
    for norm in ["attn_norm", "ffn_norm"] {
        b = b.tensor_f32(&format!("blk.0.{norm}.weight"), &[HIDDEN], &values(HIDDEN));
    }
    for (name, dims) in layer {
        let n = dims[0] * dims[1];
        b = b.tensor_f32(&format!("blk.0.{name}.weight"), &dims, &values(n));
    }
    b
}
