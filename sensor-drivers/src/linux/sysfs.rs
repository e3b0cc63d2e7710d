//! Reading and writing single-value sysfs attributes with typed errors. Sysfs files are tiny,
//! end in a newline, and fail in a handful of ways (absent, empty, `EIO`/`ENODATA` while a sensor
//! is not ready, `EACCES`/`EPERM` on writes as non-root); each becomes one [`SysfsError`] variant
//! carrying the path.

use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use crate::error::{ActuatorError, SensorError};

/// A sysfs attribute could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// The attribute does not exist.
    #[error("{path}: not found")]
    NotFound {
        /// The attribute.
        path: PathBuf,
    },
    /// The kernel refused access.
    #[error("{path}: permission denied")]
    PermissionDenied {
        /// The attribute.
        path: PathBuf,
    },
    /// The attribute held no data.
    #[error("{path}: empty")]
    Empty {
        /// The attribute.
        path: PathBuf,
    },
    /// The attribute did not hold the expected number or keyword.
    #[error("{path}: unexpected contents {contents:?}")]
    Malformed {
        /// The attribute.
        path: PathBuf,
        /// What it held (trimmed, at most 64 bytes).
        contents: String,
    },
    /// The value lies outside the physically plausible range.
    #[error("{path}: implausible value {value}")]
    Implausible {
        /// The attribute.
        path: PathBuf,
        /// The value read.
        value: i64,
    },
    /// A value to write is outside what the attribute accepts; nothing was written.
    #[error("{path}: {value} is outside {min}..={max}")]
    OutOfRange {
        /// The attribute.
        path: PathBuf,
        /// The rejected value.
        value: i64,
        /// Lowest accepted value.
        min: i64,
        /// Highest accepted value.
        max: i64,
    },
    /// Any other I/O failure.
    #[error("{path}: {cause}")]
    Io {
        /// The attribute.
        path: PathBuf,
        /// The underlying error.
        cause: io::Error,
    },
}

impl SysfsError {
    /// The attribute the error is about.
    pub fn path(&self) -> &Path {
        match self {
            SysfsError::NotFound { path }
            | SysfsError::PermissionDenied { path }
            | SysfsError::Empty { path }
            | SysfsError::Malformed { path, .. }
            | SysfsError::Implausible { path, .. }
            | SysfsError::OutOfRange { path, .. }
            | SysfsError::Io { path, .. } => path,
        }
    }

    pub(crate) fn from_io(path: &Path, error: io::Error) -> Self {
        let path = path.to_path_buf();
        match error.kind() {
            ErrorKind::NotFound => SysfsError::NotFound { path },
            // A read-only mount (sysfs in a container) refuses writes just like missing rights.
            ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
                SysfsError::PermissionDenied { path }
            }
            _ => match error.raw_os_error() {
                // EPERM: sysfs answers it for writes a non-root user may not make.
                Some(1) => SysfsError::PermissionDenied { path },
                _ => SysfsError::Io { path, cause: error },
            },
        }
    }

    pub(crate) fn malformed(path: &Path, contents: &str) -> Self {
        let mut contents = contents.trim().to_owned();
        if contents.len() > 64 {
            let mut cut = 64;
            while !contents.is_char_boundary(cut) {
                cut -= 1;
            }
            contents.truncate(cut);
        }
        SysfsError::Malformed {
            path: path.to_path_buf(),
            contents,
        }
    }
}

impl From<&SysfsError> for SensorError {
    fn from(value: &SysfsError) -> Self {
        match value {
            SysfsError::NotFound { .. } => SensorError::Missing,
            SysfsError::PermissionDenied { .. } => SensorError::PermissionDenied,
            SysfsError::Empty { .. } => SensorError::Empty,
            SysfsError::Malformed { .. } => SensorError::Malformed,
            SysfsError::Implausible { value, .. } => SensorError::Implausible { value: *value },
            SysfsError::OutOfRange { .. } => SensorError::NotConfigured,
            SysfsError::Io { .. } => SensorError::Io,
        }
    }
}

impl From<SysfsError> for SensorError {
    fn from(value: SysfsError) -> Self {
        SensorError::from(&value)
    }
}

impl From<&SysfsError> for ActuatorError {
    fn from(value: &SysfsError) -> Self {
        match value {
            SysfsError::NotFound { .. } => ActuatorError::Missing,
            SysfsError::PermissionDenied { .. } => ActuatorError::PermissionDenied,
            SysfsError::OutOfRange { .. } => ActuatorError::OutOfRange,
            SysfsError::Empty { .. }
            | SysfsError::Malformed { .. }
            | SysfsError::Implausible { .. }
            | SysfsError::Io { .. } => ActuatorError::Io,
        }
    }
}

impl From<SysfsError> for ActuatorError {
    fn from(value: SysfsError) -> Self {
        ActuatorError::from(&value)
    }
}

/// Reads an attribute and trims whitespace and NUL terminators; empty contents are an error.
pub fn read_text(path: &Path) -> Result<String, SysfsError> {
    let bytes = fs::read(path).map_err(|e| SysfsError::from_io(path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if trimmed.is_empty() {
        return Err(SysfsError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(trimmed.to_owned())
}

/// Reads a decimal integer attribute.
pub fn read_i64(path: &Path) -> Result<i64, SysfsError> {
    let text = read_text(path)?;
    text.parse::<i64>()
        .map_err(|_| SysfsError::malformed(path, &text))
}

/// Reads a decimal integer attribute that must fit in `T`.
pub fn read_int<T: TryFrom<i64>>(path: &Path) -> Result<T, SysfsError> {
    let value = read_i64(path)?;
    T::try_from(value).map_err(|_| SysfsError::malformed(path, &value.to_string()))
}

/// Reads a whitespace-separated list of decimal integers.
pub fn read_list<T: std::str::FromStr>(path: &Path) -> Result<Vec<T>, SysfsError> {
    let text = read_text(path)?;
    text.split_whitespace()
        .map(|word| {
            word.parse::<T>()
                .map_err(|_| SysfsError::malformed(path, &text))
        })
        .collect()
}

/// True when this process may write the attribute at `path` (it is opened for writing, and
/// nothing is written). Sysfs attributes are root-only by default: an unprivileged process
/// sees them as read-only.
pub fn is_writable(path: &Path) -> bool {
    fs::OpenOptions::new().write(true).open(path).is_ok()
}

/// Writes an attribute (a trailing newline is added, as `echo` does).
pub fn write_text(path: &Path, value: &str) -> Result<(), SysfsError> {
    fs::write(path, format!("{value}\n")).map_err(|e| SysfsError::from_io(path, e))
}

/// Entries of `dir` whose names are `prefix` followed by a decimal index, sorted by index.
/// A missing directory holds nothing.
pub fn indexed_entries(dir: &Path, prefix: &str) -> Result<Vec<(u32, PathBuf)>, SysfsError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SysfsError::from_io(dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| SysfsError::from_io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(index) = name.strip_prefix(prefix) else {
            continue;
        };
        if let Ok(index) = index.parse::<u32>() {
            found.push((index, entry.path()));
        }
    }
    found.sort_by_key(|(index, _)| *index);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_file_gets_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        let words = dir.path().join("words");
        let nul = dir.path().join("nul");
        fs::write(&empty, "\n").unwrap();
        fs::write(&words, "hot\n").unwrap();
        fs::write(&nul, "Raspberry Pi 5\0").unwrap();
        assert!(matches!(
            read_i64(&dir.path().join("absent")),
            Err(SysfsError::NotFound { .. })
        ));
        assert!(matches!(read_i64(&empty), Err(SysfsError::Empty { .. })));
        assert!(matches!(
            read_i64(&words),
            Err(SysfsError::Malformed { ref contents, .. }) if contents == "hot"
        ));
        assert_eq!(read_text(&nul).unwrap(), "Raspberry Pi 5");
    }

    #[test]
    fn indexed_entries_sort_numerically_and_skip_strangers() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["zone10", "zone2", "zone", "zonex", "other1"] {
            fs::create_dir(dir.path().join(name)).unwrap();
        }
        let found: Vec<u32> = indexed_entries(dir.path(), "zone")
            .unwrap()
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(found, vec![2, 10]);
        assert!(
            indexed_entries(&dir.path().join("missing"), "zone")
                .unwrap()
                .is_empty()
        );
    }
}
