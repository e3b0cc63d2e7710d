//! Retrieval in an answer, as `run`, `chat` and `serve` share it: the document index and its
//! encoder opened from plain paths, the question's best passages put into the prompt within
//! the room the model's context leaves, and what that cost in joules and prompt tokens.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::eco::{IndexFootprint, MemoryCost};
use crate::engine::embed::Embedder;
use crate::engine::tokenizer::TextTokenizer;
use crate::index::{
    DEFAULT_INDEX_FILE, EmbeddedQuestion, Hit, NamedEncoder, RetrievalOptions, Retrieved, Retriever,
};
use crate::models::{EMBED_MODEL, cache_root, ensure_embed_model};

/// The encoder folder `dir` names (else the default, fetched and checked on first use) and
/// the name an index records for it.
pub fn encoder_folder(dir: Option<&Path>) -> Result<(PathBuf, String)> {
    let name = encoder_name(dir);
    Ok(match dir {
        Some(dir) => (dir.to_path_buf(), name),
        None => (ensure_embed_model(&cache_root()?, &EMBED_MODEL)?, name),
    })
}

/// The name an index records for the encoder in `dir` (its folder's name), or for the
/// default encoder; nothing is loaded or fetched.
pub fn encoder_name(dir: Option<&Path>) -> String {
    match dir {
        Some(dir) => dir
            .file_name()
            .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into()),
        None => EMBED_MODEL.name.to_string(),
    }
}

/// Loads the encoder in `dir` (else the default) under its index name.
pub fn load_encoder(dir: Option<&Path>) -> Result<NamedEncoder> {
    let (dir, name) = encoder_folder(dir)?;
    Ok(NamedEncoder {
        embedder: Embedder::load(&dir)?,
        name,
    })
}

/// The index file `path` names, else `index.sqlite` in the thermo home.
pub fn index_path(path: Option<&Path>) -> Result<PathBuf> {
    match path {
        Some(p) => Ok(p.to_path_buf()),
        None => Ok(cache_root()?.join(DEFAULT_INDEX_FILE)),
    }
}

/// Opens the index at `index` (else the default) with the encoder in `encoder` (else the
/// default) for `options`.
pub fn open_retriever(
    index: Option<&Path>,
    encoder: Option<&Path>,
    options: RetrievalOptions,
) -> Result<Retriever> {
    let path = index_path(index)?;
    Retriever::open(&path, options, || load_encoder(encoder))
        .with_context(|| format!("opening the document index {}", path.display()))
}

/// A question with its retrieved passages.
#[derive(Debug, Clone)]
pub struct Augmented {
    /// The user turn to send: the instruction, the numbered passages and the question (the
    /// question alone when nothing was found or nothing fits).
    pub prompt: String,
    /// The passages in the prompt, numbered from 1 in this order.
    pub used: Vec<Hit>,
    /// What the search found and what it cost.
    pub retrieved: Retrieved,
    /// Tokens the passages and the instruction added to the question.
    pub extra_tokens: usize,
}

impl Augmented {
    /// What retrieval cost the answer, for the footprint's memory layer (the extra prompt
    /// tokens are costed at the answer's own prefill rate).
    pub fn memory_cost(&self) -> MemoryCost {
        MemoryCost {
            query_embed_j: self.retrieved.embed_j,
            search_j: self.retrieved.search_j,
            extra_prompt_tokens: self.extra_tokens as u64,
            prefill_j_per_token: 0.0,
        }
    }

    /// `[retrieval: ...]`: passages, added tokens and the joules of each step.
    pub fn line(&self) -> String {
        format!(
            "[retrieval: {} of {} passages, +{} prompt tokens; query embedded in {:.0} ms ({:.2} J), searched in {:.1} ms ({:.3} J)]",
            self.used.len(),
            self.retrieved.hits.len(),
            self.extra_tokens,
            self.retrieved.embed_s * 1e3,
            self.retrieved.embed_j,
            self.retrieved.search_s * 1e3,
            self.retrieved.search_j,
        )
    }
}

/// The index's own footprint: the joules spent building it, its file's bytes and the bytes
/// its search holds in memory; `None` when its status cannot be read.
pub fn index_footprint(retriever: &Retriever) -> Option<IndexFootprint> {
    let index = retriever.index();
    match index.store().status() {
        Ok(s) => Some(IndexFootprint {
            indexing_j: s.indexing_j,
            disk_bytes: s.disk_bytes,
            resident_bytes: index.resident_bytes() as u64,
        }),
        Err(e) => {
            log::warn!("reading the index's status: {e}");
            None
        }
    }
}

/// Retrieves for `question` and builds its prompt within the retriever's budget and `room`,
/// the tokens the model's context has left for the user turn; `energy_j` reads the job's
/// meter.
pub fn augment(
    retriever: &Retriever,
    question: &str,
    tokenizer: &TextTokenizer,
    room: usize,
    energy_j: &mut dyn FnMut() -> f64,
) -> Result<Augmented> {
    let retrieved = retriever.retrieve(question, energy_j)?;
    Ok(augment_with(
        retriever, question, retrieved, tokenizer, room,
    ))
}

/// [`augment`] with the question already embedded ([`Retriever::question_encoder`]), so
/// that embedding it need not hold the retriever.
pub fn augment_embedded(
    retriever: &Retriever,
    question: &str,
    embedded: EmbeddedQuestion,
    tokenizer: &TextTokenizer,
    room: usize,
    energy_j: &mut dyn FnMut() -> f64,
) -> Result<Augmented> {
    let retrieved = retriever.retrieve_embedded(question, embedded, energy_j)?;
    Ok(augment_with(
        retriever, question, retrieved, tokenizer, room,
    ))
}

/// The prompt for `question` from what was retrieved for it.
fn augment_with(
    retriever: &Retriever,
    question: &str,
    retrieved: Retrieved,
    tokenizer: &TextTokenizer,
    room: usize,
) -> Augmented {
    // A text the tokenizer refuses is counted by its bytes, which is never fewer tokens.
    let count = |t: &str| tokenizer.encode(t).map_or(t.len(), |ids| ids.len());
    let asked = count(question);
    let budget = room.min(asked + retriever.options().budget_tokens);
    let (prompt, used) = crate::index::rag::prompt(question, &retrieved.hits, budget, &count);
    let extra_tokens = count(&prompt).saturating_sub(asked);
    Augmented {
        prompt,
        used,
        retrieved,
        extra_tokens,
    }
}

/// The sources list printed after an answer, headed `Sources:`; empty without passages.
pub fn sources_block(used: &[Hit]) -> String {
    if used.is_empty() {
        return String::new();
    }
    format!("Sources:\n{}", crate::index::rag::sources(used))
}
