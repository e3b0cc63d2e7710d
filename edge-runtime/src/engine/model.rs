//! Loading an ONNX model folder into tract and running it: the folder layout (Hugging Face
//! Optimum's: `model.onnx` or `onnx/model*.onnx`, `config.json`, `generation_config.json`,
//! `tokenizer.json`, `tokenizer_config.json`), the I/O convention (`input_ids`,
//! `attention_mask`, `position_ids`, `past_key_values.{i}.key|value` -> `logits`,
//! `present.{i}.key|value`, found by name), and one forward pass over a KV-cache state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use tract::prelude::*;

use super::chat::ChatTemplate;
use super::tokenizer::TextTokenizer;

/// The fields of `config.json` the engine needs.
#[derive(Clone, Debug, Deserialize)]
pub struct ModelConfig {
    /// Rows of the embedding table; the tokenizer must not produce ids past it.
    pub vocab_size: usize,
    /// Number of decoder blocks (one K and one V cache each).
    pub num_hidden_layers: usize,
    /// Key/value heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// Context length in tokens.
    pub max_position_embeddings: usize,
}

/// `generation_config.json`: which tokens end an answer.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct GenerationConfig {
    /// Beginning-of-sequence token.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token(s): one id or a list.
    #[serde(default)]
    pub eos_token_id: Option<OneOrMany>,
}

/// A JSON value that is either one id or a list of ids.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

#[derive(Debug, Default, Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    chat_template: Option<String>,
    #[serde(default)]
    bos_token: Option<TokenString>,
    #[serde(default)]
    eos_token: Option<TokenString>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenString {
    Plain(String),
    Added { content: String },
}

impl TokenString {
    fn text(&self) -> &str {
        match self {
            TokenString::Plain(s) => s,
            TokenString::Added { content } => content,
        }
    }
}

/// Finds the ONNX graph of a model folder: `model.onnx`, else the first `onnx/model*.onnx`.
pub fn find_onnx(dir: &Path) -> Result<PathBuf> {
    ensure!(
        dir.is_dir(),
        "model folder {} does not exist or is not a folder",
        dir.display()
    );
    let direct = dir.join("model.onnx");
    if direct.is_file() {
        return Ok(direct);
    }
    let sub = dir.join("onnx");
    if sub.is_dir() {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&sub)
            .with_context(|| format!("reading {}", sub.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("model") && n.ends_with(".onnx"))
            })
            .collect();
        found.sort();
        if let Some(first) = found.into_iter().next() {
            return Ok(first);
        }
    }
    bail!("no model.onnx (or onnx/model*.onnx) in {}", dir.display())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Where each named input and output sits in the graph.
#[derive(Clone, Debug)]
struct IoMap {
    input_ids: usize,
    attention_mask: Option<usize>,
    position_ids: Option<usize>,
    /// (input index, output index) of each cache tensor, in layer order, key before value.
    caches: Vec<(usize, usize)>,
    logits: usize,
    n_inputs: usize,
    /// Shape of an empty cache tensor: `[1, kv_heads, 0, head_dim]`.
    empty_cache_shape: [usize; 4],
}

impl IoMap {
    /// After `unfold-kv-cache`, inputs keep their places and names while outputs are the
    /// regular ones followed by one per cache input, in input order.
    fn remap_after_unfold(&mut self, model: &Model, input_names: &[String]) -> Result<()> {
        ensure!(
            model.input_count()? == input_names.len(),
            "the optimised model has {} inputs, the ONNX graph {}",
            model.input_count()?,
            input_names.len()
        );
        for (i, name) in input_names.iter().enumerate() {
            let now = model.input_name(i)?;
            ensure!(
                &now == name,
                "input #{i} is {now:?} after optimisation, was {name:?}"
            );
        }
        let n_out = model.output_count()?;
        let n_cache = self.caches.len();
        ensure!(
            n_out > n_cache,
            "the optimised model has only {n_out} outputs"
        );
        let n_regular = n_out - n_cache;
        ensure!(
            self.logits < n_regular,
            "the logits output moved during optimisation"
        );
        let mut by_input: Vec<usize> = self.caches.iter().map(|&(i, _)| i).collect();
        by_input.sort_unstable();
        for cache in self.caches.iter_mut() {
            let rank = by_input
                .iter()
                .position(|&i| i == cache.0)
                .context("cache input lost")?;
            cache.1 = n_regular + rank;
        }
        Ok(())
    }
}

/// A loaded model folder, ready to run. Cheap to share between sessions.
#[derive(Debug)]
pub struct LoadedModel {
    /// The folder it came from.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: ModelConfig,
    /// The tokenizer, checked against the model's vocabulary.
    pub tokenizer: TextTokenizer,
    /// The chat template, when the folder has one.
    pub chat_template: Option<ChatTemplate>,
    /// Token ids that end generation.
    pub eos_ids: Vec<u32>,
    runnable: Runnable,
    io: IoMap,
}

fn parse_cache_name(name: &str, prefix: &str) -> Option<(usize, bool)> {
    let rest = name.strip_prefix(prefix)?;
    let (layer, kind) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    match kind {
        "key" => Some((layer, true)),
        "value" => Some((layer, false)),
        _ => None,
    }
}

impl LoadedModel {
    /// Loads and optimises the model folder at `dir`.
    pub fn load(dir: &Path) -> Result<Arc<Self>> {
        let onnx_path = find_onnx(dir)?;
        let config: ModelConfig = read_json(&dir.join("config.json"))?;
        let generation: GenerationConfig = {
            let p = dir.join("generation_config.json");
            if p.is_file() {
                read_json(&p)?
            } else {
                GenerationConfig::default()
            }
        };
        let tok_config: TokenizerConfig = {
            let p = dir.join("tokenizer_config.json");
            if p.is_file() {
                read_json(&p)?
            } else {
                TokenizerConfig::default()
            }
        };
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        ensure!(
            tokenizer.vocab_size() <= config.vocab_size,
            "tokenizer.json has {} tokens but the model's vocabulary has only {} rows: \
             the tokenizer does not belong to this model",
            tokenizer.vocab_size(),
            config.vocab_size
        );
        let chat_template = match &tok_config.chat_template {
            Some(src) => Some(ChatTemplate::new(
                src,
                tok_config
                    .bos_token
                    .as_ref()
                    .map(TokenString::text)
                    .unwrap_or(""),
                tok_config
                    .eos_token
                    .as_ref()
                    .map(TokenString::text)
                    .unwrap_or(""),
            )?),
            None => None,
        };
        let mut eos_ids: Vec<u32> = match generation.eos_token_id {
            Some(OneOrMany::One(id)) => vec![id],
            Some(OneOrMany::Many(ids)) => ids,
            None => vec![],
        };
        if let Some(eos) = tok_config
            .eos_token
            .as_ref()
            .and_then(|t| tokenizer.token_id(t.text()))
            && !eos_ids.contains(&eos)
        {
            eos_ids.push(eos);
        }

        let model = tract::onnx()?
            .load(&onnx_path)
            .with_context(|| format!("loading {}", onnx_path.display()))?;
        let mut io = Self::map_io(&model, &config)?;
        let input_names: Vec<String> = (0..model.input_count()?)
            .map(|i| model.input_name(i))
            .collect::<Result<_>>()?;
        let mut model = model.into_model().context("analysing the ONNX graph")?;
        // Fused RMSNorm / RoPE / attention; the past->present concatenations become KV-cache
        // ops, then are unfolded back into explicit inputs (same places) and outputs (after
        // the regular outputs, in cache-input order).
        model
            .transform("transformers_detect_all")
            .context("detecting transformer patterns")?;
        model
            .transform("unfold-kv-cache")
            .context("exposing the KV cache as model I/O")?;
        io.remap_after_unfold(&model, &input_names)?;
        let runnable = runtime_for_name("default")?
            .prepare(model)
            .context("optimising the model for this CPU")?;
        Ok(Arc::new(LoadedModel {
            dir: dir.to_path_buf(),
            config,
            tokenizer,
            chat_template,
            eos_ids,
            runnable,
            io,
        }))
    }

    fn map_io(model: &InferenceModel, config: &ModelConfig) -> Result<IoMap> {
        let n_inputs = model.input_count()?;
        let mut input_ids = None;
        let mut attention_mask = None;
        let mut position_ids = None;
        let mut past = vec![];
        for i in 0..n_inputs {
            let name = model.input_name(i)?;
            match name.as_str() {
                "input_ids" => input_ids = Some(i),
                "attention_mask" => attention_mask = Some(i),
                "position_ids" => position_ids = Some(i),
                other => match parse_cache_name(other, "past_key_values.") {
                    Some((layer, is_key)) => past.push((layer, is_key, i)),
                    None => bail!("unexpected model input {other:?}"),
                },
            }
        }
        let mut logits = None;
        let mut present = vec![];
        for o in 0..model.output_count()? {
            let name = model.output_name(o)?;
            if name == "logits" {
                logits = Some(o);
            } else if let Some((layer, is_key)) = parse_cache_name(&name, "present.") {
                present.push((layer, is_key, o));
            }
        }
        let input_ids = input_ids.context("the model has no `input_ids` input")?;
        let logits = logits.context("the model has no `logits` output")?;
        ensure!(
            past.len() == 2 * config.num_hidden_layers,
            "the model has {} past_key_values inputs, config.json says {} layers",
            past.len(),
            config.num_hidden_layers
        );
        past.sort_by_key(|&(layer, is_key, _)| (layer, !is_key));
        present.sort_by_key(|&(layer, is_key, _)| (layer, !is_key));
        let mut caches = vec![];
        for (&(l, k, i), present) in past
            .iter()
            .zip(present.iter().map(Some).chain(std::iter::repeat(None)))
        {
            let &(pl, pk, o) = present
                .with_context(|| format!("no present.{l} output for past_key_values.{l}"))?;
            ensure!(
                pl == l && pk == k,
                "present outputs do not pair with past_key_values inputs at layer {l}"
            );
            caches.push((i, o));
        }
        let kv_heads = config
            .num_key_value_heads
            .unwrap_or(config.num_attention_heads);
        ensure!(
            config.num_attention_heads > 0,
            "config.json: num_attention_heads is 0"
        );
        let head_dim = config.hidden_size / config.num_attention_heads;
        Ok(IoMap {
            input_ids,
            attention_mask,
            position_ids,
            caches,
            logits,
            n_inputs,
            empty_cache_shape: [1, kv_heads, 0, head_dim],
        })
    }

    /// Maximum number of tokens (prompt plus answer) a session can hold.
    pub fn context_length(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Number of rows of a logits vector.
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
}

/// The KV cache of one conversation plus the tokens it holds.
#[derive(Debug)]
pub struct KvState {
    model: Arc<LoadedModel>,
    caches: Vec<Tensor>,
    tokens: Vec<u32>,
}

impl KvState {
    /// An empty cache for `model`.
    pub fn new(model: Arc<LoadedModel>) -> Result<Self> {
        let caches = Self::empty_caches(&model)?;
        Ok(KvState {
            model,
            caches,
            tokens: vec![],
        })
    }

    fn empty_caches(model: &LoadedModel) -> Result<Vec<Tensor>> {
        let shape = model.io.empty_cache_shape;
        model
            .io
            .caches
            .iter()
            .map(|_| Tensor::from_slice::<f32>(&shape, &[]))
            .collect()
    }

    /// The model this state belongs to.
    pub fn model(&self) -> &Arc<LoadedModel> {
        &self.model
    }

    /// Tokens already in the cache, oldest first.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Empties the cache.
    pub fn reset(&mut self) -> Result<()> {
        self.caches = Self::empty_caches(&self.model)?;
        self.tokens.clear();
        Ok(())
    }

    /// Keeps only the first `len` cached tokens (for a conversation that diverged).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.tokens.len() {
            return Ok(());
        }
        if len == 0 {
            return self.reset();
        }
        for cache in self.caches.iter_mut() {
            *cache = cache.sliced(2, 0, len)?;
        }
        self.tokens.truncate(len);
        Ok(())
    }

    /// Runs `new_tokens` through the model after the cached ones and returns the logits of
    /// the last position. Fails, changing nothing, when the context would overflow or an id
    /// is outside the vocabulary.
    pub fn forward(&mut self, new_tokens: &[u32]) -> Result<Vec<f32>> {
        self.run_pass(new_tokens, false)
    }

    /// Like [`KvState::forward`] but returns the logits of every new position, row after
    /// row (`new_tokens.len() * vocab` values), for perplexity and tests.
    pub fn forward_all(&mut self, new_tokens: &[u32]) -> Result<Vec<f32>> {
        self.run_pass(new_tokens, true)
    }

    fn run_pass(&mut self, new_tokens: &[u32], all_rows: bool) -> Result<Vec<f32>> {
        ensure!(!new_tokens.is_empty(), "nothing to run: no tokens");
        let past = self.tokens.len();
        let total = past + new_tokens.len();
        let limit = self.model.context_length();
        ensure!(
            total <= limit,
            "{total} tokens exceed the model's context of {limit} tokens ({past} already in context)"
        );
        let vocab = self.model.vocab_size();
        if let Some(bad) = new_tokens.iter().find(|&&t| t as usize >= vocab) {
            bail!("token id {bad} is outside the model's vocabulary of {vocab}");
        }
        let io = &self.model.io;
        let n = new_tokens.len();
        let mut inputs: Vec<Option<Tensor>> = (0..io.n_inputs).map(|_| None).collect();
        let ids: Vec<i64> = new_tokens.iter().map(|&t| t as i64).collect();
        inputs[io.input_ids] = Some(Tensor::from_slice(&[1, n], &ids)?);
        if let Some(i) = io.attention_mask {
            inputs[i] = Some(Tensor::from_slice(&[1, total], &vec![1i64; total])?);
        }
        if let Some(i) = io.position_ids {
            let pos: Vec<i64> = (past as i64..total as i64).collect();
            inputs[i] = Some(Tensor::from_slice(&[1, n], &pos)?);
        }
        for ((i, _), cache) in io.caches.iter().zip(self.caches.iter()) {
            inputs[*i] = Some(cache.clone());
        }
        let inputs: Vec<Tensor> = inputs
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.with_context(|| format!("model input #{i} has no value")))
            .collect::<Result<_>>()?;
        let outputs = self.model.runnable.run(inputs)?;
        let (shape, data) = outputs[io.logits].as_shape_and_slice::<f32>()?;
        let row = *shape.last().context("logits has rank 0")?;
        ensure!(
            row == vocab && data.len() >= row,
            "logits shape {shape:?} does not match the vocabulary of {vocab}"
        );
        let logits = if all_rows {
            ensure!(
                data.len() == n * vocab,
                "the model returns logits for {} positions, {n} were asked for",
                data.len() / vocab
            );
            data.to_vec()
        } else {
            data[data.len() - row..].to_vec()
        };
        for (k, &(_, o)) in io.caches.iter().enumerate() {
            self.caches[k] = outputs[o].clone();
        }
        self.tokens.extend_from_slice(new_tokens);
        Ok(logits)
    }
}
