//! Training data: plain text (one example per non-blank line) or JSONL (one object per
//! line: `{"messages": [{"role", "content"}, ..]}`, `{"prompt", "completion"}`,
//! `{"instruction", "input"?, "output"}` or `{"text"}`), tokenized with the model's own
//! tokenizer; chat pairs are rendered with the model's chat template and only the answer
//! is scored. Every problem is reported with its file and line, all of them at once.

use std::fmt;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Deserialize;

use super::model::PackedRow;
use crate::engine::chat::{ChatTemplate, Message, Role};
use crate::engine::tokenizer::TextTokenizer;

/// One problem found in the inputs, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataProblem {
    /// The file at fault.
    pub file: PathBuf,
    /// 1-based line, when the problem is on one line.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for DataProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// The tokenizer side of a model folder: tokenizer, chat template and end tokens.
pub struct TextSide {
    /// `tokenizer.json`.
    pub tokenizer: TextTokenizer,
    /// The chat template of `tokenizer_config.json`, if any.
    pub template: Option<ChatTemplate>,
    /// Context length of the model in tokens.
    pub context: usize,
}

#[derive(Default, Deserialize)]
struct TokCfg {
    #[serde(default)]
    chat_template: Option<String>,
    #[serde(default)]
    bos_token: Option<serde_json::Value>,
    #[serde(default)]
    eos_token: Option<serde_json::Value>,
}

fn token_text(v: &Option<serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(o)) => o
            .get("content")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => String::new(),
    }
}

impl TextSide {
    /// Reads the tokenizer side of the model folder `dir` (no weights are loaded).
    pub fn load(dir: &Path, context: usize) -> Result<Self> {
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let p = dir.join("tokenizer_config.json");
        let cfg: TokCfg = if p.is_file() {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
        } else {
            TokCfg::default()
        };
        let template = match &cfg.chat_template {
            Some(src) => Some(ChatTemplate::new(
                src,
                &token_text(&cfg.bos_token),
                &token_text(&cfg.eos_token),
            )?),
            None => None,
        };
        Ok(TextSide {
            tokenizer,
            template,
            context,
        })
    }

    /// Token ids of a chat prompt ending where the assistant's answer starts.
    pub fn chat_prompt(&self, user: &str) -> Result<Vec<u32>> {
        let t = self
            .template
            .as_ref()
            .context("the model has no chat template")?;
        self.tokenizer
            .encode(&t.render(&[Message::new(Role::User, user)], true)?)
    }
}

/// A parsed example before tokenization.
#[derive(Clone, Debug, PartialEq)]
pub enum RawExample {
    /// Plain text: every token is scored.
    Text(String),
    /// A conversation: the last assistant message is scored.
    Chat(Vec<Message>),
}

/// One tokenized example.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// The file it came from.
    pub file: PathBuf,
    /// Its 1-based line.
    pub line: usize,
    /// Token ids.
    pub ids: Vec<u32>,
    /// Index of the first scored token (≥ 1).
    pub scored_from: usize,
    /// The example's text, for duplicate detection.
    pub key: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonLine {
    Messages {
        messages: Vec<JsonMessage>,
    },
    Pair {
        prompt: String,
        completion: String,
    },
    Instruction {
        instruction: String,
        #[serde(default)]
        input: Option<String>,
        output: String,
    },
    Text {
        text: String,
    },
}

#[derive(Deserialize)]
struct JsonMessage {
    role: String,
    content: String,
}

fn role(name: &str) -> Option<Role> {
    match name {
        "system" => Some(Role::System),
        "user" => Some(Role::User),
        "assistant" => Some(Role::Assistant),
        _ => None,
    }
}

fn parse_json_line(line: &str) -> std::result::Result<RawExample, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let parsed: JsonLine = serde_json::from_value(v).map_err(|_| {
        "expected an object with \"messages\", \"prompt\"+\"completion\", \
         \"instruction\"+\"output\" or \"text\""
            .to_string()
    })?;
    Ok(match parsed {
        JsonLine::Messages { messages } => {
            let mut out = vec![];
            for m in messages {
                let r = role(&m.role).ok_or_else(|| format!("unknown role {:?}", m.role))?;
                out.push(Message::new(r, m.content));
            }
            if out.last().map(|m| m.role) != Some(Role::Assistant) {
                return Err("the last message must be the assistant's answer".into());
            }
            RawExample::Chat(out)
        }
        JsonLine::Pair { prompt, completion } => RawExample::Chat(vec![
            Message::new(Role::User, prompt),
            Message::new(Role::Assistant, completion),
        ]),
        JsonLine::Instruction {
            instruction,
            input,
            output,
        } => {
            let user = match input {
                Some(i) if !i.trim().is_empty() => format!("{instruction}\n\n{i}"),
                _ => instruction,
            };
            RawExample::Chat(vec![
                Message::new(Role::User, user),
                Message::new(Role::Assistant, output),
            ])
        }
        JsonLine::Text { text } => RawExample::Text(text),
    })
}

/// Longest line a data file may have, in bytes: far more than any training sequence holds,
/// and small enough that tokenizing it stays cheap.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Largest data file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Most problems listed per file; the rest are counted in one last problem.
pub const MAX_PROBLEMS: usize = 100;

/// Skips the rest of the current line (through its `\n`).
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                reader.consume(pos + 1);
                return Ok(());
            }
            None => {
                let len = chunk.len();
                reader.consume(len);
            }
        }
    }
}

/// Reads the next line (without its `\n`) into `buf`, at most [`MAX_LINE_BYTES`]: `Ok(None)`
/// at the end of the file, `Ok(Some(false))` for a longer line (skipped).
fn next_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    buf.clear();
    let limit = MAX_LINE_BYTES as u64 + 1;
    let read = reader.by_ref().take(limit).read_until(b'\n', buf)?;
    if read == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Some(true));
    }
    if buf.len() > MAX_LINE_BYTES {
        skip_line(reader)?;
        return Ok(Some(false));
    }
    Ok(Some(true))
}

/// Parses a data file into `(line, example)` pairs and the problems found. The file may be
/// at most [`MAX_FILE_BYTES`] and each line at most [`MAX_LINE_BYTES`]; at most
/// [`MAX_PROBLEMS`] problems are listed.
pub fn parse_file(path: &Path) -> (Vec<(usize, RawExample)>, Vec<DataProblem>) {
    let problem = |line: Option<usize>, message: String| DataProblem {
        file: path.to_path_buf(),
        line,
        message,
    };
    let opened = std::fs::File::open(path).and_then(|f| Ok((f.metadata()?.len(), f)));
    let (len, file) = match opened {
        Ok(opened) => opened,
        Err(e) => return (vec![], vec![problem(None, format!("cannot read: {e}"))]),
    };
    if len > MAX_FILE_BYTES {
        let message = format!("the file is {len} bytes; at most {MAX_FILE_BYTES} are read");
        return (vec![], vec![problem(None, message)]);
    }
    let jsonl = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
    let mut reader = std::io::BufReader::new(file.take(MAX_FILE_BYTES));
    let (mut examples, mut problems, mut unlisted) = (vec![], vec![], 0usize);
    let mut report = |problems: &mut Vec<DataProblem>, p: DataProblem| {
        if problems.len() < MAX_PROBLEMS {
            problems.push(p);
        } else {
            unlisted += 1;
        }
    };
    let mut raw = Vec::new();
    for n in 1.. {
        let whole = match next_line(&mut reader, &mut raw) {
            Ok(Some(whole)) => whole,
            Ok(None) => break,
            Err(e) => {
                report(&mut problems, problem(Some(n), format!("cannot read: {e}")));
                break;
            }
        };
        let message = if whole {
            match line_example(&raw, jsonl) {
                Ok(Some(ex)) => {
                    examples.push((n, ex));
                    continue;
                }
                Ok(None) => continue,
                Err(message) => message,
            }
        } else {
            format!(
                "the line is longer than {MAX_LINE_BYTES} bytes (a training example must be shorter)"
            )
        };
        report(&mut problems, problem(Some(n), message));
    }
    if unlisted > 0 {
        problems.push(problem(None, format!("and {unlisted} more problems")));
    }
    if examples.is_empty() && problems.is_empty() {
        problems.push(problem(None, "no examples: the file is empty".into()));
    }
    (examples, problems)
}

/// The example on one line: `None` for a blank line.
fn line_example(raw: &[u8], jsonl: bool) -> std::result::Result<Option<RawExample>, String> {
    let Ok(text) = std::str::from_utf8(raw) else {
        return Err("not UTF-8 text (binary data?)".into());
    };
    if text.contains('\0') {
        return Err("contains NUL bytes (binary data?)".into());
    }
    let text = text.trim_end_matches('\r');
    if text.trim().is_empty() {
        return Ok(None);
    }
    if jsonl {
        parse_json_line(text).map(Some)
    } else {
        Ok(Some(RawExample::Text(text.to_string())))
    }
}

/// Tokenizes one example; `max_tokens` is the training sequence length.
pub fn tokenize(
    side: &TextSide,
    ex: &RawExample,
    max_tokens: usize,
) -> std::result::Result<(Vec<u32>, usize, String), String> {
    let (ids, scored_from, key) = match ex {
        RawExample::Text(t) => {
            let ids = side.tokenizer.encode(t).map_err(|e| format!("{e:#}"))?;
            (ids, 1, t.clone())
        }
        RawExample::Chat(msgs) => {
            let template = side
                .template
                .as_ref()
                .ok_or("a chat example, but the model has no chat template")?;
            let split = msgs.len() - 1;
            let prompt = template
                .render(&msgs[..split], true)
                .map_err(|e| format!("{e:#}"))?;
            let full = template.render(msgs, false).map_err(|e| format!("{e:#}"))?;
            let answer = full.strip_prefix(&prompt).ok_or(
                "the chat template renders the answer in a way that does not extend the prompt",
            )?;
            let mut ids = side
                .tokenizer
                .encode(&prompt)
                .map_err(|e| format!("{e:#}"))?;
            let from = ids.len().max(1);
            ids.extend(
                side.tokenizer
                    .encode(answer)
                    .map_err(|e| format!("{e:#}"))?,
            );
            (ids, from, full)
        }
    };
    if ids.len() < 2 || scored_from >= ids.len() {
        return Err("too short: nothing to learn from".into());
    }
    if ids.len() > side.context {
        return Err(format!(
            "{} tokens, longer than the model's context of {}",
            ids.len(),
            side.context
        ));
    }
    if ids.len() > max_tokens {
        return Err(format!(
            "{} tokens, longer than the training sequence length of {max_tokens} (--seq-len)",
            ids.len()
        ));
    }
    Ok((ids, scored_from, key))
}

/// Reads and tokenizes a data file, collecting every problem.
pub fn load_examples(
    path: &Path,
    side: &TextSide,
    max_tokens: usize,
) -> (Vec<Example>, Vec<DataProblem>) {
    let (raw, mut problems) = parse_file(path);
    let mut out = vec![];
    for (line, ex) in raw {
        match tokenize(side, &ex, max_tokens) {
            Ok((ids, scored_from, key)) => out.push(Example {
                file: path.to_path_buf(),
                line,
                ids,
                scored_from,
                key,
            }),
            Err(message) => problems.push(DataProblem {
                file: path.to_path_buf(),
                line: Some(line),
                message,
            }),
        }
    }
    (out, problems)
}

/// Splits `examples` into train and held-out sets: a seeded `fraction` (at least one).
pub fn split(examples: Vec<Example>, fraction: f32, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let n = examples.len();
    let k = ((n as f32 * fraction).round() as usize).clamp(1, n.saturating_sub(1).max(1));
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(
        seed ^ 0x005e_ed0f_5911,
    ));
    let held: std::collections::HashSet<usize> = idx.into_iter().take(k).collect();
    let (mut train, mut eval) = (vec![], vec![]);
    for (i, e) in examples.into_iter().enumerate() {
        if held.contains(&i) {
            eval.push(e);
        } else {
            train.push(e);
        }
    }
    (train, eval)
}

/// Problems for examples that appear verbatim in both sets.
pub fn duplicates(train: &[Example], eval: &[Example]) -> Vec<DataProblem> {
    let mut seen = std::collections::HashMap::new();
    for e in train {
        seen.entry(e.key.as_str()).or_insert(e);
    }
    eval.iter()
        .filter_map(|e| {
            seen.get(e.key.as_str()).map(|t| DataProblem {
                file: e.file.clone(),
                line: Some(e.line),
                message: format!(
                    "held-out example duplicates the training example at {}:{}",
                    t.file.display(),
                    t.line
                ),
            })
        })
        .collect()
}

/// Seeded order of the training examples in `epoch`.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(epoch),
    ));
    idx
}

/// Length of the token prefix that every example in `sets` starts with (e.g. the chat
/// template's system turn), capped so that every example keeps at least one token of its
/// own and its first scored token's predecessor inside or right after the prefix.
pub fn common_prefix(sets: &[&[Example]]) -> usize {
    let mut all = sets.iter().flat_map(|s| s.iter());
    let Some(first) = all.next() else {
        return 0;
    };
    let mut k = first.ids.len().saturating_sub(1).min(first.scored_from);
    for e in all {
        k = k.min(e.ids.len().saturating_sub(1)).min(e.scored_from);
        k = first.ids[..k]
            .iter()
            .zip(&e.ids)
            .take_while(|(a, b)| a == b)
            .count();
    }
    k
}

/// Tokens `ex` adds to a row whose first `shared` tokens are the common prefix.
pub fn row_cost(ex: &Example, shared: usize) -> usize {
    ex.ids.len() - shared.min(ex.ids.len())
}

/// Appends `ex` to `row` as a new segment. With `shared > 0` the row starts with the
/// examples' common prefix (written once, as segment 0, and readable by every segment);
/// `ex` must start with that prefix and adds only its remaining tokens, at the positions
/// they have in `ex`. Each example so sees exactly the context it sees alone.
pub fn push_example(row: &mut PackedRow, ex: &Example, shared: usize) {
    if row.ids.is_empty() {
        row.shared = shared.min(ex.ids.len().saturating_sub(1));
        row.ids.extend_from_slice(&ex.ids[..row.shared]);
        row.positions.extend(0..row.shared as u32);
        row.segment.extend(std::iter::repeat_n(0, row.shared));
    }
    let shared = row.shared;
    debug_assert!(ex.ids.len() > shared && ex.ids[..shared] == row.ids[..shared]);
    let base = row.ids.len();
    let seg = row.segment.last().map_or(0, |s| s + 1);
    for (i, &id) in ex.ids.iter().enumerate().skip(shared) {
        row.ids.push(id);
        row.positions.push(i as u32);
        row.segment.push(seg);
    }
    // Row index of token `i` of `ex`: inside the shared prefix, or in its own segment.
    let at = |i: usize| if i < shared { i } else { base + i - shared };
    for i in ex.scored_from.max(1)..ex.ids.len() {
        row.targets.push((at(i - 1), ex.ids[i]));
    }
}

/// Rows of at most `seq_len` tokens holding `examples` in order (evaluation); `shared` is
/// their common prefix length (see [`common_prefix`]).
pub fn pack_all(examples: &[Example], seq_len: usize, shared: usize) -> Vec<PackedRow> {
    let mut rows = vec![];
    let mut row = PackedRow::default();
    for e in examples {
        if !row.ids.is_empty() && row.ids.len() + row_cost(e, shared) > seq_len {
            rows.push(std::mem::take(&mut row));
        }
        push_example(&mut row, e, shared);
    }
    if !row.ids.is_empty() {
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    #[test]
    fn reports_every_bad_jsonl_line_with_its_number() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(
            dir.path(),
            "d.jsonl",
            b"{\"prompt\": \"a\", \"completion\": \"b\"}\n{oops\n\n{\"x\": 1}\n{\"text\": \"ok\"}\n",
        );
        let (ex, problems) = parse_file(&p);
        assert_eq!(ex.len(), 2);
        let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![Some(2), Some(4)]);
        assert!(problems[0].to_string().contains("d.jsonl:2: invalid JSON"));
    }

    #[test]
    fn refuses_an_over_long_line_naming_it_and_keeps_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bytes = b"first example\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'a', 50 << 20));
        bytes.extend(b"\nthird example\n");
        let path = write(dir.path(), "long.txt", &bytes);
        let (examples, problems) = parse_file(&path);
        let lines: Vec<usize> = examples.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, vec![1, 3]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, Some(2));
        assert!(
            problems[0].message.contains("longer than"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn lists_a_bounded_number_of_problems_and_counts_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "bad.jsonl", &b"{\n".repeat(MAX_PROBLEMS + 50));
        let (examples, problems) = parse_file(&path);
        assert!(examples.is_empty());
        assert_eq!(problems.len(), MAX_PROBLEMS + 1);
        assert!(
            problems[MAX_PROBLEMS].message.contains("50 more"),
            "{problems:?}"
        );
    }

    #[test]
    fn an_empty_file_is_a_problem() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(dir.path(), "e.txt", b"\n  \n");
        let (ex, problems) = parse_file(&p);
        assert!(ex.is_empty());
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("empty"));
    }

    #[test]
    fn binary_garbage_is_reported_per_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(dir.path(), "g.txt", &[0xff, 0xfe, 0x00, b'\n', b'o', b'k']);
        let (ex, problems) = parse_file(&p);
        assert_eq!(ex.len(), 1);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(1));
    }

    #[test]
    fn packing_restarts_positions_and_scores_only_answers() {
        let e = |ids: Vec<u32>, from| Example {
            file: PathBuf::new(),
            line: 1,
            ids,
            scored_from: from,
            key: String::new(),
        };
        let rows = pack_all(
            &[e(vec![1, 2, 3], 2), e(vec![4, 5], 1), e(vec![6, 7, 8], 1)],
            5,
            0,
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].ids, vec![1, 2, 3, 4, 5]);
        assert_eq!(rows[0].positions, vec![0, 1, 2, 0, 1]);
        assert_eq!(rows[0].segment, vec![0, 0, 0, 1, 1]);
        assert_eq!(rows[0].targets, vec![(1, 3), (3, 5)]);
        assert_eq!(rows[1].targets, vec![(0, 7), (1, 8)]);
    }

    #[test]
    fn split_keeps_every_example_once_and_is_seeded() {
        let ex: Vec<Example> = (0..10)
            .map(|i| Example {
                file: PathBuf::new(),
                line: i,
                ids: vec![1, 2],
                scored_from: 1,
                key: i.to_string(),
            })
            .collect();
        let (a, b) = split(ex.clone(), 0.2, 3);
        assert_eq!((a.len(), b.len()), (8, 2));
        let (c, d) = split(ex, 0.2, 3);
        assert_eq!((a, b), (c, d));
    }
}
