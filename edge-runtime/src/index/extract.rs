//! From a file on disk to the plain text of a document, or the reason it is not one: too
//! large, unreadable, binary, not UTF-8, or of a kind the index does not read. Memory is
//! bounded by the size limit whatever the file claims to be; an HTML page keeps its line
//! numbers, so a chunk cites the line of the page it came from.

use std::io::Read;
use std::path::Path;

/// Kinds of document the index reads, by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain text (`.txt`, `.log`, `.text`, a file without an extension, source and config
    /// files).
    Text,
    /// Markdown (`.md`, `.markdown`).
    Markdown,
    /// HTML (`.html`, `.htm`): tags, scripts and styles are dropped, entities decoded.
    Html,
}

impl Kind {
    /// The name stored in the index.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Markdown => "markdown",
            Kind::Html => "html",
        }
    }

    /// The kind of `path` by its extension; `None` for a kind the index does not read.
    pub fn of(path: &Path) -> Option<Kind> {
        let ext = match path.extension() {
            None => return Some(Kind::Text),
            Some(e) => e.to_string_lossy().to_ascii_lowercase(),
        };
        match ext.as_str() {
            "md" | "markdown" => Some(Kind::Markdown),
            "html" | "htm" | "xhtml" => Some(Kind::Html),
            "txt" | "text" | "log" | "rst" | "csv" | "tsv" | "toml" | "yaml" | "yml" | "json"
            | "ini" | "conf" | "cfg" | "rs" | "py" | "c" | "h" | "cpp" | "sh" | "org" | "tex" => {
                Some(Kind::Text)
            }
            _ => None,
        }
    }
}

/// Why a file is not indexed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// Larger than the limit.
    #[error("{bytes} bytes, above the {limit}-byte limit per file (--max-file-mb)")]
    TooLarge {
        /// Size seen (at least this many bytes).
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The file could not be opened or read.
    #[error("unreadable: {0}")]
    Unreadable(String),
    /// A NUL byte in the first 8 KiB: not text.
    #[error("binary (a NUL byte at offset {0})")]
    Binary(usize),
    /// Not valid UTF-8.
    #[error("not UTF-8 text (invalid bytes at offset {0})")]
    NotUtf8(usize),
    /// An extension the index does not read.
    #[error("not a text, Markdown or HTML file (.{0})")]
    UnknownKind(String),
    /// Not a regular file (a device, a socket, a pipe).
    #[error("not a regular file")]
    NotAFile,
}

/// A document's text and what it hashes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// The kind read.
    pub kind: Kind,
    /// Plain text; line `n` of it (1-based) is line `n` of the file.
    pub text: String,
    /// sha256 of the file's bytes.
    pub sha256: [u8; 32],
    /// Size of the file (bytes).
    pub bytes: u64,
}

/// Reads `path` as a document of at most `limit` bytes.
pub fn extract(path: &Path, limit: u64) -> Result<Extracted, Skip> {
    let kind = Kind::of(path).ok_or_else(|| {
        Skip::UnknownKind(
            path.extension()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    })?;
    let meta = std::fs::metadata(path).map_err(|e| Skip::Unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(Skip::NotAFile);
    }
    if meta.len() > limit {
        return Err(Skip::TooLarge {
            bytes: meta.len(),
            limit,
        });
    }
    let file = std::fs::File::open(path).map_err(|e| Skip::Unreadable(e.to_string()))?;
    // The size can change between the stat and the read: read one byte past the limit.
    let mut reader = file.take(limit + 1);
    let unreadable = |e: std::io::Error| Skip::Unreadable(e.to_string());
    // The head first: a binary file is refused after BINARY_PROBE bytes, not its whole size.
    let mut bytes = Vec::with_capacity(meta.len().min(BINARY_PROBE as u64) as usize);
    (&mut reader)
        .take(BINARY_PROBE as u64)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if let Some(at) = nul_in_head(&bytes) {
        return Err(Skip::Binary(at));
    }
    bytes.reserve(meta.len().saturating_sub(bytes.len() as u64) as usize);
    reader.read_to_end(&mut bytes).map_err(unreadable)?;
    if bytes.len() as u64 > limit {
        return Err(Skip::TooLarge {
            bytes: bytes.len() as u64,
            limit,
        });
    }
    from_bytes(kind, bytes)
}

/// [`extract`] on bytes already read.
pub fn from_bytes(kind: Kind, bytes: Vec<u8>) -> Result<Extracted, Skip> {
    use sha2::{Digest, Sha256};
    if let Some(at) = nul_in_head(&bytes) {
        return Err(Skip::Binary(at));
    }
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    let len = bytes.len() as u64;
    let raw = String::from_utf8(bytes).map_err(|e| Skip::NotUtf8(e.utf8_error().valid_up_to()))?;
    let body = raw.strip_prefix('\u{feff}').unwrap_or(&raw);
    let text = match kind {
        Kind::Html => html_to_text(body),
        Kind::Text | Kind::Markdown => body.replace("\r\n", "\n"),
    };
    Ok(Extracted {
        kind,
        text,
        sha256,
        bytes: len,
    })
}

/// Bytes at the head of a file searched for a NUL byte, the sign of a binary file.
const BINARY_PROBE: usize = 8192;

/// Offset of the first NUL byte in the first [`BINARY_PROBE`] bytes.
fn nul_in_head(bytes: &[u8]) -> Option<usize> {
    bytes.iter().take(BINARY_PROBE).position(|&b| b == 0)
}

/// The visible text of an HTML page with its line breaks where the source had them: tags,
/// comments, `<script>` and `<style>` contents become nothing (their newlines stay), the
/// common entities are decoded.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    let bytes = html.as_bytes();
    while i < bytes.len() {
        let rest = &lower[i..];
        let skip_to = if rest.starts_with("<!--") {
            Some(rest.find("-->").map_or(html.len(), |e| i + e + 3))
        } else if rest.starts_with("<script") || rest.starts_with("<style") {
            let close = if rest.starts_with("<script") {
                "</script"
            } else {
                "</style"
            };
            let end = rest.find(close).map_or(html.len(), |e| i + e);
            let end = lower[end..].find('>').map_or(html.len(), |g| end + g + 1);
            Some(end)
        } else if bytes[i] == b'<'
            && rest[1..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!' || c == '?')
        {
            Some(rest.find('>').map_or(html.len(), |e| i + e + 1))
        } else {
            None
        };
        match skip_to {
            Some(end) => {
                out.extend(html[i..end].chars().filter(|&c| c == '\n'));
                if !out.ends_with(['\n', ' ']) {
                    out.push(' ');
                }
                i = end;
            }
            None => {
                let c = html[i..].chars().next().unwrap_or(' ');
                if c == '&'
                    && let Some((decoded, len)) = entity(&html[i..])
                {
                    out.push(decoded);
                    i += len;
                    continue;
                }
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The character an entity at the start of `s` stands for, and the entity's length.
fn entity(s: &str) -> Option<(char, usize)> {
    // Byte positions: `;` is ASCII, so slicing at it never cuts a character.
    let end = s.bytes().take(12).position(|b| b == b';')?;
    let name = &s[1..end];
    let c = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" | "#39" => '\'',
        "nbsp" => ' ',
        _ => {
            let code = if let Some(hex) = name.strip_prefix("#x").or(name.strip_prefix("#X")) {
                u32::from_str_radix(hex, 16).ok()?
            } else {
                name.strip_prefix('#')?.parse().ok()?
            };
            char::from_u32(code)?
        }
    };
    Some((c, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_extension() {
        assert_eq!(Kind::of(Path::new("a/README.md")), Some(Kind::Markdown));
        assert_eq!(Kind::of(Path::new("page.HTM")), Some(Kind::Html));
        assert_eq!(Kind::of(Path::new("notes.txt")), Some(Kind::Text));
        assert_eq!(Kind::of(Path::new("COPYING")), Some(Kind::Text));
        assert_eq!(Kind::of(Path::new("photo.jpg")), None);
    }

    #[test]
    fn binary_and_invalid_utf8_are_refused_with_their_offset() {
        assert_eq!(
            from_bytes(Kind::Text, b"abc\0def".to_vec()),
            Err(Skip::Binary(3))
        );
        assert_eq!(
            from_bytes(Kind::Text, b"ok \xff\xfe".to_vec()),
            Err(Skip::NotUtf8(3))
        );
        let ok = from_bytes(Kind::Text, "a\r\nb\n".into()).expect("text");
        assert_eq!(ok.text, "a\nb\n");
        assert_eq!(ok.bytes, 5);
    }

    #[test]
    fn a_file_above_the_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("big.txt");
        let f = std::fs::File::create(&p).expect("create");
        f.set_len(1 << 30).expect("sparse 1 GiB");
        let err = extract(&p, 1 << 20).expect_err("too large");
        assert_eq!(
            err,
            Skip::TooLarge {
                bytes: 1 << 30,
                limit: 1 << 20
            }
        );
        assert!(err.to_string().contains("above the 1048576-byte limit"));
    }

    #[test]
    fn a_large_binary_file_within_the_limit_is_refused_from_its_head() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("zeros.txt");
        let f = std::fs::File::create(&p).expect("create");
        f.set_len(1 << 30).expect("sparse 1 GiB");
        assert_eq!(extract(&p, 2 << 30), Err(Skip::Binary(0)));
        let late = dir.path().join("late.txt");
        let mut bytes = vec![b'a'; BINARY_PROBE + 10];
        bytes[BINARY_PROBE + 5] = 0;
        std::fs::write(&late, &bytes).expect("write");
        let text = extract(&late, 1 << 20).expect("a NUL past the probe is text");
        assert_eq!(text.bytes, bytes.len() as u64);
    }

    #[test]
    fn an_unknown_extension_and_a_missing_file_have_reasons() {
        let err = extract(Path::new("/nonexistent/x.png"), 10).expect_err("png");
        assert_eq!(err, Skip::UnknownKind("png".into()));
        let err = extract(Path::new("/nonexistent/x.txt"), 10).expect_err("missing");
        assert!(matches!(err, Skip::Unreadable(_)), "{err:?}");
    }

    #[test]
    fn html_keeps_its_lines_and_drops_markup_scripts_and_styles() {
        let html = "<html>\n<head><style>p { color: red }\n</style></head>\n<body>\n<p>Fish &amp; chips &lt;3 &#233;t&#xE9;</p>\n<script>var x = '<p>';\n</script>\n<!-- a\ncomment -->Last line</body></html>";
        let text = html_to_text(html);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), html.lines().count(), "{text:?}");
        assert_eq!(lines[4].trim(), "Fish & chips <3 été");
        assert!(!text.contains("color"), "{text:?}");
        assert!(!text.contains("var x"), "{text:?}");
        assert!(lines[8].contains("Last line"), "{text:?}");
    }

    #[test]
    fn a_lone_ampersand_or_angle_bracket_is_text() {
        assert_eq!(html_to_text("a < b & c"), "a < b & c");
        assert_eq!(html_to_text("&éééééééé;"), "&éééééééé;");
    }
}
