//! The owner's documents as local knowledge: files read and cut into chunks (`extract`,
//! `chunk`), embedded by a sentence encoder, kept in one SQLite file with FTS5 (`store`),
//! searched dense, by keyword or both fused (`search`), re-indexed by content hash so only
//! changed chunks are embedded (`build`), and turned into a prompt with numbered sources
//! (`rag`). The encoder is a trait, so nothing here loads a model; the governor's pace and
//! the energy meter come in as closures. Imports `engine` (the Q8_0 kernels) only.

pub mod build;
pub mod chunk;
pub mod extract;
pub mod rag;
pub mod retrieve;
pub mod search;
pub mod store;

use std::path::PathBuf;

pub use build::{AddOptions, AddReport, Progress, add, watch_once};
pub use retrieve::{EmbeddedQuestion, QuestionEncoder, RetrievalOptions, Retrieved, Retriever};
pub use search::Mode;
pub use store::{ChunkRow, EncoderId, Status, Store};

use search::{DenseTable, fts_query, fuse, query_words, selective_words};

/// File name of the default index under the thermo home.
pub const DEFAULT_INDEX_FILE: &str = "index.sqlite";

/// What can go wrong with an index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The database said no.
    #[error("index database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file or folder could not be read or made.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// No index at that path.
    #[error("no index at {0}: build one with `thermo index add PATH`")]
    Missing(PathBuf),
    /// The index was built with another encoder.
    #[error(
        "{path} was built with the encoder {found}, not {wanted}: index it anew or pass its encoder"
    )]
    OtherEncoder {
        /// The index file.
        path: PathBuf,
        /// Its encoder.
        found: String,
        /// The encoder asked for.
        wanted: String,
    },
    /// The file is not an index this thermo reads.
    #[error("{0}")]
    Corrupt(String),
    /// The encoder failed or gave vectors that do not fit.
    #[error("embedding: {0}")]
    Embed(String),
    /// Options that cannot work.
    #[error("{0}")]
    Options(String),
}

/// A sentence encoder: unit vectors for texts.
pub trait Encoder {
    /// Its name and vector width.
    fn id(&self) -> EncoderId;
    /// One unit vector per text, in order.
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, IndexError>;
}

impl<E: Encoder + ?Sized> Encoder for std::sync::Arc<E> {
    fn id(&self) -> EncoderId {
        (**self).id()
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, IndexError> {
        (**self).embed_batch(texts)
    }
}

/// The engine's sentence encoder under the name its index records.
#[derive(Debug)]
pub struct NamedEncoder {
    /// The loaded encoder.
    pub embedder: crate::engine::embed::Embedder,
    /// Its name (the model folder's).
    pub name: String,
}

impl Encoder for NamedEncoder {
    fn id(&self) -> EncoderId {
        EncoderId {
            name: self.name.clone(),
            dim: self.embedder.dim(),
        }
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, IndexError> {
        self.embedder
            .embed_batch(texts)
            .map_err(|e| IndexError::Embed(format!("{e:#}")))
    }
}

/// A hit: the chunk and its score in the ranking used.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    /// The chunk.
    pub chunk_id: i64,
    /// Source file.
    pub path: String,
    /// First line (1-based).
    pub line_start: u32,
    /// Last line (inclusive).
    pub line_end: u32,
    /// Cosine (dense), BM25 (keyword) or fused reciprocal-rank score (hybrid).
    pub score: f64,
    /// The chunk's text.
    pub text: String,
}

impl Hit {
    /// `file:line` or `file:first-last`.
    pub fn citation(&self) -> String {
        if self.line_start == self.line_end {
            format!("{}:{}", self.path, self.line_start)
        } else {
            format!("{}:{}-{}", self.path, self.line_start, self.line_end)
        }
    }
}

/// Candidates each ranking gives before fusion.
const CANDIDATES: usize = 50;

/// An index open for searching: the store and its vectors held in memory.
#[derive(Debug)]
pub struct Index {
    store: Store,
    dense: DenseTable,
    version: i64,
}

impl Index {
    /// Opens the index at `path` and loads its vectors.
    pub fn open(path: &std::path::Path) -> Result<Index, IndexError> {
        let store = Store::open_existing(path)?;
        Self::from_store(store)
    }

    /// Loads the vectors of an open store.
    pub fn from_store(store: Store) -> Result<Index, IndexError> {
        let version = store.data_version()?;
        let (ids, q8) = store.vectors()?;
        let dense = DenseTable::new(ids, q8, store.encoder().dim)?;
        Ok(Index {
            store,
            dense,
            version,
        })
    }

    /// Loads the vectors again when another process (`thermo index add` or `watch`) has
    /// committed to the file since they were loaded; true when it did.
    pub fn refresh(&mut self) -> Result<bool, IndexError> {
        let version = self.store.data_version()?;
        if version == self.version {
            return Ok(false);
        }
        let (ids, q8) = self.store.vectors()?;
        self.dense = DenseTable::new(ids, q8, self.store.encoder().dim)?;
        self.version = version;
        Ok(true)
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Bytes the vectors take in memory.
    pub fn resident_bytes(&self) -> usize {
        self.dense.resident_bytes()
    }

    /// The `k` chunks that best match `query`'s words by BM25, reading only the words that
    /// [`selective_words`] keeps.
    fn keyword(&self, query: &str, k: usize) -> Result<Vec<(i64, f64)>, IndexError> {
        let words = query_words(query);
        let docs = self.store.term_docs(&words)?;
        let words = selective_words(
            words.into_iter().zip(docs).collect(),
            self.dense.len() as u64,
        );
        self.store.keyword(&fts_query(&words), k)
    }

    /// The `k` best chunks for `query` (its text; `vector`, its unit vector, for the dense
    /// and hybrid modes).
    pub fn search(
        &self,
        query: &str,
        vector: Option<&[f32]>,
        mode: Mode,
        k: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        let dense = |n: usize| match vector {
            Some(v) => self.dense.search(v, n),
            None => Err(IndexError::Embed(
                "a dense search needs the query's vector".into(),
            )),
        };
        let ranked = match mode {
            Mode::Dense => dense(k)?,
            Mode::Keyword => self.keyword(query, k)?,
            Mode::Hybrid => {
                let n = CANDIDATES.max(k);
                let d = dense(n)?;
                let w = self.keyword(query, n)?;
                fuse(&[&d, &w], k)
            }
        };
        ranked
            .into_iter()
            .map(|(id, score)| {
                let c = self.store.chunk(id)?;
                Ok(Hit {
                    chunk_id: id,
                    path: c.path,
                    line_start: c.line_start,
                    line_end: c.line_end,
                    score,
                    text: c.text,
                })
            })
            .collect()
    }
}
