//! Retrieval for one question: the index open for searching and the sentence encoder that
//! built it, the question embedded (dense and hybrid modes) and searched, with the joules of
//! each step read off the caller's energy meter.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{Encoder, Hit, Index, IndexError, Mode};

/// What retrieval options a job holds: where the index is, how to rank, how many passages.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalOptions {
    /// Ranking.
    pub mode: Mode,
    /// Chunks fetched; the prompt takes as many as fit its budget.
    pub k: usize,
    /// Tokens the retrieved passages and the instruction may add to the prompt.
    pub budget_tokens: usize,
}

impl Default for RetrievalOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Hybrid,
            k: super::rag::DEFAULT_PASSAGES,
            budget_tokens: DEFAULT_BUDGET_TOKENS,
        }
    }
}

/// Tokens retrieval may add to a prompt unless told otherwise: three passages of the index's
/// largest chunk size, with their labels and the instruction.
pub const DEFAULT_BUDGET_TOKENS: usize = 768;

/// The chunks found for one question and what finding them cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieved {
    /// Best first.
    pub hits: Vec<Hit>,
    /// Joules of embedding the question (0 in keyword mode).
    pub embed_j: f64,
    /// Joules of the search.
    pub search_j: f64,
    /// Seconds of embedding the question.
    pub embed_s: f64,
    /// Seconds of the search.
    pub search_s: f64,
}

/// An index and, unless the mode is keyword, the encoder that built it.
pub struct Retriever {
    index: Index,
    encoder: QuestionEncoder,
    options: RetrievalOptions,
}

/// The encoder a [`Retriever`] embeds questions with, apart from it, so that a question can
/// be embedded while nothing else of the retriever is held (none in keyword mode).
#[derive(Clone, Default)]
pub struct QuestionEncoder(Option<Arc<dyn Encoder + Send + Sync>>);

/// A question's vector (none in keyword mode) and what embedding it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedQuestion {
    vector: Option<Vec<f32>>,
    embed_j: f64,
    embed_s: f64,
}

impl QuestionEncoder {
    /// Embeds `question`; `energy_j` reads the job's meter (cumulative joules).
    pub fn embed(
        &self,
        question: &str,
        energy_j: &mut dyn FnMut() -> f64,
    ) -> Result<EmbeddedQuestion, IndexError> {
        let (t0, j0) = (Instant::now(), energy_j());
        let vector = match &self.0 {
            Some(e) => e.embed_batch(&[question])?.pop(),
            None => None,
        };
        let (t1, j1) = (Instant::now(), energy_j());
        Ok(EmbeddedQuestion {
            vector,
            embed_j: (j1 - j0).max(0.0),
            embed_s: (t1 - t0).as_secs_f64(),
        })
    }
}

impl std::fmt::Debug for Retriever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retriever")
            .field("index", &self.index)
            .field("encoder", &self.encoder.0.as_ref().map(|e| e.id()))
            .field("options", &self.options)
            .finish()
    }
}

impl Retriever {
    /// Opens the index at `path` for `options`; `load_encoder` gives the encoder when the
    /// mode needs one (not in keyword mode), and it must be the one the index was built with.
    pub fn open<E: Encoder + Send + Sync + 'static>(
        path: &Path,
        options: RetrievalOptions,
        load_encoder: impl FnOnce() -> anyhow::Result<E>,
    ) -> Result<Retriever, IndexError> {
        if options.k == 0 || options.budget_tokens == 0 {
            return Err(IndexError::Options(
                "retrieval needs at least one passage and a token budget above 0".into(),
            ));
        }
        let index = Index::open(path)?;
        let encoder: Option<Arc<dyn Encoder + Send + Sync>> = if options.mode == Mode::Keyword {
            None
        } else {
            let encoder = load_encoder().map_err(|e| IndexError::Embed(format!("{e:#}")))?;
            let (have, want) = (encoder.id(), index.store().encoder());
            if have != *want {
                return Err(IndexError::OtherEncoder {
                    path: path.to_path_buf(),
                    found: format!("{} ({} dimensions)", want.name, want.dim),
                    wanted: format!("{} ({} dimensions)", have.name, have.dim),
                });
            }
            Some(Arc::new(encoder))
        };
        Ok(Retriever {
            index,
            encoder: QuestionEncoder(encoder),
            options,
        })
    }

    /// The options in force.
    pub fn options(&self) -> &RetrievalOptions {
        &self.options
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Picks up what another process committed to the index since it was opened.
    pub fn refresh(&mut self) -> Result<bool, IndexError> {
        self.index.refresh()
    }

    /// The encoder questions are embedded with, to use apart from the retriever.
    pub fn question_encoder(&self) -> QuestionEncoder {
        self.encoder.clone()
    }

    /// The chunks for `question`; `energy_j` reads the job's meter (cumulative joules).
    pub fn retrieve(
        &self,
        question: &str,
        energy_j: &mut dyn FnMut() -> f64,
    ) -> Result<Retrieved, IndexError> {
        let embedded = self.encoder.embed(question, energy_j)?;
        self.retrieve_embedded(question, embedded, energy_j)
    }

    /// The chunks for `question`, already embedded by [`Retriever::question_encoder`].
    pub fn retrieve_embedded(
        &self,
        question: &str,
        embedded: EmbeddedQuestion,
        energy_j: &mut dyn FnMut() -> f64,
    ) -> Result<Retrieved, IndexError> {
        let (t1, j1) = (Instant::now(), energy_j());
        let hits = self.index.search(
            question,
            embedded.vector.as_deref(),
            self.options.mode,
            self.options.k,
        )?;
        let (t2, j2) = (Instant::now(), energy_j());
        Ok(Retrieved {
            hits,
            embed_j: embedded.embed_j,
            search_j: (j2 - j1).max(0.0),
            embed_s: embedded.embed_s,
            search_s: (t2 - t1).as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::build::tests::words_vector;
    use crate::index::build::{AddOptions, add};
    use crate::index::store::{EncoderId, Store};

    /// The bag-of-words encoder of the build tests under a name and width of choice.
    struct Words(&'static str, usize);

    impl Encoder for Words {
        fn id(&self) -> EncoderId {
            EncoderId {
                name: self.0.into(),
                dim: self.1,
            }
        }
        fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, IndexError> {
            Ok(texts.iter().map(|t| words_vector(t)).collect())
        }
    }

    /// Adds `file` (a file or folder) to the index at `path` with the bag-of-words encoder.
    fn index_paths(path: &Path, file: std::path::PathBuf) {
        let enc = Words("words", 64);
        let mut store = Store::open(path, &enc.id()).expect("open");
        add(
            &mut store,
            &enc,
            &[file],
            &AddOptions::default(),
            &mut |work| {
                work();
                true
            },
            &|| 0.0,
            &mut |_| {},
        )
        .expect("add");
    }

    fn built(dir: &Path) -> std::path::PathBuf {
        let docs = dir.join("docs");
        std::fs::create_dir(&docs).expect("mkdir");
        std::fs::write(
            docs.join("pump.txt"),
            "The pump runs at 40 litres per minute.",
        )
        .expect("write");
        std::fs::write(
            docs.join("valve.txt"),
            "The valve opens at 2 bar of pressure.",
        )
        .expect("write");
        let path = dir.join("index.sqlite");
        index_paths(&path, docs);
        path
    }

    #[test]
    fn each_mode_finds_the_passage_and_the_joules_of_each_step_are_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = built(dir.path());
        for mode in [Mode::Dense, Mode::Keyword, Mode::Hybrid] {
            let options = RetrievalOptions {
                mode,
                k: 1,
                ..RetrievalOptions::default()
            };
            let r = Retriever::open(&path, options, || Ok(Words("words", 64))).expect("open");
            let mut meter = 0.0;
            let got = r
                .retrieve("At what pressure does the valve open?", &mut || {
                    meter += 1.0;
                    meter
                })
                .expect("retrieve");
            assert_eq!(got.hits.len(), 1, "{mode:?}");
            assert!(got.hits[0].path.ends_with("valve.txt"), "{mode:?}: {got:?}");
            assert_eq!((got.embed_j, got.search_j), (1.0, 1.0), "{mode:?}");
        }
    }

    #[test]
    fn a_document_added_by_another_connection_is_found_after_a_refresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = built(dir.path());
        let options = RetrievalOptions {
            mode: Mode::Dense,
            k: 1,
            ..RetrievalOptions::default()
        };
        let mut r = Retriever::open(&path, options, || Ok(Words("words", 64))).expect("open");
        assert!(!r.refresh().expect("refresh"), "nothing changed yet");
        let more = dir.path().join("fan.txt");
        std::fs::write(&more, "The fan spins at 3000 rpm when the chip is hot.").expect("w");
        index_paths(&path, more);
        assert!(
            r.refresh().expect("refresh"),
            "another connection committed"
        );
        let got = r.retrieve("fan rpm chip hot", &mut || 0.0).expect("search");
        assert!(got.hits[0].path.ends_with("fan.txt"), "{got:?}");
    }

    #[test]
    fn another_encoder_and_empty_options_are_refused_and_keyword_mode_loads_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = built(dir.path());
        let dense = RetrievalOptions {
            mode: Mode::Dense,
            ..RetrievalOptions::default()
        };
        let err = Retriever::open(&path, dense.clone(), || Ok(Words("other", 64)))
            .expect_err("another encoder");
        assert!(matches!(err, IndexError::OtherEncoder { .. }), "{err}");
        let err = Retriever::open(&path, dense.clone(), || Ok(Words("words", 32)))
            .expect_err("another width");
        assert!(err.to_string().contains("32 dimensions"), "{err}");
        let none = RetrievalOptions {
            k: 0,
            ..dense.clone()
        };
        assert!(matches!(
            Retriever::open(&path, none, || Ok(Words("words", 64))),
            Err(IndexError::Options(_))
        ));
        let keyword = RetrievalOptions {
            mode: Mode::Keyword,
            ..dense
        };
        let r = Retriever::open(&path, keyword, || -> anyhow::Result<Words> {
            anyhow::bail!("no encoder should be loaded in keyword mode")
        })
        .expect("keyword mode");
        assert!(
            r.retrieve("pump", &mut || 0.0).expect("search").hits[0]
                .path
                .ends_with("pump.txt")
        );
    }
}
