//! A document's text cut into chunks the encoder reads whole: paragraphs (runs of non-blank
//! lines) gathered up to a size, a Markdown heading starting a new chunk, a paragraph or a
//! line longer than the size cut at whitespace. Each chunk knows the lines it came from.

/// Longest chunk, in bytes: about 200 word pieces of English prose, inside the encoder's
/// 256-piece window.
pub const MAX_CHUNK_BYTES: usize = 900;
/// A heading closes the chunk before it once that chunk has this many bytes.
const MIN_CHUNK_BYTES: usize = 200;

/// A piece of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// First line (1-based).
    pub line_start: u32,
    /// Last line (1-based, inclusive).
    pub line_end: u32,
    /// The text, paragraphs separated by a blank line.
    pub text: String,
}

/// A paragraph (or a piece of one) before it is packed into chunks.
struct Unit {
    line_start: u32,
    line_end: u32,
    text: String,
    heading: bool,
}

/// Cuts `text` into chunks of at most `max` bytes (`markdown`: headings start chunks).
pub fn chunks(text: &str, markdown: bool, max: usize) -> Vec<Chunk> {
    let max = max.max(16);
    let mut out = Vec::new();
    let mut cur: Option<Chunk> = None;
    for unit in units(text, markdown, max) {
        if let Some(c) = cur.as_mut() {
            let fits = c.text.len() + 2 + unit.text.len() <= max;
            let heading_break = unit.heading && c.text.len() >= MIN_CHUNK_BYTES;
            if fits && !heading_break {
                c.text.push_str("\n\n");
                c.text.push_str(&unit.text);
                c.line_end = unit.line_end;
                continue;
            }
            out.extend(cur.take());
        }
        cur = Some(Chunk {
            line_start: unit.line_start,
            line_end: unit.line_end,
            text: unit.text,
        });
    }
    out.extend(cur);
    out
}

/// Paragraphs of `text` no longer than `max` bytes each.
fn units(text: &str, markdown: bool, max: usize) -> Vec<Unit> {
    let mut out: Vec<Unit> = Vec::new();
    let mut para: Option<Unit> = None;
    for (i, line) in text.split('\n').enumerate() {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let line = line.trim_end();
        if line.trim().is_empty() {
            out.extend(para.take());
            continue;
        }
        let heading = markdown && line.starts_with('#');
        if heading {
            out.extend(para.take());
        }
        for piece in split_long(line, max) {
            match para.as_mut() {
                Some(p) if p.text.len() + 1 + piece.len() <= max => {
                    p.text.push('\n');
                    p.text.push_str(piece);
                    p.line_end = n;
                }
                _ => {
                    let was_heading = para.is_none() && heading;
                    out.extend(para.take());
                    para = Some(Unit {
                        line_start: n,
                        line_end: n,
                        text: piece.to_string(),
                        heading: was_heading,
                    });
                }
            }
        }
    }
    out.extend(para);
    out
}

/// `line` cut into pieces of at most `max` bytes, at whitespace where there is some, never
/// inside a character.
fn split_long(line: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = line.trim_start();
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(ws) = rest[..cut].rfind(char::is_whitespace)
            && ws > max / 2
        {
            cut = ws;
        }
        pieces.push(rest[..cut].trim_end());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_are_packed_up_to_the_size_with_their_line_ranges() {
        let text = "one\ntwo\n\nthree\n\n\nfour five";
        let c = chunks(text, false, 900);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].line_start, c[0].line_end), (1, 7));
        assert_eq!(c[0].text, "one\ntwo\n\nthree\n\nfour five");
        let c = chunks(text, false, 16);
        assert_eq!(
            c.iter()
                .map(|c| (c.line_start, c.line_end, c.text.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, 4, "one\ntwo\n\nthree"), (7, 7, "four five")]
        );
    }

    #[test]
    fn a_markdown_heading_starts_a_chunk_once_the_previous_one_is_substantial() {
        let body = "word ".repeat(50);
        let text = format!("# A\n{body}\n\n## B\nshort\n\n## C\ntail");
        let c = chunks(&text, true, 900);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c[0].text.starts_with("# A"));
        assert!(c[1].text.starts_with("## B") && c[1].text.contains("## C"));
        assert_eq!((c[1].line_start, c[1].line_end), (4, 8));
        // Not Markdown: the heading-looking line is just text.
        assert_eq!(chunks(&text, false, 900).len(), 1);
    }

    #[test]
    fn a_long_line_is_cut_at_whitespace_and_never_inside_a_character() {
        let line = "é".repeat(30) + " " + &"ü".repeat(40);
        let c = chunks(&line, false, 64);
        assert!(c.iter().all(|c| c.text.len() <= 64), "{c:?}");
        assert!(c.iter().all(|c| c.line_start == 1 && c.line_end == 1));
        let joined: String = c.iter().map(|c| c.text.replace(' ', "")).collect();
        assert_eq!(joined, line.replace(' ', ""));
    }

    #[test]
    fn every_chunk_respects_the_bound_on_arbitrary_text() {
        let mut text = String::new();
        for i in 0..400 {
            text.push_str(&"x".repeat(i * 7 % 1300));
            text.push_str(if i % 3 == 0 { "\n\n" } else { " y\n" });
        }
        let c = chunks(&text, true, 900);
        assert!(c.iter().all(|c| !c.text.is_empty() && c.text.len() <= 900));
        assert!(c.windows(2).all(|w| w[0].line_end <= w[1].line_start));
        let kept: usize = c.iter().map(|c| c.text.matches('x').count()).sum();
        assert_eq!(kept, text.matches('x').count());
    }

    #[test]
    fn empty_and_blank_text_has_no_chunks() {
        assert!(chunks("", false, 900).is_empty());
        assert!(chunks("\n  \n\t\n", true, 900).is_empty());
    }
}
