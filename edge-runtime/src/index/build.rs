//! Building and refreshing an index: walks the paths given, skips with a reason what is not
//! a text document, and for each file whose content hash changed embeds only the chunks whose
//! own hash the index does not already hold, then commits the document in one transaction.
//! The governor's pace comes in as a gate taken before every batch of chunks; the energy
//! meter as a reading of cumulative joules.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::chunk::{MAX_CHUNK_BYTES, chunks};
use super::extract::{Kind, extract};
use super::search::vector_q8;
use super::store::{NewDoc, Store};
use super::{Encoder, IndexError};

/// Largest file indexed by default (bytes).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 32 << 20;
/// Chunks embedded per batch (and per permit).
pub const BATCH: usize = 16;

/// How `add` behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct AddOptions {
    /// Files larger than this are skipped (bytes).
    pub max_file_bytes: u64,
    /// Count an unchanged document's chunks as embedding avoided (an explicit `add`; a
    /// watcher's polls do not, or every poll would count them again).
    pub count_unchanged: bool,
}

impl Default for AddOptions {
    fn default() -> Self {
        AddOptions {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            count_unchanged: true,
        }
    }
}

/// Where indexing has got to, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress<'a> {
    /// The files to look at are known.
    Files(usize),
    /// One more file looked at.
    Done(&'a Path),
}

/// What an `add` did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AddReport {
    /// Files looked at.
    pub files: usize,
    /// Documents added or changed.
    pub indexed: usize,
    /// Documents found unchanged.
    pub unchanged: usize,
    /// Documents removed because their file is gone (a watcher's poll).
    pub removed: usize,
    /// Files skipped, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Chunks embedded.
    pub embedded_chunks: u64,
    /// Chunks whose vector was already in the index.
    pub reused_chunks: u64,
    /// Joules spent (meter).
    pub spent_j: f64,
    /// Joules not spent on chunks reused or documents unchanged, at the index's mean
    /// joules per embedded chunk.
    pub avoided_j: f64,
    /// The gate stopped the run before every file was done.
    pub stopped: bool,
}

/// The files under `paths` (folders walked, hidden entries and symlinked folders left
/// out), sorted, and the paths that could not be read.
pub fn files_under(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(String, String)>) {
    let (mut files, mut bad) = (Vec::new(), Vec::new());
    for p in paths {
        match std::fs::canonicalize(p) {
            Ok(c) => walk(&c, &mut files, &mut bad),
            Err(e) => bad.push((p.display().to_string(), format!("unreadable: {e}"))),
        }
    }
    files.sort();
    files.dedup();
    (files, bad)
}

fn walk(p: &Path, files: &mut Vec<PathBuf>, bad: &mut Vec<(String, String)>) {
    let meta = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) => return bad.push((p.display().to_string(), format!("unreadable: {e}"))),
    };
    if !meta.is_dir() {
        files.push(p.to_path_buf());
        return;
    }
    let entries = match std::fs::read_dir(p) {
        Ok(e) => e,
        Err(e) => return bad.push((p.display().to_string(), format!("unreadable: {e}"))),
    };
    let mut children: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    children.sort();
    for c in children {
        match std::fs::symlink_metadata(&c) {
            Ok(m) if m.file_type().is_symlink() && c.is_dir() => {}
            _ => walk(&c, files, bad),
        }
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

/// Indexes `paths` into `store` with `encoder`. `gate` runs each batch of chunks (under a
/// permit of the governor) and returns `false`, without running it, to stop the run (what is
/// committed stays); `energy_j` reads the meter's cumulative joules.
pub fn add(
    store: &mut Store,
    encoder: &dyn Encoder,
    paths: &[PathBuf],
    opts: &AddOptions,
    gate: &mut dyn FnMut(&mut dyn FnMut()) -> bool,
    energy_j: &dyn Fn() -> f64,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<AddReport, IndexError> {
    let (files, bad) = files_under(paths);
    let mut report = AddReport {
        skipped: bad,
        ..AddReport::default()
    };
    progress(Progress::Files(files.len()));
    for file in &files {
        if !index_file(store, encoder, file, opts, gate, energy_j, &mut report)? {
            report.stopped = true;
            break;
        }
        report.files += 1;
        progress(Progress::Done(file));
    }
    Ok(report)
}

/// One pass of a watcher over `roots`: what changed is indexed, what is gone is removed.
pub fn watch_once(
    store: &mut Store,
    encoder: &dyn Encoder,
    roots: &[PathBuf],
    opts: &AddOptions,
    gate: &mut dyn FnMut(&mut dyn FnMut()) -> bool,
    energy_j: &dyn Fn() -> f64,
) -> Result<AddReport, IndexError> {
    let opts = AddOptions {
        count_unchanged: false,
        ..opts.clone()
    };
    let mut report = add(store, encoder, roots, &opts, gate, energy_j, &mut |_| {})?;
    let roots: Vec<String> = roots
        .iter()
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .map(|r| r.to_string_lossy().into_owned())
        .collect();
    for path in store.paths()? {
        let under = roots
            .iter()
            .any(|r| path == *r || path.starts_with(&format!("{}/", r.trim_end_matches('/'))));
        if under && !Path::new(&path).exists() {
            report.removed += store.remove(&path)?;
        }
    }
    Ok(report)
}

/// Indexes one file; `false` when the gate stopped it before it was committed.
fn index_file(
    store: &mut Store,
    encoder: &dyn Encoder,
    file: &Path,
    opts: &AddOptions,
    gate: &mut dyn FnMut(&mut dyn FnMut()) -> bool,
    energy_j: &dyn Fn() -> f64,
    report: &mut AddReport,
) -> Result<bool, IndexError> {
    let Some(path) = file.to_str() else {
        report.skipped.push((
            file.display().to_string(),
            "the path is not UTF-8".to_string(),
        ));
        return Ok(true);
    };
    let j_per_chunk = store.j_per_chunk()?;
    let meta = std::fs::metadata(file);
    let stored = store.document(path)?;
    if let (Ok(m), Some(s)) = (&meta, &stored)
        && m.len() == s.bytes
        && mtime_ns(m) == s.mtime_ns
    {
        note_unchanged(store, s.chunks, j_per_chunk, opts, report)?;
        return Ok(true);
    }
    // A watcher does not read again a file skipped since it last changed.
    if let (Ok(m), Some(at)) = (&meta, store.skipped_at(path)?)
        && !opts.count_unchanged
        && stored.is_none()
        && mtime_ns(m) / 1_000_000_000 < at
    {
        report.unchanged += 1;
        return Ok(true);
    }
    let doc = match extract(file, opts.max_file_bytes) {
        Ok(d) => d,
        Err(skip) => {
            let reason = skip.to_string();
            store.skip(path, &reason)?;
            report.skipped.push((path.to_string(), reason));
            return Ok(true);
        }
    };
    if let Some(s) = &stored
        && s.sha256 == doc.sha256
    {
        note_unchanged(store, s.chunks, j_per_chunk, opts, report)?;
        // Same content, new time stamp: record it so the next look is a stat only.
        store.touch(path, meta.as_ref().map_or(0, mtime_ns))?;
        return Ok(true);
    }
    let start_j = energy_j();
    let pieces = chunks(&doc.text, doc.kind == Kind::Markdown, MAX_CHUNK_BYTES);
    let mut out = Vec::with_capacity(pieces.len());
    let mut todo: Vec<usize> = Vec::new();
    let mut in_doc: HashMap<[u8; 32], usize> = HashMap::new();
    for (i, c) in pieces.into_iter().enumerate() {
        let h: [u8; 32] = Sha256::digest(c.text.as_bytes()).into();
        let known = match in_doc.get(&h) {
            Some(_) => None,
            None => store.vector_of(&h)?,
        };
        let reused = known.is_some() || in_doc.contains_key(&h);
        if !reused {
            todo.push(i);
        }
        in_doc.entry(h).or_insert(i);
        out.push((c, h, known.unwrap_or_default()));
    }
    let reused = (out.len() - todo.len()) as u64;
    for batch in todo.chunks(BATCH) {
        let texts: Vec<&str> = batch.iter().map(|&i| out[i].0.text.as_str()).collect();
        let mut done = None;
        if !gate(&mut || done = Some(encoder.embed_batch(&texts))) {
            return Ok(false);
        }
        let vectors = done.ok_or_else(|| IndexError::Embed("the gate ran no batch".into()))??;
        if vectors.len() != batch.len() {
            return Err(IndexError::Embed(format!(
                "{} vectors for {} texts",
                vectors.len(),
                batch.len()
            )));
        }
        for (&i, v) in batch.iter().zip(vectors) {
            out[i].2 = vector_q8(&v)?;
        }
    }
    // Repeated chunks of this document take the vector of their first occurrence.
    for i in 0..out.len() {
        if out[i].2.is_empty()
            && let Some(&first) = in_doc.get(&out[i].1)
        {
            out[i].2 = out[first].2.clone();
        }
    }
    let embedded = todo.len() as u64;
    let spent = (energy_j() - start_j).max(0.0);
    let avoided = reused as f64 * j_per_chunk;
    let new = NewDoc {
        path,
        sha256: doc.sha256,
        bytes: doc.bytes,
        mtime_ns: meta.as_ref().map_or(0, mtime_ns),
        kind: doc.kind.name(),
        chunks: out,
    };
    store.replace(&new, spent, embedded, avoided)?;
    report.indexed += 1;
    report.embedded_chunks += embedded;
    report.reused_chunks += reused;
    report.spent_j += spent;
    report.avoided_j += avoided;
    Ok(true)
}

fn note_unchanged(
    store: &mut Store,
    chunks: u64,
    j_per_chunk: f64,
    opts: &AddOptions,
    report: &mut AddReport,
) -> Result<(), IndexError> {
    report.unchanged += 1;
    if opts.count_unchanged {
        let avoided = chunks as f64 * j_per_chunk;
        report.reused_chunks += chunks;
        report.avoided_j += avoided;
        store.note_unchanged(avoided)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::index::store::EncoderId;
    use crate::index::{Index, Mode};
    use std::cell::Cell;

    /// A bag-of-words encoder: each word adds one to a hashed coordinate; counts its calls.
    pub(crate) struct Words {
        pub calls: Cell<usize>,
        pub texts: Cell<usize>,
    }

    impl Encoder for Words {
        fn id(&self) -> EncoderId {
            EncoderId {
                name: "words".into(),
                dim: 64,
            }
        }
        fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, IndexError> {
            self.calls.set(self.calls.get() + 1);
            self.texts.set(self.texts.get() + texts.len());
            Ok(texts.iter().map(|t| words_vector(t)).collect())
        }
    }

    pub(crate) fn words_vector(t: &str) -> Vec<f32> {
        let mut v = vec![0f32; 64];
        for w in t
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let h = w
                .to_lowercase()
                .bytes()
                .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
            v[(h % 64) as usize] += 1.0;
        }
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    fn words() -> Words {
        Words {
            calls: Cell::new(0),
            texts: Cell::new(0),
        }
    }

    fn run(store: &mut Store, enc: &Words, paths: &[PathBuf]) -> AddReport {
        let meter = Cell::new(0.0);
        add(
            store,
            enc,
            paths,
            &AddOptions::default(),
            &mut |work| {
                work();
                true
            },
            &|| {
                meter.set(meter.get() + 1.0);
                meter.get()
            },
            &mut |_| {},
        )
        .expect("add")
    }

    #[test]
    fn reindexing_embeds_only_the_chunks_that_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let docs = dir.path().join("docs");
        std::fs::create_dir(&docs).expect("mkdir");
        let paras: Vec<String> = (0..6)
            .map(|i| format!("Paragraph {i} talks about topic{i} at length. ").repeat(12))
            .collect();
        std::fs::write(docs.join("a.md"), paras.join("\n\n")).expect("write");
        std::fs::write(docs.join("b.txt"), "The pump runs at 40 litres per minute.").expect("w");
        std::fs::write(docs.join("c.bin"), b"\0\x01binary").expect("w");
        std::fs::write(docs.join("d.txt"), b"bad \xff utf8").expect("w");
        let enc = words();
        let mut store = Store::open(&dir.path().join("i.sqlite"), &enc.id()).expect("open");
        let r = run(&mut store, &enc, std::slice::from_ref(&docs));
        assert_eq!((r.files, r.indexed), (4, 2), "{r:?}");
        assert_eq!(r.skipped.len(), 2, "{r:?}");
        assert!(
            r.skipped
                .iter()
                .any(|(p, why)| p.ends_with("c.bin") && why.contains("not a text"))
        );
        assert!(
            r.skipped
                .iter()
                .any(|(p, why)| p.ends_with("d.txt") && why.contains("UTF-8"))
        );
        let first = r.embedded_chunks;
        assert!(first >= 4, "{r:?}");
        assert_eq!(enc.texts.get() as u64, first);

        // Nothing changed: nothing embedded, every chunk counted as avoided.
        let r = run(&mut store, &enc, std::slice::from_ref(&docs));
        assert_eq!(
            (r.indexed, r.unchanged, r.embedded_chunks),
            (0, 2, 0),
            "{r:?}"
        );
        assert_eq!(r.reused_chunks, first);
        assert!(r.avoided_j > 0.0);

        // One paragraph changed: one chunk embedded again.
        let mut changed = paras.clone();
        changed[5] = "A new closing paragraph about valves.".into();
        std::fs::write(docs.join("a.md"), changed.join("\n\n")).expect("write");
        let r = run(&mut store, &enc, std::slice::from_ref(&docs));
        assert_eq!(r.indexed, 1, "{r:?}");
        assert_eq!(r.embedded_chunks, 1, "{r:?}");
        assert!(r.reused_chunks >= 2, "{r:?}");

        let index = Index::from_store(store).expect("index");
        let q = "How fast does the pump run?";
        let hits = index
            .search(q, Some(&words_vector(q)), Mode::Hybrid, 3)
            .expect("search");
        assert!(hits[0].path.ends_with("b.txt"), "{hits:?}");
        assert_eq!(hits[0].citation(), format!("{}:1", hits[0].path));
        let kw = index.search("valves", None, Mode::Keyword, 3).expect("kw");
        assert!(kw[0].text.contains("valves"));
        assert!(index.search(q, None, Mode::Dense, 3).is_err());
    }

    #[test]
    fn a_closed_gate_stops_before_committing_and_the_next_run_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..3 {
            std::fs::write(
                dir.path().join(format!("{i}.txt")),
                format!("file {i} text"),
            )
            .expect("w");
        }
        let enc = words();
        let mut store = Store::open(&dir.path().join("i.sqlite"), &enc.id()).expect("open");
        let mut permits = 2;
        let r = add(
            &mut store,
            &enc,
            &[dir.path().to_path_buf()],
            &AddOptions::default(),
            &mut |work| {
                permits -= 1;
                if permits >= 0 {
                    work();
                }
                permits >= 0
            },
            &|| 0.0,
            &mut |_| {},
        )
        .expect("add");
        assert!(r.stopped);
        assert_eq!(r.indexed, 2);
        assert_eq!(store.status().expect("status").documents, 2);
        let r = run(&mut store, &enc, &[dir.path().to_path_buf()]);
        assert_eq!((r.indexed, r.unchanged), (1, 2), "{r:?}");
    }

    #[test]
    fn a_watch_pass_removes_what_is_gone_and_picks_up_what_is_new() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("notes");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::write(root.join("a.txt"), "alpha").expect("w");
        let enc = words();
        let mut store = Store::open(&dir.path().join("i.sqlite"), &enc.id()).expect("open");
        let pass = |store: &mut Store| {
            watch_once(
                store,
                &enc,
                std::slice::from_ref(&root),
                &AddOptions::default(),
                &mut |work| {
                    work();
                    true
                },
                &|| 0.0,
            )
            .expect("watch")
        };
        assert_eq!(pass(&mut store).indexed, 1);
        let r = pass(&mut store);
        assert_eq!(
            (r.indexed, r.unchanged, r.reused_chunks),
            (0, 1, 0),
            "{r:?}"
        );
        std::fs::remove_file(root.join("a.txt")).expect("rm");
        std::fs::write(root.join("b.txt"), "beta").expect("w");
        let r = pass(&mut store);
        assert_eq!((r.indexed, r.removed), (1, 1), "{r:?}");
        assert!(store.paths().expect("paths")[0].ends_with("b.txt"));
    }
}
