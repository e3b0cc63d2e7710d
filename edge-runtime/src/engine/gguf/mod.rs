//! GGUF (v2/v3, little-endian) container reader, apart from what any model makes of it (the
//! Llama mapping is [`crate::engine::gguf_llama`]). It owns the file layout: header, typed
//! metadata, tensor infos, `general.alignment` and the data section, with every count and
//! offset bounded by the file size before anything is allocated. Tensor data is read lazily
//! by offset, one tensor at a time. Storage formats live in [`crate::engine::quant`]; nothing
//! here imports tract.

mod error;
mod parse;
#[cfg(any(test, feature = "test-util"))]
pub mod test_writer;
#[cfg(test)]
mod tests;
mod value;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

pub use self::error::GgufError;
pub use self::value::{Metadata, MetadataValue};
use crate::engine::quant::{self, GgmlType};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Data-section alignment when `general.alignment` is absent, in bytes.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a ggml tensor can have.
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of metadata arrays accepted (arrays of arrays of ...).
pub const MAX_ARRAY_DEPTH: usize = 8;

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
        let layout = parse::parse_layout(BufReader::new(&file), file_len)?;
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
}
