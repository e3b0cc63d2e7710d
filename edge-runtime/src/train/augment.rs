//! Question/answer pairs derived from plain notes (one sentence per note): a light parse of
//! each note (its named subject, the clauses of its predicate, the answer spans in them:
//! numbers, capitalised names, colours and materials, clause objects), templates that ask
//! about the subject or about one span, and the filter every generated pair must pass
//! before it may reach a training set. Every answer restates the whole note, so a question
//! naming the subject is bound to that subject's facts, not to a neighbour's.
//!
//! Pure text in, text out; the cache of generated pairs per note hash has an injectable
//! root. Imports nothing from the rest of the crate.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest note a pair is derived from, in bytes; longer lines are trained as text only.
pub const MAX_NOTE_BYTES: usize = 400;

/// Longest generated question, in bytes.
pub const MAX_QUESTION_BYTES: usize = 300;

/// Most pairs asked for per note (`--augment`).
pub const MAX_PAIRS_PER_NOTE: usize = 16;

/// Largest cache file read, in bytes.
const MAX_CACHE_FILE_BYTES: u64 = 64 << 10;

/// Version of the templates: a cached entry of another version is derived again.
pub const METHOD: &str = "templates-v1";

/// One generated question and its answer, with the span of the note it asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QaPair {
    /// The question (the user's turn).
    pub question: String,
    /// The answer (the assistant's turn): the note restated.
    pub answer: String,
    /// The span of the note the question asks for (empty for a question about the whole
    /// subject).
    pub span: String,
}

/// Why a generated pair was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// The question is empty or only punctuation.
    EmptyQuestion,
    /// The answer is empty.
    EmptyAnswer,
    /// The question is longer than [`MAX_QUESTION_BYTES`] or the answer longer than the note
    /// allows.
    TooLong,
    /// The question or answer holds a line break or a control character.
    ControlCharacter,
    /// The span asked for does not occur in the note.
    SpanNotInNote,
    /// The answer does not hold the span asked for.
    SpanNotInAnswer,
    /// The question gives its own answer away.
    AnswerInQuestion,
    /// The answer states something the note does not.
    AnswerNotFromNote,
    /// The question does not end as a question or a request.
    NotAQuestion,
}

/// Checks a generated pair for the note it was made from: a non-empty question of bounded
/// length ending in `?` or `.`, without control characters, that does not contain its
/// span; an answer that is the note itself (or a part of it) and holds the span; and a span
/// that occurs in the note.
pub fn check(pair: &QaPair, note: &str) -> Result<(), Reject> {
    let q = pair.question.trim();
    if !q.chars().any(char::is_alphanumeric) {
        return Err(Reject::EmptyQuestion);
    }
    let a = pair.answer.trim();
    if a.is_empty() {
        return Err(Reject::EmptyAnswer);
    }
    if q.len() > MAX_QUESTION_BYTES || a.len() > note.len().max(1) {
        return Err(Reject::TooLong);
    }
    if q.chars().chain(a.chars()).any(char::is_control) {
        return Err(Reject::ControlCharacter);
    }
    if !(q.ends_with('?') || q.ends_with('.')) {
        return Err(Reject::NotAQuestion);
    }
    if !note.contains(a) {
        return Err(Reject::AnswerNotFromNote);
    }
    let span = pair.span.trim();
    if !span.is_empty() {
        if !note.contains(span) {
            return Err(Reject::SpanNotInNote);
        }
        if !a.contains(span) {
            return Err(Reject::SpanNotInAnswer);
        }
        if contains_words(q, span) {
            return Err(Reject::AnswerInQuestion);
        }
    }
    Ok(())
}

/// Whether `needle` occurs in `hay` as whole words, ignoring case.
fn contains_words(hay: &str, needle: &str) -> bool {
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let (h, n) = (words(hay), words(needle));
    !n.is_empty() && h.windows(n.len()).any(|w| w == n.as_slice())
}

/// Words that may start a predicate: common verbs of plain notes.
const VERBS: &[&str] = &[
    "is",
    "was",
    "are",
    "were",
    "has",
    "had",
    "have",
    "holds",
    "held",
    "lives",
    "lived",
    "makes",
    "made",
    "runs",
    "ran",
    "owns",
    "owned",
    "keeps",
    "kept",
    "sells",
    "sold",
    "teaches",
    "taught",
    "grows",
    "grew",
    "works",
    "worked",
    "speaks",
    "spoke",
    "carries",
    "carried",
    "weighs",
    "weighed",
    "flows",
    "flowed",
    "opens",
    "opened",
    "begins",
    "began",
    "starts",
    "started",
    "lasts",
    "lasted",
    "produces",
    "produced",
    "employs",
    "employed",
    "uses",
    "used",
    "sews",
    "sewed",
    "can",
    "will",
    "lies",
    "lay",
    "stands",
    "stood",
    "belongs",
    "costs",
    "cost",
    "contains",
    "displays",
    "lifts",
    "orbits",
    "writes",
    "wrote",
    "plays",
    "played",
    "leads",
    "led",
    "brews",
    "drives",
    "drove",
    "builds",
    "built",
    "sails",
    "sailed",
    "commands",
    "commanded",
    "invented",
    "discovered",
    "painted",
    "carved",
    "founded",
    "cast",
    "became",
    "becomes",
    "serves",
    "served",
    "guards",
    "guarded",
];

/// Words in a subject that never end it (articles, prepositions, possessives).
const NOT_VERBS: &[&str] = &[
    "the", "a", "an", "of", "its", "his", "her", "their", "this", "that", "in", "on", "at", "from",
    "for", "to", "with", "and", "or", "as", "by", "de", "van", "von", "del",
];

/// Colours and materials: answer spans a note often states as one word.
const KINDS: &[&str] = &[
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "violet",
    "white",
    "black",
    "grey",
    "gray",
    "brown",
    "pink",
    "teal",
    "golden",
    "crimson",
    "scarlet",
    "amber",
    "silver",
    "gold",
    "copper",
    "bronze",
    "brass",
    "iron",
    "steel",
    "tin",
    "pewter",
    "lead",
    "marble",
    "granite",
    "basalt",
    "slate",
    "sandstone",
    "limestone",
    "stone",
    "glass",
    "wood",
    "oak",
    "pine",
    "cedar",
    "clay",
    "wool",
    "silk",
    "cotton",
    "leather",
    "ice",
    "peat",
    "coal",
    "wind",
    "water",
    "steam",
    "oil",
];

/// Number words a note may use instead of digits.
const NUMBER_WORDS: &[&str] = &[
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "twenty", "hundred", "thousand",
];

fn bare(word: &str) -> &str {
    word.trim_matches(|c: char| !c.is_alphanumeric())
}

fn is_capitalised(word: &str) -> bool {
    bare(word).chars().next().is_some_and(char::is_uppercase)
}

fn is_number(word: &str) -> bool {
    let w = bare(word);
    (!w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == '.'))
        || NUMBER_WORDS.contains(&w.to_lowercase().as_str())
}

fn is_year(word: &str) -> bool {
    let w = bare(word);
    w.len() == 4 && w.parse::<u32>().is_ok_and(|y| (1000..=2100).contains(&y))
}

fn is_verb(word: &str) -> bool {
    let w = bare(word);
    if w.is_empty() || is_capitalised(w) || NOT_VERBS.contains(&w) {
        return false;
    }
    VERBS.contains(&w)
}

/// A note parsed into its named subject and the clauses of its predicate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The subject as the note writes it ("The Velmora Bridge").
    pub subject: String,
    /// Predicate clauses, each starting with a verb ("was built in 1874", "is painted teal").
    pub clauses: Vec<String>,
}

impl Parsed {
    /// The subject inside a sentence ("the Velmora Bridge").
    pub fn subject_inside(&self) -> String {
        match self.subject.split_once(' ') {
            Some((first, rest)) if matches!(first, "The" | "A" | "An") => {
                format!("{} {rest}", first.to_lowercase())
            }
            _ => self.subject.clone(),
        }
    }
}

/// The subject and clauses of `note`: the subject runs up to the first verb after a
/// capitalised word; the predicate is split at " and ", a clause without its own verb
/// borrowing the first clause's. `None` when no subject or predicate is found.
pub fn parse(note: &str) -> Option<Parsed> {
    let text = note.trim().trim_end_matches(['.', '!', ';']).trim();
    if text.is_empty() || text.len() > MAX_NOTE_BYTES || text.contains(['?', '\n']) {
        return None;
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut seen_name = false;
    let mut verb_at = None;
    for (i, w) in words.iter().enumerate() {
        if is_capitalised(w) {
            seen_name = true;
        } else if seen_name && i > 0 && is_verb(w) {
            verb_at = Some(i);
            break;
        }
    }
    let v = verb_at?;
    let subject = words[..v].join(" ");
    let predicate = words[v..].join(" ");
    let first_verb = words[v];
    let mut clauses = vec![];
    for part in predicate.split(" and ") {
        let part = part.trim().trim_end_matches(',').trim();
        if part.is_empty() {
            continue;
        }
        let starts_with_verb = part.split_whitespace().next().is_some_and(is_verb);
        if starts_with_verb || clauses.is_empty() {
            clauses.push(part.to_string());
        } else {
            clauses.push(format!("{first_verb} {part}"));
        }
    }
    (!clauses.is_empty()).then_some(Parsed { subject, clauses })
}

/// One answer span of a clause: the words it replaces and the question words that ask
/// for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// The span itself ("1874", "Lake Virn", "teal").
    pub text: String,
    /// The words of the clause the question replaces ("in 1874", "14 bells", "teal").
    pub replaced: String,
    /// What replaces them ("in what year", "how many bells", "what").
    pub ask: String,
}

/// The answer spans of one clause, most specific first: numbers (years, counts with their
/// unit), capitalised names, colours and materials, else the clause's last word.
pub fn spans(clause: &str) -> Vec<Span> {
    let words: Vec<&str> = clause.split_whitespace().collect();
    let mut out: Vec<Span> = vec![];
    let mut i = 1;
    while i < words.len() {
        let w = words[i];
        if is_year(w) {
            let prep = (words[i - 1] == "in").then_some(i - 1);
            out.push(Span {
                text: bare(w).to_string(),
                replaced: words[prep.unwrap_or(i)..=i].join(" "),
                ask: if prep.is_some() {
                    "in what year".into()
                } else {
                    "what year".into()
                },
            });
        } else if is_number(w) {
            match words
                .get(i + 1)
                .filter(|u| !is_capitalised(u) && !is_verb(u))
            {
                Some(unit) => {
                    out.push(Span {
                        text: bare(w).to_string(),
                        replaced: format!("{w} {unit}"),
                        ask: format!("how many {}", bare(unit)),
                    });
                    i += 1;
                }
                None => out.push(Span {
                    text: bare(w).to_string(),
                    replaced: w.to_string(),
                    ask: "how many".into(),
                }),
            }
        } else if is_capitalised(w) {
            let mut j = i;
            while j + 1 < words.len() && is_capitalised(words[j + 1]) {
                j += 1;
            }
            let name = words[i..=j].join(" ");
            let name = name.trim_end_matches(|c: char| !c.is_alphanumeric());
            out.push(Span {
                text: name.to_string(),
                replaced: name.to_string(),
                ask: "what".into(),
            });
            i = j;
        } else if KINDS.contains(&bare(w).to_lowercase().as_str()) {
            out.push(Span {
                text: bare(w).to_string(),
                replaced: bare(w).to_string(),
                ask: "what".into(),
            });
        }
        i += 1;
    }
    if out.is_empty() && words.len() >= 2 {
        let last = bare(words[words.len() - 1]);
        if last.len() > 2 {
            out.push(Span {
                text: last.to_string(),
                replaced: last.to_string(),
                ask: "what".into(),
            });
        }
    }
    out
}

/// Questions about the whole subject.
const SUBJECT_TEMPLATES: &[&str] = &[
    "What do you know about {s}?",
    "Tell me about {s}.",
    "What is known about {s}?",
    "Give me the facts about {s}.",
    "Describe {s}.",
    "What can you tell me about {s}?",
];

/// The pairs of one note in a fixed order (a question on a span of each clause, a question
/// on the subject, then the same spans asked the other way round, then the rest), each
/// passing [`check`]; at most `limit`. Empty when the note does not parse.
pub fn derive(note: &str, limit: usize) -> Vec<QaPair> {
    let note = note.trim();
    let Some(p) = parse(note) else {
        return vec![];
    };
    let inside = p.subject_inside();
    let mut chosen: Vec<(String, Span)> = vec![];
    for clause in &p.clauses {
        for s in spans(clause).into_iter().take(2) {
            if !chosen.iter().any(|(_, c)| c.text == s.text) {
                chosen.push((clause.clone(), s));
            }
        }
    }
    let direct = |(clause, s): &(String, Span)| {
        let asked = clause.replacen(&s.replaced, &s.ask, 1);
        (format!("{} {asked}?", p.subject), s.text.clone())
    };
    let fronted = |(clause, s): &(String, Span)| {
        let rest = clause.replacen(&s.replaced, "", 1);
        let rest = rest.split_whitespace().collect::<Vec<_>>().join(" ");
        let ask = if s.ask == "in what year" {
            "what year"
        } else {
            &s.ask
        };
        let tail = if s.ask == "in what year" { " in" } else { "" };
        (
            format!("Do you know {ask} {inside} {rest}{tail}?"),
            s.text.clone(),
        )
    };
    let subject = |t: &&str| (t.replace("{s}", &inside), String::new());
    let mut order: Vec<(String, String)> = vec![];
    let mut subjects = SUBJECT_TEMPLATES.iter();
    for c in &chosen {
        order.push(direct(c));
        order.extend(subjects.next().map(subject));
    }
    order.extend(chosen.iter().map(fronted));
    order.extend(subjects.map(subject));
    let mut out: Vec<QaPair> = vec![];
    for (question, span) in order {
        let pair = QaPair {
            question,
            answer: note.to_string(),
            span,
        };
        if out.len() >= limit {
            break;
        }
        if check(&pair, note).is_ok() && !out.iter().any(|o| o.question == pair.question) {
            out.push(pair);
        }
    }
    out
}

/// The pairs of one note: those trained on and the one held out to measure recall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotePairs {
    /// 1-based line of the note in its file.
    pub line: usize,
    /// The note.
    pub note: String,
    /// Pairs trained on (at most the count asked for).
    pub train: Vec<QaPair>,
    /// A further pair held out, when the note gave one more than the count.
    pub held: Option<QaPair>,
}

/// The pairs of a whole note file, and what deriving them took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotePlan {
    /// Every note, in file order.
    pub notes: Vec<NotePairs>,
    /// Notes whose pairs were derived now.
    pub derived: usize,
    /// Notes whose pairs came from the cache.
    pub cached: usize,
    /// Notes no pair could be derived from (trained as text only).
    pub unparsed: usize,
}

impl NotePlan {
    /// Pairs trained on.
    pub fn trained_pairs(&self) -> usize {
        self.notes.iter().map(|n| n.train.len()).sum()
    }

    /// Questions held out.
    pub fn held_questions(&self) -> usize {
        self.notes.iter().filter(|n| n.held.is_some()).count()
    }
}

/// Pairs for every `(line, note)`: up to `per_note` (at most [`MAX_PAIRS_PER_NOTE`]) to
/// train on and one more to hold out (a note with fewer pairs trains on all but one), from
/// `cache` when it has them, else derived (and stored; a failed store only costs a
/// re-derivation next time).
pub fn plan(notes: &[(usize, String)], per_note: usize, cache: Option<&PairCache>) -> NotePlan {
    let per_note = per_note.min(MAX_PAIRS_PER_NOTE);
    let count = per_note + 1;
    let mut out = NotePlan::default();
    for (line, note) in notes {
        let pairs = match cache.and_then(|c| c.get(note, count)) {
            Some(p) => {
                out.cached += 1;
                p
            }
            None => {
                let p = derive(note, count);
                if let Some(c) = cache
                    && let Err(e) = c.put(note, count, &p)
                {
                    log::warn!("caching the pairs of a note in {}: {e}", c.root().display());
                }
                out.derived += 1;
                p
            }
        };
        if pairs.is_empty() {
            out.unparsed += 1;
        }
        // A note with fewer pairs than asked for still keeps one back when it has two.
        let k = per_note.min(pairs.len().saturating_sub(1));
        let mut train = pairs;
        let held = (train.len() > k).then(|| train.remove(k));
        train.truncate(k);
        out.notes.push(NotePairs {
            line: *line,
            note: note.trim().to_string(),
            train,
            held,
        });
    }
    out
}

/// The cache key of a note's pairs: SHA-256 (hex) over the method, the count and the note.
pub fn note_key(note: &str, count: usize) -> String {
    let mut h = Sha256::new();
    h.update(METHOD.as_bytes());
    h.update(b"|");
    h.update((count as u64).to_le_bytes());
    h.update(note.trim().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    method: String,
    note: String,
    pairs: Vec<QaPair>,
}

/// Generated pairs by note hash, one small JSON file each under a root folder.
pub struct PairCache {
    root: PathBuf,
}

impl PairCache {
    /// A cache in `root` (created on the first store).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        PairCache { root: root.into() }
    }

    /// Where the cache lives.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(format!("{key}.json"))
    }

    /// The cached pairs of `note` for `count`, when present, readable and still valid for
    /// the note (every pair is checked again; a bad entry is a miss).
    pub fn get(&self, note: &str, count: usize) -> Option<Vec<QaPair>> {
        use std::io::Read as _;
        let f = std::fs::File::open(self.path(&note_key(note, count))).ok()?;
        let mut text = String::new();
        f.take(MAX_CACHE_FILE_BYTES)
            .read_to_string(&mut text)
            .ok()?;
        let entry: CacheEntry = serde_json::from_str(&text).ok()?;
        let valid = entry.method == METHOD
            && entry.note == note.trim()
            && entry.pairs.len() <= count
            && entry.pairs.iter().all(|p| check(p, note.trim()).is_ok());
        valid.then_some(entry.pairs)
    }

    /// Stores the pairs of `note` for `count`, atomically.
    pub fn put(&self, note: &str, count: usize, pairs: &[QaPair]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        let entry = CacheEntry {
            method: METHOD.into(),
            note: note.trim().into(),
            pairs: pairs.to_vec(),
        };
        let bytes = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        let path = self.path(&note_key(note, count));
        let tmp = self.root.join(format!(
            ".{}.tmp-{}",
            note_key(note, count),
            std::process::id()
        ));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTE: &str = "The Velmora Bridge was built in 1874 and is painted teal.";

    fn pair(q: &str, a: &str, span: &str) -> QaPair {
        QaPair {
            question: q.into(),
            answer: a.into(),
            span: span.into(),
        }
    }

    #[test]
    fn the_filter_refuses_each_kind_of_malformed_pair() {
        let long = format!("{}?", "why ".repeat(100));
        let cases: &[(QaPair, Result<(), Reject>)] = &[
            (
                pair("When was the Velmora Bridge built?", NOTE, "1874"),
                Ok(()),
            ),
            (pair("", NOTE, "1874"), Err(Reject::EmptyQuestion)),
            (pair(" ?? ", NOTE, "1874"), Err(Reject::EmptyQuestion)),
            (pair("When?", "", "1874"), Err(Reject::EmptyAnswer)),
            (pair(&long, NOTE, "1874"), Err(Reject::TooLong)),
            (
                pair("When was it\nbuilt?", NOTE, "1874"),
                Err(Reject::ControlCharacter),
            ),
            (
                pair("When was it built", NOTE, "1874"),
                Err(Reject::NotAQuestion),
            ),
            (
                pair("When was it built?", NOTE, "1875"),
                Err(Reject::SpanNotInNote),
            ),
            (
                pair("What colour is it?", "is painted teal", "1874"),
                Err(Reject::SpanNotInAnswer),
            ),
            (
                pair("Was the bridge built in 1874?", NOTE, "1874"),
                Err(Reject::AnswerInQuestion),
            ),
            (
                pair("Is the bridge TEAL?", NOTE, "teal"),
                Err(Reject::AnswerInQuestion),
            ),
            (
                pair("When was it built?", "It was built in 1874.", "1874"),
                Err(Reject::AnswerNotFromNote),
            ),
        ];
        for (p, want) in cases {
            assert_eq!(check(p, NOTE), *want, "{p:?}");
        }
    }

    #[test]
    fn a_span_inside_a_longer_word_is_not_a_leak() {
        let note = "The Orlo Bell weighs 3 tonnes and was cast by Piet Haskel.";
        let p = pair("How many tonnes does the bell weigh in 2023?", note, "3");
        assert_eq!(check(&p, note), Ok(()));
    }

    #[test]
    fn parses_the_named_subject_and_the_clauses() {
        let table = [
            (
                NOTE,
                "The Velmora Bridge",
                vec!["was built in 1874", "is painted teal"],
            ),
            (
                "Fennimore the tortoise is 93 years old and lives in Calder Bay.",
                "Fennimore the tortoise",
                vec!["is 93 years old", "lives in Calder Bay"],
            ),
            (
                "The planet Ixora has three moons and a purple sky.",
                "The planet Ixora",
                vec!["has three moons", "has a purple sky"],
            ),
            (
                "Sculptor Anwen Dray carved the statue of the Silent King from marble.",
                "Sculptor Anwen Dray",
                vec!["carved the statue of the Silent King from marble"],
            ),
        ];
        for (note, subject, clauses) in table {
            let p = parse(note).expect(note);
            assert_eq!(p.subject, subject, "{note}");
            assert_eq!(p.clauses, clauses, "{note}");
        }
    }

    #[test]
    fn what_does_not_parse_gives_no_pairs() {
        for note in ["", "   ", "hello world", "Is this a question?", "ok."] {
            assert!(derive(note, 8).is_empty(), "{note:?}");
        }
        let long = format!("The Big Thing is {}.", "very ".repeat(200));
        assert!(derive(&long, 8).is_empty());
    }

    #[test]
    fn finds_years_counts_names_and_colours() {
        let s: Vec<String> = spans("was built in 1874")
            .into_iter()
            .map(|s| s.ask)
            .collect();
        assert_eq!(s, vec!["in what year"]);
        let s = spans("has 14 bells");
        assert_eq!(
            (s[0].text.as_str(), s[0].ask.as_str()),
            ("14", "how many bells")
        );
        let s = spans("flows into Lake Virn");
        assert_eq!(s[0].text, "Lake Virn");
        let s = spans("is painted teal");
        assert_eq!(s[0].text, "teal");
    }

    #[test]
    fn derived_pairs_all_pass_the_filter_and_answer_with_the_note() {
        let notes = [
            NOTE,
            "Captain Orrin Halloway was born in Tessaly and sailed a ship called the Gray Heron.",
            "The Brannoch clock has 14 bells and was made by Edda Lorne.",
            "Professor Tamsin Vreel teaches geology at Aldermoor College.",
        ];
        for note in notes {
            let pairs = derive(note, 8);
            assert!(pairs.len() >= 5, "{note}: {pairs:?}");
            for p in &pairs {
                assert_eq!(check(p, note), Ok(()), "{p:?}");
                assert_eq!(p.answer, note);
            }
        }
        let pairs = derive(NOTE, 5);
        let questions: Vec<&str> = pairs.iter().map(|p| p.question.as_str()).collect();
        assert_eq!(
            questions,
            vec![
                "The Velmora Bridge was built in what year?",
                "What do you know about the Velmora Bridge?",
                "The Velmora Bridge is painted what?",
                "Tell me about the Velmora Bridge.",
                "Do you know what year the Velmora Bridge was built in?",
            ]
        );
    }

    #[test]
    fn a_plan_holds_out_one_more_question_per_note_and_a_rerun_derives_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = PairCache::with_root(dir.path());
        let notes = vec![
            (1, NOTE.to_string()),
            (2, "nothing to ask here".to_string()),
            (
                3,
                "The Orlo Bell weighs 3 tonnes and was cast by Piet Haskel.".to_string(),
            ),
        ];
        let first = plan(&notes, 4, Some(&cache));
        assert_eq!((first.derived, first.cached, first.unparsed), (3, 0, 1));
        assert_eq!((first.trained_pairs(), first.held_questions()), (8, 2));
        let held = first.notes[0].held.as_ref().expect("held");
        assert!(
            first.notes[0]
                .train
                .iter()
                .all(|p| p.question != held.question)
        );
        let again = plan(&notes, 4, Some(&cache));
        assert_eq!((again.derived, again.cached), (0, 3));
        assert_eq!(again.notes, first.notes);
        let many = plan(&notes[..1], 1000, None);
        let n = &many.notes[0];
        assert!(n.held.is_some() && !n.train.is_empty(), "{n:?}");
    }

    #[test]
    fn the_cache_returns_what_was_stored_and_refuses_a_tampered_entry() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = PairCache::with_root(dir.path().join("augment"));
        assert!(cache.get(NOTE, 4).is_none());
        let pairs = derive(NOTE, 4);
        cache.put(NOTE, 4, &pairs).expect("put");
        assert_eq!(cache.get(NOTE, 4), Some(pairs.clone()));
        assert!(
            cache.get(NOTE, 5).is_none(),
            "another count is another entry"
        );
        let path = cache.path(&note_key(NOTE, 4));
        let bad = std::fs::read_to_string(&path)
            .expect("read")
            .replace("1874", "1875");
        std::fs::write(&path, bad).expect("write");
        assert!(cache.get(NOTE, 4).is_none(), "a tampered entry is a miss");
        std::fs::write(&path, b"\xff\x00garbage").expect("write");
        assert!(cache.get(NOTE, 4).is_none());
    }
}
