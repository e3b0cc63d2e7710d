//! Sentence embeddings on tract: a BERT encoder folder as sentence-transformers ships one
//! (`config.json`, `model.safetensors`, `tokenizer.json`, `sentence_bert_config.json`; the
//! layout of all-MiniLM-L6-v2) imported into the ONNX graph of
//! [`bert`](crate::engine::onnx_export::bert) when it loads: word pieces in, one unit-length
//! vector per text out, the mean of the token states as sentence-transformers pools them.
//! The encoder layers' linear maps hold f32 or Q8_0 weights ([`EmbedPrecision`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use tokenizers::{Tokenizer, TruncationParams};
use tract_onnx::prelude::*;

use crate::engine::onnx_export::bert::{Attention, BertConfig, BertWeights, bert_model_proto};
use crate::engine::{bert_attention, bert_dense, ggml_op};

pub use crate::engine::onnx_export::bert::EmbedPrecision;

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
    /// Loads the encoder folder at `dir` with f32 linear maps, building its graph.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with(dir, EmbedPrecision::F32)
    }

    /// Loads the encoder folder at `dir`, its linear maps in `precision`.
    pub fn load_with(dir: &Path, precision: EmbedPrecision) -> Result<Self> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
        };
        let weights = read_weights(dir)?;
        let config = weights.config.clone();
        let max_tokens = std::fs::read(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("max_seq_length").and_then(|m| m.as_u64()))
            .map_or(DEFAULT_MAX_TOKENS, |m| m as usize)
            .clamp(2, config.max_position_embeddings);
        let graph = EncoderGraph::build(&weights, precision)?;
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
        let mut out = self.graph.run(&[&ids], None)?;
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
        self.check_sequences(ids)?;
        self.graph.run_batched(ids, None)
    }

    /// Embeds `ids` as [`Embedder::embed_ids`] does, timing every node of the graph: the
    /// time spent per op name, longest first.
    pub fn profile_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<(String, Duration)>> {
        self.check_sequences(ids)?;
        let mut times = HashMap::new();
        self.graph.run_batched(ids, Some(&mut times))?;
        let mut times: Vec<_> = times.into_iter().collect();
        times.sort_by_key(|t| std::cmp::Reverse(t.1));
        Ok(times)
    }

    /// Refuses an empty sequence, one beyond the window, or an id beyond the word table.
    fn check_sequences(&self, ids: &[Vec<u32>]) -> Result<()> {
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
        Ok(())
    }
}

/// Time spent per op name.
type OpTimes = HashMap<String, Duration>;

impl EncoderGraph {
    /// Builds and plans the graph of `weights`, its linear maps in `precision`.
    fn build(weights: &BertWeights, precision: EmbedPrecision) -> Result<Self> {
        let proto = bert_model_proto(weights, precision, Attention::Fused)?;
        let mut onnx = ggml_op::onnx();
        bert_attention::register(&mut onnx);
        bert_dense::register(&mut onnx);
        let model = onnx
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
    /// With `times`, every node's run time is added to its op's entry.
    fn run_batched(
        &self,
        ids: &[Vec<u32>],
        mut times: Option<&mut OpTimes>,
    ) -> Result<Vec<Vec<f32>>> {
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        let mut out = vec![Vec::new(); ids.len()];
        for group in batches(&lengths, BATCH_TEXTS, BATCH_TOKENS) {
            let seqs: Vec<&[u32]> = group.iter().map(|&i| ids[i].as_slice()).collect();
            for (&i, v) in group.iter().zip(self.run(&seqs, times.as_deref_mut())?) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// One run of the graph over `seqs`, padded to the longest under the attention mask.
    fn run(&self, seqs: &[&[u32]], times: Option<&mut OpTimes>) -> Result<Vec<Vec<f32>>> {
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
        let inputs = tvec![input(&ids)?, input(&mask)?, input(&positions)?];
        let out = match times {
            None => self.plan.run(inputs),
            Some(times) => self.plan.spawn().and_then(|mut state| {
                state.run_plan_with_eval(inputs, |ctx, op_state, node, inputs| {
                    let t = Instant::now();
                    let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                    *times.entry(node.op().name().to_string()).or_default() += t.elapsed();
                    out
                })
            }),
        }
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

/// The checked `config.json` and `model.safetensors` of the encoder folder at `dir`.
fn read_weights(dir: &Path) -> Result<BertWeights> {
    let config_path = dir.join("config.json");
    let config: BertConfig = serde_json::from_slice(
        &std::fs::read(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .context("parsing config.json")?;
    config.validate()?;
    let weights_path = dir.join("model.safetensors");
    let size = std::fs::metadata(&weights_path)
        .with_context(|| format!("reading {}", weights_path.display()))?
        .len();
    ensure!(
        size <= MAX_WEIGHTS_BYTES,
        "{} is {size} bytes, above the {MAX_WEIGHTS_BYTES} an encoder may take",
        weights_path.display()
    );
    let bytes = std::fs::read(&weights_path)
        .with_context(|| format!("reading {}", weights_path.display()))?;
    BertWeights::from_safetensors(config, &bytes)
        .with_context(|| format!("loading {}", weights_path.display()))
}

/// Writes the f32 graph of the encoder folder at `dir` to `out` as a standard ONNX file
/// (inputs `input_ids`, `attention_mask`, `position_ids`; output `embeddings`), the graph
/// [`Embedder`] runs, for other runtimes to load.
pub fn export_onnx(dir: &Path, out: &Path) -> Result<()> {
    use prost::Message;
    let proto = bert_model_proto(&read_weights(dir)?, EmbedPrecision::F32, Attention::Onnx)?;
    std::fs::write(out, proto.encode_to_vec()).with_context(|| format!("writing {}", out.display()))
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

    fn tiny_graph(precision: EmbedPrecision) -> EncoderGraph {
        let weights = BertWeights::seeded(tiny_config(), 11);
        EncoderGraph::build(&weights, precision).expect("builds")
    }

    fn tiny_config() -> BertConfig {
        BertConfig {
            vocab_size: 50,
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 128,
            max_position_embeddings: 40,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
        }
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
        let graph = tiny_graph(EmbedPrecision::F32);
        let seqs = seqs();
        let batched = graph.run_batched(&seqs, None).expect("runs");
        assert_eq!(batched.len(), seqs.len());
        for (seq, v) in seqs.iter().zip(&batched) {
            let alone = graph.run(&[seq], None).expect("runs").remove(0);
            let c = cosine(v, &alone);
            assert!(c > 0.99999, "{} tokens: cosine {c}", seq.len());
        }
        // Distinct texts give distinct vectors, so an order mix-up would show.
        assert!(cosine(&batched[0], &batched[1]) < 0.999);
    }

    #[test]
    fn the_q8_graph_stays_close_to_the_f32_graph_and_batches_as_exactly() {
        let (f32_graph, q8_graph) = (
            tiny_graph(EmbedPrecision::F32),
            tiny_graph(EmbedPrecision::Q8),
        );
        let seqs = seqs();
        let exact = f32_graph.run_batched(&seqs, None).expect("runs");
        let q8 = q8_graph.run_batched(&seqs, None).expect("runs");
        for (i, (a, b)) in exact.iter().zip(&q8).enumerate() {
            let c = cosine(a, b);
            assert!(c > 0.99, "text {i}: cosine {c}");
            assert!(
                c < 1.0 - 1e-7,
                "text {i}: the Q8 vector is the f32 one ({c})"
            );
            let alone = q8_graph.run(&[&seqs[i]], None).expect("runs").remove(0);
            assert!(cosine(b, &alone) > 0.99999, "text {i} alone");
        }
    }

    #[test]
    fn the_exported_file_is_a_standard_onnx_graph_tract_runs_alike() {
        use prost::Message;
        let weights = BertWeights::seeded(tiny_config(), 11);
        let proto =
            bert_model_proto(&weights, EmbedPrecision::F32, Attention::Onnx).expect("proto");
        let bytes = proto.encode_to_vec();
        let model = tract_onnx::onnx()
            .model_for_read(&mut bytes.as_slice())
            .and_then(|m| m.into_optimized())
            .expect("tract's own parser reads it");
        let graph = EncoderGraph {
            plan: TypedSimplePlan::new(model).expect("plans"),
            dim: 64,
        };
        let seqs = seqs();
        let a = graph.run_batched(&seqs, None).expect("runs");
        let b = tiny_graph(EmbedPrecision::F32)
            .run_batched(&seqs, None)
            .expect("runs");
        for (x, y) in a.iter().zip(&b) {
            let c = cosine(x, y);
            assert!(c > 0.99999, "standard and fused attention: cosine {c}");
        }
    }

    #[test]
    fn cosine_of_parallel_opposite_and_zero_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert!((cosine(&[1.0, 0.0], &[-3.0, 0.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }
}
