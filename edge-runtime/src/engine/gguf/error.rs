//! The GGUF reader's error: what can be wrong with a file's bytes, its metadata lookups and its
//! tensor storage types. What a model mapping refuses lives with that mapping.

use thiserror::Error;

use super::MAX_ARRAY_DEPTH;
use crate::engine::quant::QuantError;

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
    /// A tensor stored in a ggml type the importer cannot represent.
    #[error("tensor {name:?} has ggml type id {type_id}, which this importer does not support")]
    UnsupportedTensorType {
        /// Tensor name (GGUF naming).
        name: String,
        /// The ggml type id.
        type_id: u32,
    },
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
