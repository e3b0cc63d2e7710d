//! The index file: one SQLite database (WAL journal) holding documents with their content
//! hashes, chunks with their source lines, each chunk's vector in Q8_0 blocks, and an FTS5
//! table over the chunk texts kept in step by triggers. A document is replaced in one
//! transaction, so a process killed at any point leaves every committed document whole and
//! the next run goes on from there. Any SQLite tool reads the file.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::IndexError;
use super::chunk::Chunk;

/// Version of the tables below; an index of another version is refused, not migrated.
pub const SCHEMA_VERSION: u32 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents(
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    sha256 BLOB NOT NULL,
    bytes INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    indexed_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks(
    id INTEGER PRIMARY KEY,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    line_start INTEGER NOT NULL,
    line_end INTEGER NOT NULL,
    sha256 BLOB NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE INDEX IF NOT EXISTS chunks_sha ON chunks(sha256);
CREATE TABLE IF NOT EXISTS vectors(
    chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
    q8 BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS skipped(path TEXT PRIMARY KEY, reason TEXT NOT NULL, at INTEGER NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, content='chunks', content_rowid='id', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
";

/// The encoder an index was built with; vectors of another encoder do not compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderId {
    /// Encoder name (folder name).
    pub name: String,
    /// Vector width.
    pub dim: usize,
}

/// A document as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDoc {
    /// Row id.
    pub id: i64,
    /// sha256 of the file's bytes when it was indexed.
    pub sha256: [u8; 32],
    /// File size then (bytes).
    pub bytes: u64,
    /// Modification time then (ns since the epoch).
    pub mtime_ns: i64,
    /// Its chunks.
    pub chunks: u64,
}

/// A new version of a document, ready to commit.
#[derive(Debug, Clone)]
pub struct NewDoc<'a> {
    /// Absolute path.
    pub path: &'a str,
    /// sha256 of the file's bytes.
    pub sha256: [u8; 32],
    /// File size (bytes).
    pub bytes: u64,
    /// Modification time (ns since the epoch).
    pub mtime_ns: i64,
    /// Kind name.
    pub kind: &'static str,
    /// Chunks, each with its text hash and its vector in Q8_0 bytes.
    pub chunks: Vec<(Chunk, [u8; 32], Vec<u8>)>,
}

/// A chunk read back for an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRow {
    /// Chunk row id.
    pub id: i64,
    /// Source file.
    pub path: String,
    /// First line (1-based).
    pub line_start: u32,
    /// Last line (inclusive).
    pub line_end: u32,
    /// The text.
    pub text: String,
}

/// Counts and sizes for `thermo index status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Status {
    /// The index file.
    pub path: PathBuf,
    /// Encoder name.
    pub encoder: String,
    /// Vector width.
    pub dim: usize,
    /// Documents indexed.
    pub documents: u64,
    /// Chunks indexed.
    pub chunks: u64,
    /// Files skipped, with a reason each (`skipped` table).
    pub skipped: u64,
    /// Bytes of the indexed files.
    pub source_bytes: u64,
    /// Bytes on disk: the database and its WAL.
    pub disk_bytes: u64,
    /// Bytes of the vectors table's pages.
    pub vector_table_bytes: u64,
    /// Bytes of the vectors themselves (chunks × bytes per vector).
    pub raw_vector_bytes: u64,
    /// Joules spent indexing, over the index's life.
    pub indexing_j: f64,
    /// Chunks embedded, over the index's life.
    pub embedded_chunks: u64,
    /// Joules that reusing unchanged chunks avoided, over the index's life (estimated at the
    /// index's mean joules per embedded chunk).
    pub avoided_j: f64,
}

/// An open index file.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    encoder: EncoderId,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("encoder", &self.encoder)
            .finish_non_exhaustive()
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn hash32(v: Vec<u8>) -> Result<[u8; 32], IndexError> {
    v.try_into()
        .map_err(|_| IndexError::Corrupt("a sha256 column is not 32 bytes".into()))
}

impl Store {
    /// Opens (creating if needed) the index at `path` for `encoder`; an index built with
    /// another encoder, or of another schema version, is refused.
    pub fn open(path: &Path, encoder: &EncoderId) -> Result<Store, IndexError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| IndexError::Io(dir.to_path_buf(), e))?;
        }
        let conn = Connection::open(path)?;
        Self::setup(&conn)?;
        conn.execute_batch(SCHEMA)?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
            encoder: encoder.clone(),
        };
        match store.read_encoder()? {
            None => {
                store.set_meta("schema", &SCHEMA_VERSION.to_string())?;
                store.set_meta("encoder", &encoder.name)?;
                store.set_meta("dim", &encoder.dim.to_string())?;
            }
            Some(found) if &found != encoder => {
                return Err(IndexError::OtherEncoder {
                    path: path.to_path_buf(),
                    found: found.name,
                    wanted: encoder.name.clone(),
                });
            }
            Some(_) => {}
        }
        Ok(store)
    }

    /// Opens an existing index with the encoder it was built with.
    pub fn open_existing(path: &Path) -> Result<Store, IndexError> {
        if !path.is_file() {
            return Err(IndexError::Missing(path.to_path_buf()));
        }
        let conn = Connection::open(path)?;
        Self::setup(&conn)?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            encoder: EncoderId {
                name: String::new(),
                dim: 0,
            },
        };
        store.encoder = store
            .read_encoder()?
            .ok_or_else(|| IndexError::Corrupt(format!("{} has no encoder", path.display())))?;
        Ok(store)
    }

    fn setup(conn: &Connection) -> Result<(), IndexError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    }

    fn read_encoder(&self) -> Result<Option<EncoderId>, IndexError> {
        let has_meta: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'meta'",
            [],
            |r| r.get(0),
        )?;
        if !has_meta {
            return Err(IndexError::Corrupt(format!(
                "{} is not a thermo index",
                self.path.display()
            )));
        }
        let Some(schema) = self.meta("schema")? else {
            return Ok(None);
        };
        if schema != SCHEMA_VERSION.to_string() {
            return Err(IndexError::Corrupt(format!(
                "{} has schema {schema}, this thermo reads {SCHEMA_VERSION}: index it anew",
                self.path.display()
            )));
        }
        let name = self.meta("encoder")?.unwrap_or_default();
        let dim = self
            .meta("dim")?
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| IndexError::Corrupt("meta.dim is not a number".into()))?;
        Ok(Some(EncoderId { name, dim }))
    }

    /// The encoder the index was built with.
    pub fn encoder(&self) -> &EncoderId {
        &self.encoder
    }

    /// The index file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn meta(&self, key: &str) -> Result<Option<String>, IndexError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    fn meta_f64(&self, key: &str) -> Result<f64, IndexError> {
        Ok(self.meta(key)?.and_then(|v| v.parse().ok()).unwrap_or(0.0))
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), IndexError> {
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// The stored version of the document at `path`.
    pub fn document(&self, path: &str) -> Result<Option<StoredDoc>, IndexError> {
        type Row = (i64, Vec<u8>, i64, i64, i64);
        let row: Option<Row> = self
            .conn
            .query_row(
                "SELECT id, sha256, bytes, mtime_ns,
                        (SELECT count(*) FROM chunks WHERE doc_id = documents.id)
                 FROM documents WHERE path = ?1",
                [path],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        row.map(|(id, h, bytes, mtime_ns, chunks)| {
            Ok(StoredDoc {
                id,
                sha256: hash32(h)?,
                bytes: bytes as u64,
                mtime_ns,
                chunks: chunks as u64,
            })
        })
        .transpose()
    }

    /// A stored vector of a chunk whose text hashes to `sha256`, from any document.
    pub fn vector_of(&self, sha256: &[u8; 32]) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self
            .conn
            .query_row(
                "SELECT v.q8 FROM chunks c JOIN vectors v ON v.chunk_id = c.id
                 WHERE c.sha256 = ?1 LIMIT 1",
                [&sha256[..]],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Replaces the document at `doc.path` (its old chunks and vectors go) and adds the
    /// joules spent on it to the index's totals, in one transaction.
    pub fn replace(
        &mut self,
        doc: &NewDoc<'_>,
        spent_j: f64,
        embedded: u64,
        avoided_j: f64,
    ) -> Result<(), IndexError> {
        let tx = self.conn.transaction()?;
        insert_doc(&tx, doc)?;
        add_meta(&tx, "indexing_j", spent_j)?;
        add_meta(&tx, "embedded_chunks", embedded as f64)?;
        add_meta(&tx, "avoided_j", avoided_j)?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces the documents of `docs` in one transaction, without touching the joule
    /// totals: a bulk load (a benchmark's synthetic index, an import), where one commit for
    /// all is what makes it fast.
    pub fn replace_all(&mut self, docs: &[NewDoc<'_>]) -> Result<(), IndexError> {
        let tx = self.conn.transaction()?;
        for doc in docs {
            insert_doc(&tx, doc)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records that `path` was looked at and is unchanged: only the avoided joules count.
    pub fn note_unchanged(&mut self, avoided_j: f64) -> Result<(), IndexError> {
        let tx = self.conn.transaction()?;
        add_meta(&tx, "avoided_j", avoided_j)?;
        tx.commit()?;
        Ok(())
    }

    /// Records that the file at `path` has a new modification time but the same content.
    pub fn touch(&mut self, path: &str, mtime_ns: i64) -> Result<(), IndexError> {
        self.conn.execute(
            "UPDATE documents SET mtime_ns = ?2 WHERE path = ?1",
            params![path, mtime_ns],
        )?;
        Ok(())
    }

    /// Records why `path` is not indexed (and drops what was indexed of it).
    pub fn skip(&mut self, path: &str, reason: &str) -> Result<(), IndexError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM documents WHERE path = ?1", [path])?;
        tx.execute(
            "INSERT INTO skipped(path, reason, at) VALUES (?1, ?2, ?3)
             ON CONFLICT(path) DO UPDATE SET reason = excluded.reason, at = excluded.at",
            params![path, reason, now_s()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// When `path` was last recorded as skipped (seconds since the epoch).
    pub fn skipped_at(&self, path: &str) -> Result<Option<i64>, IndexError> {
        Ok(self
            .conn
            .query_row("SELECT at FROM skipped WHERE path = ?1", [path], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Removes `path` and every document under it (a folder); returns how many documents.
    pub fn remove(&mut self, path: &str) -> Result<usize, IndexError> {
        let tx = self.conn.transaction()?;
        let path = match path.trim_end_matches('/') {
            "" => "/",
            p => p,
        };
        let under = format!("{}/", path.trim_end_matches('/'));
        let n = tx.execute(
            "DELETE FROM documents WHERE path = ?1 OR substr(path, 1, length(?2)) = ?2",
            params![path, under],
        )?;
        tx.execute(
            "DELETE FROM skipped WHERE path = ?1 OR substr(path, 1, length(?2)) = ?2",
            params![path, under],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Every indexed path.
    pub fn paths(&self) -> Result<Vec<String>, IndexError> {
        let mut q = self
            .conn
            .prepare("SELECT path FROM documents ORDER BY path")?;
        let rows = q.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The skipped files and their reasons.
    pub fn skipped(&self) -> Result<Vec<(String, String)>, IndexError> {
        let mut q = self
            .conn
            .prepare("SELECT path, reason FROM skipped ORDER BY path")?;
        let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every chunk's id and vector bytes, in id order.
    pub fn vectors(&self) -> Result<(Vec<i64>, Vec<u8>), IndexError> {
        let mut q = self
            .conn
            .prepare("SELECT chunk_id, q8 FROM vectors ORDER BY chunk_id")?;
        let mut rows = q.query([])?;
        let (mut ids, mut bytes) = (Vec::new(), Vec::new());
        while let Some(r) = rows.next()? {
            ids.push(r.get(0)?);
            let v = r
                .get_ref(1)?
                .as_blob()
                .map_err(|e| IndexError::Corrupt(format!("a vector: {e}")))?;
            bytes.extend_from_slice(v);
        }
        Ok((ids, bytes))
    }

    /// Chunks matching `query` (an FTS5 expression), best first by BM25, at most `k`.
    pub fn keyword(&self, fts_query: &str, k: usize) -> Result<Vec<(i64, f64)>, IndexError> {
        if fts_query.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = self.conn.prepare(
            "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ?1
             ORDER BY bm25(chunks_fts) LIMIT ?2",
        )?;
        let rows = q.query_map(params![fts_query, k as i64], |r| {
            Ok((r.get::<_, i64>(0)?, -r.get::<_, f64>(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// For each of `words`, the number of chunks holding it, the word tokenized as the
    /// keyword index tokenizes text (so `running` counts the chunks holding `run`). The counts
    /// come from FTS5's vocabulary, through temporary tables of this connection.
    pub fn term_docs(&self, words: &[String]) -> Result<Vec<u64>, IndexError> {
        if words.is_empty() {
            return Ok(Vec::new());
        }
        self.conn.execute_batch(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_words
                 USING fts5(word, tokenize='porter unicode61');
             CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_terms
                 USING fts5vocab(temp, query_words, instance);
             CREATE VIRTUAL TABLE IF NOT EXISTS temp.index_terms
                 USING fts5vocab(main, chunks_fts, row);
             DELETE FROM temp.query_words;",
        )?;
        let mut insert = self
            .conn
            .prepare("INSERT INTO temp.query_words(rowid, word) VALUES (?1, ?2)")?;
        for (i, w) in words.iter().enumerate() {
            insert.execute(params![i as i64, w])?;
        }
        // A word the tokenizer splits reads the postings of each of its terms.
        let mut q = self.conn.prepare(
            "SELECT q.doc, sum(coalesce((SELECT v.doc FROM temp.index_terms v
                                         WHERE v.term = q.term), 0))
             FROM temp.query_terms q GROUP BY q.doc",
        )?;
        let mut docs = vec![0u64; words.len()];
        let rows = q.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (i, n) = row?;
            if let Some(d) = usize::try_from(i).ok().and_then(|i| docs.get_mut(i)) {
                *d = n.max(0) as u64;
            }
        }
        Ok(docs)
    }

    /// The chunk with row id `id`.
    pub fn chunk(&self, id: i64) -> Result<ChunkRow, IndexError> {
        Ok(self.conn.query_row(
            "SELECT c.id, d.path, c.line_start, c.line_end, c.text
             FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.id = ?1",
            [id],
            |r| {
                Ok(ChunkRow {
                    id: r.get(0)?,
                    path: r.get(1)?,
                    line_start: r.get(2)?,
                    line_end: r.get(3)?,
                    text: r.get(4)?,
                })
            },
        )?)
    }

    /// Joules the index spent per embedded chunk so far (0 before the first).
    pub fn j_per_chunk(&self) -> Result<f64, IndexError> {
        let n = self.meta_f64("embedded_chunks")?;
        Ok(if n > 0.0 {
            self.meta_f64("indexing_j")? / n
        } else {
            0.0
        })
    }

    /// Counts and sizes.
    pub fn status(&self) -> Result<Status, IndexError> {
        let count = |sql: &str| -> Result<u64, IndexError> {
            Ok(self.conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
        };
        let chunks = count("SELECT count(*) FROM chunks")?;
        let vector_table_bytes = count(
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = 'vectors' AND aggregate = 0",
        )
        .or_else(|_| count("SELECT coalesce(sum(length(q8)), 0) FROM vectors"))?;
        let raw_vector_bytes = count("SELECT coalesce(sum(length(q8)), 0) FROM vectors")?;
        let file_len = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        Ok(Status {
            path: self.path.clone(),
            encoder: self.encoder.name.clone(),
            dim: self.encoder.dim,
            documents: count("SELECT count(*) FROM documents")?,
            chunks,
            skipped: count("SELECT count(*) FROM skipped")?,
            source_bytes: count("SELECT coalesce(sum(bytes), 0) FROM documents")?,
            disk_bytes: file_len(self.path.clone()) + file_len(PathBuf::from(wal)),
            vector_table_bytes,
            raw_vector_bytes,
            indexing_j: self.meta_f64("indexing_j")?,
            embedded_chunks: self.meta_f64("embedded_chunks")? as u64,
            avoided_j: self.meta_f64("avoided_j")?,
        })
    }

    /// SQLite's `data_version`: it changes when another connection commits to the file.
    pub fn data_version(&self) -> Result<i64, IndexError> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// `PRAGMA integrity_check` says `ok`.
    pub fn integrity_ok(&self) -> Result<bool, IndexError> {
        let s: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        Ok(s == "ok")
    }
}

/// Puts `doc` in place of any document at its path (and of any skip record), inside `tx`.
fn insert_doc(tx: &rusqlite::Transaction<'_>, doc: &NewDoc<'_>) -> Result<(), IndexError> {
    tx.execute("DELETE FROM documents WHERE path = ?1", [doc.path])?;
    tx.execute("DELETE FROM skipped WHERE path = ?1", [doc.path])?;
    tx.execute(
        "INSERT INTO documents(path, sha256, bytes, mtime_ns, kind, indexed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            doc.path,
            &doc.sha256[..],
            doc.bytes as i64,
            doc.mtime_ns,
            doc.kind,
            now_s()
        ],
    )?;
    let doc_id = tx.last_insert_rowid();
    let mut chunk = tx.prepare(
        "INSERT INTO chunks(doc_id, ordinal, line_start, line_end, sha256, text)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut vector = tx.prepare("INSERT INTO vectors(chunk_id, q8) VALUES (?1, ?2)")?;
    for (i, (c, h, q8)) in doc.chunks.iter().enumerate() {
        chunk.execute(params![
            doc_id,
            i as i64,
            c.line_start,
            c.line_end,
            &h[..],
            c.text
        ])?;
        vector.execute(params![tx.last_insert_rowid(), q8])?;
    }
    Ok(())
}

fn add_meta(tx: &rusqlite::Transaction<'_>, key: &str, add: f64) -> Result<(), IndexError> {
    if add == 0.0 || !add.is_finite() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS REAL) + ?2 AS TEXT)",
        params![key, add],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc() -> EncoderId {
        EncoderId {
            name: "test".into(),
            dim: 32,
        }
    }

    fn doc<'a>(path: &'a str, texts: &[&str]) -> NewDoc<'a> {
        NewDoc {
            path,
            sha256: [7; 32],
            bytes: 10,
            mtime_ns: 1,
            kind: "text",
            chunks: texts
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    (
                        Chunk {
                            line_start: i as u32 + 1,
                            line_end: i as u32 + 1,
                            text: (*t).into(),
                        },
                        [i as u8; 32],
                        vec![i as u8; 34],
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn a_replaced_document_leaves_no_old_chunks_vectors_or_keywords() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("i.sqlite");
        let mut s = Store::open(&p, &enc()).expect("open");
        s.replace(&doc("/a.txt", &["apples grow", "pears fall"]), 2.0, 2, 0.0)
            .expect("add");
        s.replace(&doc("/b.txt", &["plums"]), 1.0, 1, 0.0)
            .expect("add");
        assert_eq!(s.keyword("apples", 5).expect("kw").len(), 1);
        s.replace(&doc("/a.txt", &["cherries"]), 1.0, 1, 0.5)
            .expect("replace");
        assert!(s.keyword("apples", 5).expect("kw").is_empty());
        let hit = s.keyword("cherries", 5).expect("kw");
        assert_eq!(s.chunk(hit[0].0).expect("chunk").path, "/a.txt");
        let st = s.status().expect("status");
        assert_eq!((st.documents, st.chunks), (2, 2));
        assert_eq!(s.vectors().expect("vectors").0.len(), 2);
        assert!((st.indexing_j - 4.0).abs() < 1e-9 && (st.avoided_j - 0.5).abs() < 1e-9);
        assert_eq!(st.embedded_chunks, 4);
        assert!((s.j_per_chunk().expect("jpc") - 1.0).abs() < 1e-9);
        assert!(s.integrity_ok().expect("check"));
    }

    #[test]
    fn a_bulk_load_replaces_documents_like_one_at_a_time_and_counts_no_joules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(&dir.path().join("i.sqlite"), &enc()).expect("open");
        s.replace(&doc("/a.txt", &["old apples"]), 3.0, 1, 0.0)
            .expect("add");
        s.skip("/c.txt", "binary").expect("skip");
        s.replace_all(&[
            doc("/a.txt", &["new pears", "more pears"]),
            doc("/b.txt", &["plums"]),
            doc("/c.txt", &["cherries"]),
        ])
        .expect("bulk");
        assert!(s.keyword("apples", 5).expect("kw").is_empty());
        assert_eq!(s.keyword("pears", 5).expect("kw").len(), 2);
        let st = s.status().expect("status");
        assert_eq!((st.documents, st.chunks, st.skipped), (3, 4, 0));
        assert_eq!(s.vectors().expect("vectors").0.len(), 4);
        assert!((st.indexing_j - 3.0).abs() < 1e-9 && st.embedded_chunks == 1);
        assert!(s.integrity_ok().expect("check"));
    }

    #[test]
    fn a_word_counts_the_chunks_holding_its_stem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(&dir.path().join("i.sqlite"), &enc()).expect("open");
        s.replace(
            &doc("/a.txt", &["pumps running", "the pump runs", "a valve"]),
            0.0,
            0,
            0.0,
        )
        .expect("add");
        let words: Vec<String> = ["run", "pumping", "valve", "absent"]
            .iter()
            .map(|w| w.to_string())
            .collect();
        assert_eq!(s.term_docs(&words).expect("docs"), [2, 2, 1, 0]);
        // Asked again, with other words: the temporary tables start afresh.
        assert_eq!(s.term_docs(&words[2..]).expect("docs"), [1, 0]);
        assert!(s.term_docs(&[]).expect("docs").is_empty());
    }

    #[test]
    fn removing_a_folder_removes_what_is_under_it_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(&dir.path().join("i.sqlite"), &enc()).expect("open");
        for p in ["/d/a.txt", "/d/sub/b.txt", "/dx/c.txt", "/d"] {
            s.replace(&doc(p, &["x"]), 0.0, 0, 0.0).expect("add");
        }
        assert_eq!(s.remove("/d/").expect("remove"), 3);
        assert_eq!(s.paths().expect("paths"), vec!["/dx/c.txt".to_string()]);
        assert_eq!(s.status().expect("status").chunks, 1);
    }

    #[test]
    fn an_index_of_another_encoder_or_a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("i.sqlite");
        drop(Store::open(&p, &enc()).expect("open"));
        let other = EncoderId {
            name: "other".into(),
            dim: 8,
        };
        let err = Store::open(&p, &other).expect_err("other encoder");
        assert!(err.to_string().contains("test"), "{err}");
        assert_eq!(Store::open_existing(&p).expect("reopen").encoder(), &enc());
        let junk = dir.path().join("junk.sqlite");
        std::fs::write(&junk, b"not a database at all, just text").expect("write");
        assert!(Store::open_existing(&junk).is_err());
        assert!(matches!(
            Store::open_existing(&dir.path().join("none.sqlite")),
            Err(IndexError::Missing(_))
        ));
    }

    #[test]
    fn a_chunk_hash_finds_a_vector_from_any_document() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(&dir.path().join("i.sqlite"), &enc()).expect("open");
        s.replace(&doc("/a.txt", &["x", "y"]), 0.0, 0, 0.0)
            .expect("add");
        assert_eq!(s.vector_of(&[1; 32]).expect("q"), Some(vec![1u8; 34]));
        assert_eq!(s.vector_of(&[9; 32]).expect("q"), None);
        s.skip("/a.txt", "binary").expect("skip");
        assert_eq!(s.vector_of(&[1; 32]).expect("q"), None);
        assert_eq!(s.skipped().expect("skipped").len(), 1);
    }
}
