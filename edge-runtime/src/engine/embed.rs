//! Sentence embeddings on tract: a BERT encoder folder as sentence-transformers ships one
//! (`config.json`, `model.safetensors`, `tokenizer.json`, `sentence_bert_config.json`; the
//! layout of all-MiniLM-L6-v2) imported into the ONNX graph of
//! [`bert`](crate::engine::onnx_export::bert) when it loads: word pieces in, one unit-length
//! vector per text out, the mean of the token states as sentence-transformers pools them.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, ensure};
use tokenizers::{Tokenizer, TruncationParams};
use tract_onnx::prelude::*;

use crate::engine::onnx_export::bert::{BertConfig, BertWeights, bert_model_proto};

/// Largest `model.safetensors` read, bytes.
pub const MAX_WEIGHTS_BYTES: u64 = 2 << 30;
/// Longest text embedded, in bytes; the tokens beyond the model's window are cut anyway.
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// Tokens per text when the folder does not say (`sentence_bert_config.json`).
const DEFAULT_MAX_TOKENS: usize = 256;

/// Texts one run of the graph holds at most.
const BATCH_TEXTS: usize = 16;
/// Padded tokens (texts × the longest) one run of the graph holds at most.
const BATCH_TOKENS: usize = 4096;

/// A loaded sentence encoder.
pub struct Embedder {
    graph: EncoderGraph,
    tokenizer: Tokenizer,
    max_tokens: usize,
    vocab: usize,
}

/// The planned encoder graph: padded token ids in, one unit vector per sequence out.
struct EncoderGraph {
    plan: Arc<TypedSimplePlan>,
    dim: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dim", &self.graph.dim)
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads the encoder folder at `dir`, building its graph.
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
        };
        let config: BertConfig =
            serde_json::from_slice(&read("config.json")?).context("parsing config.json")?;
        config.validate()?;
        let max_tokens = std::fs::read(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("max_seq_length").and_then(|m| m.as_u64()))
            .map_or(DEFAULT_MAX_TOKENS, |m| m as usize)
            .clamp(2, config.max_position_embeddings);
        let weights_path = dir.join("model.safetensors");
        let size = std::fs::metadata(&weights_path)
            .with_context(|| format!("reading {}", weights_path.display()))?
            .len();
        ensure!(
            size <= MAX_WEIGHTS_BYTES,
            "{} is {size} bytes, above the {MAX_WEIGHTS_BYTES} an encoder may take",
            weights_path.display()
        );
        let weights = BertWeights::from_safetensors(config.clone(), &read("model.safetensors")?)
            .with_context(|| format!("loading {}", weights_path.display()))?;
        let graph = EncoderGraph::build(&weights)?;
        drop(weights);
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| anyhow!("invalid tokenizer.json: {e}"))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| anyhow!("tokenizer.json: {e}"))?;
        Ok(Self {
            graph,
            tokenizer,
            max_tokens,
            vocab: config.vocab_size,
        })
    }

    /// Width of the vectors.
    pub fn dim(&self) -> usize {
        self.graph.dim
    }

    /// Tokens of a text the encoder reads; the rest is cut.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Word-piece ids of `text` with the encoder's special tokens, cut to its window.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        ensure!(
            text.len() <= MAX_TEXT_BYTES,
            "a text to embed is {} bytes, above {MAX_TEXT_BYTES}",
            text.len()
        );
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        let ids = enc.get_ids().to_vec();
        check_ids(&ids, self.vocab)?;
        Ok(ids)
    }

    /// The unit vector of one text.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let ids = self.token_ids(text)?;
        let mut out = self.graph.run(&[&ids])?;
        out.pop().context("the encoder gave no vector")
    }

    /// The unit vectors of `texts`, in their order. Texts of similar token length run
    /// together: sorted by length, grouped, each group padded to its longest text under the
    /// attention mask, which keeps the padding out of every text's vector.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = texts
            .iter()
            .map(|t| self.token_ids(t))
            .collect::<Result<Vec<_>>>()?;
        self.embed_ids(&ids)
    }

    /// The unit vectors of texts given as word-piece ids ([`Embedder::token_ids`]), batched
    /// as [`Embedder::embed_batch`] does.
    pub fn embed_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        for seq in ids {
            ensure!(!seq.is_empty(), "a text to embed has no tokens");
            check_ids(seq, self.vocab)?;
            ensure!(
                seq.len() <= self.max_tokens,
                "a text of {} tokens is above the encoder's {}",
                seq.len(),
                self.max_tokens
            );
        }
        self.graph.run_batched(ids)
    }
}

impl EncoderGraph {
    /// Builds and plans the graph of `weights`.
    fn build(weights: &BertWeights) -> Result<Self> {
        let proto = bert_model_proto(weights)?;
        let model = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .and_then(|m| m.into_optimized())
            .context("building the encoder graph")?;
        drop(proto);
        let plan = TypedSimplePlan::new(model).context("planning the encoder")?;
        Ok(Self {
            plan,
            dim: weights.config.hidden_size,
        })
    }

    /// Vectors of `ids` in their order, run in groups of similar length ([`batches`]).
    fn run_batched(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        let mut out = vec![Vec::new(); ids.len()];
        for group in batches(&lengths, BATCH_TEXTS, BATCH_TOKENS) {
            let seqs: Vec<&[u32]> = group.iter().map(|&i| ids[i].as_slice()).collect();
            for (&i, v) in group.iter().zip(self.run(&seqs)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// One run of the graph over `seqs`, padded to the longest under the attention mask.
    fn run(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let b = seqs.len();
        let n = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        ensure!(n > 0, "the tokenizer gave no tokens");
        let mut ids = vec![0i64; b * n];
        let mut mask = vec![0i64; b * n];
        let mut positions = vec![0i64; b * n];
        for (r, seq) in seqs.iter().enumerate() {
            for (j, &id) in seq.iter().enumerate() {
                ids[r * n + j] = i64::from(id);
                mask[r * n + j] = 1;
                positions[r * n + j] = j as i64;
            }
        }
        let input = |v: &[i64]| Tensor::from_shape(&[b, n], v).map(IntoTValue::into_tvalue);
        let out = self
            .plan
            .run(tvec![input(&ids)?, input(&mask)?, input(&positions)?])
            .context("running the encoder")?;
        let v = out[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        ensure!(
            v.len() == b * self.dim,
            "the encoder gave {} values for {b} texts",
            v.len()
        );
        Ok(v.chunks_exact(self.dim).map(<[f32]>::to_vec).collect())
    }
}

/// Groups of indices into `lengths` that run together: ascending length (ties in input
/// order), at most `max_texts` per group and at most `max_tokens` once padded to the group's
/// longest; a text longer than `max_tokens` runs alone. Every index appears exactly once.
fn batches(lengths: &[usize], max_texts: usize, max_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Ascending order: the newcomer is the longest of the group it joins.
        let padded = (current.len() + 1).saturating_mul(lengths[i]);
        if !current.is_empty() && (current.len() >= max_texts || padded > max_tokens) {
            groups.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// Refuses a token id beyond the encoder's word table (a `tokenizer.json` that does not
/// belong to the weights), which the graph's lookup would otherwise read out of bounds.
fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        anyhow::bail!(
            "token id {id} is outside the encoder's {vocab} words: tokenizer.json does not match config.json"
        );
    }
    Ok(())
}

/// Cosine similarity of two vectors (their dot product when both have unit length).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_the_encoder_files_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Embedder::load(dir.path())
            .expect_err("empty folder")
            .to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 0}").expect("write");
        assert!(Embedder::load(dir.path()).is_err());
    }

    #[test]
    fn a_token_id_beyond_the_word_table_is_an_error() {
        assert!(check_ids(&[0, 5, 9], 10).is_ok());
        let err = check_ids(&[0, 10], 10)
            .expect_err("out of range")
            .to_string();
        assert!(err.contains("token id 10"), "{err}");
    }

    #[test]
    fn batches_group_similar_lengths_within_both_bounds_and_keep_every_text_once() {
        let lengths = [5, 1, 9, 3, 3, 7, 2, 100, 4];
        let groups = batches(&lengths, 3, 20);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for g in &groups {
            let longest = g.iter().map(|&i| lengths[i]).max().expect("non-empty");
            assert!(g.len() <= 3, "{g:?}");
            assert!(g.len() == 1 || g.len() * longest <= 20, "{g:?}");
        }
        // Ascending length, ties in input order: 1 | 2 3 3 ... as the bounds allow.
        assert_eq!(groups[0], [1, 6, 3]);
        assert_eq!(
            groups.last(),
            Some(&vec![7]),
            "the 100-token text runs alone"
        );
        assert!(batches(&[], 4, 10).is_empty());
    }

    fn tiny_graph() -> EncoderGraph {
        let config = crate::engine::onnx_export::bert::BertConfig {
            vocab_size: 50,
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 128,
            max_position_embeddings: 40,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
        };
        let weights = BertWeights::seeded(config, 11);
        EncoderGraph::build(&weights).expect("builds")
    }

    fn seqs() -> Vec<Vec<u32>> {
        (0..23)
            .map(|i: u32| {
                (0..1 + (i * 7) % 31)
                    .map(|j| (i * 13 + j * 5) % 50)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_padded_batch_gives_each_text_the_vector_it_gets_alone_in_input_order() {
        let graph = tiny_graph();
        let seqs = seqs();
        let batched = graph.run_batched(&seqs).expect("runs");
        assert_eq!(batched.len(), seqs.len());
        for (seq, v) in seqs.iter().zip(&batched) {
            let alone = graph.run(&[seq]).expect("runs").remove(0);
            let c = cosine(v, &alone);
            assert!(c > 0.99999, "{} tokens: cosine {c}", seq.len());
        }
        // Distinct texts give distinct vectors, so an order mix-up would show.
        assert!(cosine(&batched[0], &batched[1]) < 0.999);
    }

    #[test]
    fn cosine_of_parallel_opposite_and_zero_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert!((cosine(&[1.0, 0.0], &[-3.0, 0.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }
}
