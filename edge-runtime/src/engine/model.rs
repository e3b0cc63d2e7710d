//! Loading an ONNX model folder into tract and running it: the folder layout (Hugging Face
//! Optimum's: `model.onnx` or `onnx/model*.onnx`, `config.json`, `generation_config.json`,
//! `tokenizer.json`, `tokenizer_config.json`), the I/O convention (`input_ids`,
//! `attention_mask`, `position_ids`, `past_key_values.{i}.key|value` -> `logits`,
//! `present.{i}.key|value`, found by name), and one forward pass over a KV-cache state.
//!
//! The optimised graph is run through two plans sharing its weights: one computing every
//! output, and one computing only the KV cache. A prompt whose last logits alone are wanted
//! runs all but its last token through the second, so the vocabulary-sized head (the largest
//! product of a small model) runs once per prompt instead of once per prompt token.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use tract_onnx::prelude::{
    Framework, InferenceModel, InferenceModelExt, TValue, TVec, Tensor, TypedModel,
    TypedSimplePlan, TypedSimpleState,
};
use tract_onnx::tract_core::transform::get_transform;

use super::chat::ChatTemplate;
use super::kv_attention::{self, KvAttention, KvAttentionState, LayerCache};
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

/// Largest value accepted for each `config.json` size, with its key: far above any model
/// this runtime can run, and low enough that nothing sized from them explodes.
const CONFIG_LIMITS: [(&str, usize); 5] = [
    ("vocab_size", 1 << 22),
    ("num_hidden_layers", 1 << 10),
    ("num_attention_heads", 1 << 10),
    ("hidden_size", 1 << 16),
    ("max_position_embeddings", 1 << 22),
];

impl ModelConfig {
    /// Checks the sizes before a graph is built from them: each is above 0 and within its
    /// limit, `hidden_size` divides into the query heads, and the key/value heads divide
    /// the query heads. The error names the key.
    pub fn validate(&self) -> Result<()> {
        let values = [
            self.vocab_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.hidden_size,
            self.max_position_embeddings,
        ];
        for ((key, limit), value) in CONFIG_LIMITS.iter().zip(values) {
            ensure!(
                (1..=*limit).contains(&value),
                "config.json: {key} is {value}; it must be 1 to {limit}"
            );
        }
        let heads = self.num_attention_heads;
        ensure!(
            self.hidden_size.is_multiple_of(heads),
            "config.json: hidden_size {} is not a multiple of num_attention_heads {heads}",
            self.hidden_size
        );
        if let Some(kv) = self.num_key_value_heads {
            ensure!(
                kv > 0 && heads.is_multiple_of(kv),
                "config.json: num_key_value_heads is {kv}; it must be above 0 and divide \
                 num_attention_heads {heads}"
            );
        }
        Ok(())
    }
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
    /// (input index, output index) of each cache tensor, in layer order, key before value;
    /// empty when the graph's attention owns its cache ([`KvAttention`]).
    caches: Vec<(usize, usize)>,
    logits: usize,
    n_inputs: usize,
    /// Shape of an empty cache tensor: `[1, kv_heads, 0, head_dim]`.
    empty_cache_shape: [usize; 4],
}

impl IoMap {
    /// After `unfold-kv-cache`, inputs keep their places and names while outputs are the
    /// regular ones followed by one per cache input, in input order.
    fn remap_after_unfold(&mut self, model: &TypedModel, input_names: &[String]) -> Result<()> {
        ensure!(
            model.inputs.len() == input_names.len(),
            "the optimised model has {} inputs, the ONNX graph {}",
            model.inputs.len(),
            input_names.len()
        );
        for (i, (outlet, name)) in model.inputs.iter().zip(input_names).enumerate() {
            let now = &model.node(outlet.node).name;
            ensure!(
                now == name,
                "input #{i} is {now:?} after optimisation, was {name:?}"
            );
        }
        let n_out = model.outputs.len();
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
    /// Computes every output.
    plan: Arc<TypedSimplePlan>,
    /// Computes only the cache outputs, in `io.caches` order (or, with [`KvAttention`],
    /// only as far as the last layer's attention).
    cache_plan: Arc<TypedSimplePlan>,
    io: IoMap,
    /// Node of each layer's [`KvAttention`], in layer order; empty for a graph with cache
    /// I/O. The same ids in both plans.
    attention: Vec<usize>,
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

/// What [`LoadedModel::load_plans`] builds from the graph.
struct Plans {
    plan: Arc<TypedSimplePlan>,
    cache_plan: Arc<TypedSimplePlan>,
    io: IoMap,
    attention: Vec<usize>,
}

impl LoadedModel {
    /// Loads and optimises the model folder at `dir`.
    pub fn load(dir: &Path) -> Result<Arc<Self>> {
        let onnx_path = find_onnx(dir)?;
        let config: ModelConfig = read_json(&dir.join("config.json"))?;
        config.validate()?;
        let (tokenizer, chat_template, eos_ids) = Self::load_text(dir, &config)?;
        let Plans {
            plan,
            cache_plan,
            io,
            attention,
        } = Self::load_plans(&onnx_path, &config)?;
        Ok(Arc::new(LoadedModel {
            dir: dir.to_path_buf(),
            config,
            tokenizer,
            chat_template,
            eos_ids,
            plan,
            cache_plan,
            io,
            attention,
        }))
    }

    /// The tokenizer (checked against the vocabulary), the chat template and the end ids.
    fn load_text(
        dir: &Path,
        config: &ModelConfig,
    ) -> Result<(TextTokenizer, Option<ChatTemplate>, Vec<u32>)> {
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

        Ok((tokenizer, chat_template, eos_ids))
    }

    /// The graph parsed, fused and optimised for this CPU, planned twice: every output, and
    /// the cache pass (up to the caches only).
    fn load_plans(onnx_path: &Path, config: &ModelConfig) -> Result<Plans> {
        let (model, fused) = parse_onnx(onnx_path)?;
        let mut io = Self::map_io(&model, config, fused)?;
        let input_names: Vec<String> = model
            .inputs
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        let mut model = model
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .context("analysing the ONNX graph")?;
        // Fused RMSNorm / RoPE / attention; past->present concatenations (a graph without
        // KvAttention) become KV-cache ops, then are unfolded back into explicit inputs
        // (same places) and outputs (after the regular outputs, in cache-input order).
        for (name, what) in [
            ("transformers_detect_all", "detecting transformer patterns"),
            ("unfold-kv-cache", "exposing the KV cache as model I/O"),
        ] {
            get_transform(name)
                .and_then(|t| t.with_context(|| format!("tract has no transform {name:?}")))
                .and_then(|t| t.transform(&mut model))
                .and_then(|()| model.declutter())
                .context(what)?;
        }
        io.remap_after_unfold(&model, &input_names)?;
        let model = Arc::new(
            model
                .into_optimized()
                .context("optimising the model for this CPU")?,
        );
        let attention = attention_nodes(&model, config)?;
        let plan = TypedSimplePlan::new(model.clone()).context("planning the model")?;
        let mut cache_model = (*model).clone();
        let cache_outlets = if attention.is_empty() {
            io.caches
                .iter()
                .map(|&(_, o)| model.outputs.get(o).copied())
                .collect::<Option<Vec<_>>>()
                .context("a cache output is missing from the optimised model")?
        } else {
            attention.iter().map(|&n| n.into()).collect()
        };
        cache_model.select_output_outlets(&cache_outlets)?;
        let cache_plan = TypedSimplePlan::new(cache_model).context("planning the cache pass")?;
        Ok(Plans {
            plan,
            cache_plan,
            io,
            attention,
        })
    }

    fn map_io(model: &InferenceModel, config: &ModelConfig, fused: bool) -> Result<IoMap> {
        let n_inputs = model.inputs.len();
        let mut input_ids = None;
        let mut attention_mask = None;
        let mut position_ids = None;
        let mut past = vec![];
        for (i, outlet) in model.inputs.iter().enumerate() {
            let name = &model.node(outlet.node).name;
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
        for (o, outlet) in model.outputs.iter().enumerate() {
            let name = &model.node(outlet.node).name;
            if name == "logits" {
                logits = Some(o);
            } else if let Some((layer, is_key)) = parse_cache_name(name, "present.") {
                present.push((layer, is_key, o));
            }
        }
        let input_ids = input_ids.context("the model has no `input_ids` input")?;
        let logits = logits.context("the model has no `logits` output")?;
        let layers = if fused { 0 } else { config.num_hidden_layers };
        ensure!(
            past.len() == 2 * layers,
            "the model has {} past_key_values inputs, config.json says {} layers",
            past.len(),
            layers
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

/// Parses the ONNX graph at `path`; a graph written by this crate's exporter gets its
/// attention fused into [`KvAttention`] nodes (the `bool`).
fn parse_onnx(path: &Path) -> Result<(InferenceModel, bool)> {
    let mut onnx = super::ggml_op::onnx();
    kv_attention::register(&mut onnx);
    let loading = || format!("loading {}", path.display());
    let mut proto = onnx.proto_model_for_path(path).with_context(loading)?;
    let fused = kv_attention::fuse_attention(&mut proto).with_context(loading)?;
    let dir = path.parent().and_then(Path::to_str);
    let parsed = onnx.parse(&proto, dir).with_context(loading)?;
    ensure!(
        parsed.unresolved_inputs.is_empty(),
        "loading {}: unresolved inputs {:?}",
        path.display(),
        parsed.unresolved_inputs
    );
    Ok((parsed.model, fused))
}

/// The [`KvAttention`] node of every layer, in layer order (empty when there is none).
fn attention_nodes(model: &TypedModel, config: &ModelConfig) -> Result<Vec<usize>> {
    let mut found: Vec<(usize, usize)> = model
        .nodes()
        .iter()
        .filter_map(|n| n.op_as::<KvAttention>().map(|op| (op.layer, n.id)))
        .collect();
    found.sort_unstable();
    let layers: Vec<usize> = found.iter().map(|&(l, _)| l).collect();
    ensure!(
        layers.is_empty() || layers == (0..config.num_hidden_layers).collect::<Vec<_>>(),
        "the graph's attention nodes cover layers {layers:?}, config.json says {}",
        config.num_hidden_layers
    );
    Ok(found.into_iter().map(|(_, n)| n).collect())
}

/// The KV cache of one conversation plus the tokens it holds.
#[derive(Debug)]
pub struct KvState {
    model: Arc<LoadedModel>,
    /// Cache tensors fed in and read back, for a graph with cache I/O.
    caches: Vec<TValue>,
    /// Per-layer caches lent to the [`KvAttention`] nodes for each run, otherwise.
    layers: Vec<LayerCache>,
    /// Run states of the full and the cache-only plan (graphs with [`KvAttention`] only).
    runs: Option<Box<[TypedSimpleState; 2]>>,
    tokens: Vec<u32>,
}

/// Which of the two plans a pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// Every output (logits).
    Full = 0,
    /// Only as far as the cache.
    Cache = 1,
}

impl KvState {
    /// An empty cache for `model`.
    pub fn new(model: Arc<LoadedModel>) -> Result<Self> {
        let caches = Self::empty_caches(&model)?;
        let runs = if model.attention.is_empty() {
            None
        } else {
            Some(Box::new([model.plan.spawn()?, model.cache_plan.spawn()?]))
        };
        Ok(KvState {
            layers: vec![LayerCache::default(); model.attention.len()],
            model,
            caches,
            runs,
            tokens: vec![],
        })
    }

    fn empty_caches(model: &LoadedModel) -> Result<Vec<TValue>> {
        let empty: TValue = Tensor::zero::<f32>(&model.io.empty_cache_shape)?.into();
        Ok(vec![empty; model.io.caches.len()])
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
        self.layers.iter_mut().for_each(LayerCache::clear);
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
            *cache = cache.slice(2, 0, len)?.into();
        }
        for layer in self.layers.iter_mut() {
            layer.truncate(len);
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
        let model = self.model.clone();
        let io = &model.io;
        // Only the last logits wanted: every token but the last fills the cache alone.
        let (head, last) = match new_tokens.split_last() {
            Some((last, head)) if !all_rows && !head.is_empty() => {
                (head, std::slice::from_ref(last))
            }
            _ => (&new_tokens[..0], new_tokens),
        };
        let mut caches = self.caches.clone();
        if !head.is_empty() {
            let inputs = self.inputs(head, past, &caches)?;
            let outputs = self.run(Pass::Cache, inputs, past)?;
            if self.runs.is_none() {
                ensure!(
                    outputs.len() == caches.len(),
                    "the cache pass returned {} tensors for {} caches",
                    outputs.len(),
                    caches.len()
                );
                caches = outputs.into_vec();
            }
        }
        let n = last.len();
        let inputs = self.inputs(last, past + head.len(), &caches)?;
        let outputs = self.run(Pass::Full, inputs, past)?;
        let logits = outputs.get(io.logits).context("no logits output")?;
        let shape = logits.shape();
        let plain = logits.try_as_plain_ram()?;
        let data = plain.as_slice::<f32>()?;
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
        for (cache, &(_, o)) in caches.iter_mut().zip(&io.caches) {
            *cache = outputs.get(o).context("a cache output is missing")?.clone();
        }
        self.caches = caches;
        self.tokens.extend_from_slice(new_tokens);
        Ok(logits)
    }

    /// Runs one plan. With [`KvAttention`] the layer caches are moved into the plan's op
    /// states for the run and back out after it; a failed run leaves them at `past` slots.
    fn run(&mut self, pass: Pass, inputs: TVec<TValue>, past: usize) -> Result<TVec<TValue>> {
        let Some(runs) = self.runs.as_mut() else {
            let plan = match pass {
                Pass::Full => &self.model.plan,
                Pass::Cache => &self.model.cache_plan,
            };
            return plan.run(inputs);
        };
        let state = &mut runs[pass as usize];
        swap_layers(state, &self.model.attention, &mut self.layers)?;
        let result = state.run(inputs);
        swap_layers(state, &self.model.attention, &mut self.layers)?;
        if result.is_err() {
            self.layers.iter_mut().for_each(|l| l.truncate(past));
        }
        result
    }

    /// The model inputs for `tokens` placed after `past` cached ones, read from `caches`.
    fn inputs(&self, tokens: &[u32], past: usize, caches: &[TValue]) -> Result<TVec<TValue>> {
        let io = &self.model.io;
        let n = tokens.len();
        let total = past + n;
        let mut inputs: Vec<Option<TValue>> = vec![None; io.n_inputs];
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        inputs[io.input_ids] = Some(Tensor::from_shape(&[1, n], &ids)?.into());
        if let Some(i) = io.attention_mask {
            inputs[i] = Some(Tensor::from_shape(&[1, total], &vec![1i64; total])?.into());
        }
        if let Some(i) = io.position_ids {
            let pos: Vec<i64> = (past as i64..total as i64).collect();
            inputs[i] = Some(Tensor::from_shape(&[1, n], &pos)?.into());
        }
        for (&(i, _), cache) in io.caches.iter().zip(caches) {
            inputs[i] = Some(cache.clone());
        }
        inputs
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.with_context(|| format!("model input #{i} has no value")))
            .collect()
    }
}

/// Swaps each layer's cache with the one held by its [`KvAttention`] node's state in `run`.
fn swap_layers(
    run: &mut TypedSimpleState,
    nodes: &[usize],
    layers: &mut [LayerCache],
) -> Result<()> {
    for (&node, layer) in nodes.iter().zip(layers) {
        let held = run
            .op_states
            .get_mut(node)
            .and_then(Option::as_mut)
            .and_then(|s| s.downcast_mut::<KvAttentionState>())
            .with_context(|| format!("node {node} has no attention state"))?;
        std::mem::swap(&mut held.cache, layer);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::WeightFormat;
    use crate::engine::import::write_tiny_model;

    #[test]
    fn last_logits_of_a_prompt_equal_the_last_row_of_all_logits() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tiny");
        write_tiny_model(&path, 3, WeightFormat::F32)?;
        let model = LoadedModel::load(&path)?;
        let vocab = model.vocab_size();
        let tokens: Vec<u32> = (0..11u32).map(|i| (i * 41 + 7) % 256).collect();

        let mut all = KvState::new(model.clone())?;
        let rows = all.forward_all(&tokens)?;
        let mut last = KvState::new(model)?;
        let row = last.forward(&tokens)?;
        let diff = row
            .iter()
            .zip(&rows[(tokens.len() - 1) * vocab..])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "last logits differ by {diff}");

        // Both states hold the same cache: the next token's logits agree too.
        let next_all = all.forward(&[9])?;
        let next_last = last.forward(&[9])?;
        let diff = next_all
            .iter()
            .zip(&next_last)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "the caches differ: next logits by {diff}");
        assert_eq!(last.tokens().len(), tokens.len() + 1);
        Ok(())
    }

    fn tiny_with(edit: impl FnOnce(&Path)) -> Result<(tempfile::TempDir, PathBuf)> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tiny");
        write_tiny_model(&path, 3, WeightFormat::F32)?;
        edit(&path);
        Ok((dir, path))
    }

    fn set_config_key(dir: &Path, key: &str, value: serde_json::Value) {
        let p = dir.join("config.json");
        let text = std::fs::read_to_string(&p).expect("config.json");
        let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
        json[key] = value;
        std::fs::write(&p, json.to_string()).expect("writing config.json");
    }

    #[test]
    fn refuses_config_sizes_the_graph_cannot_have_naming_the_key() -> Result<()> {
        let cases: [(&str, serde_json::Value); 9] = [
            ("num_key_value_heads", 0.into()),
            ("num_key_value_heads", 3.into()),
            ("num_attention_heads", 0.into()),
            ("num_attention_heads", 7.into()),
            ("hidden_size", 0.into()),
            ("vocab_size", 0.into()),
            ("vocab_size", (1u64 << 40).into()),
            ("max_position_embeddings", 0.into()),
            ("num_hidden_layers", 1_000_000.into()),
        ];
        for (key, value) in cases {
            let (_dir, path) = tiny_with(|p| set_config_key(p, key, value.clone()))?;
            let err = LoadedModel::load(&path).expect_err(key);
            let text = format!("{err:#}");
            let named = if key == "num_attention_heads" && value == 7 {
                "hidden_size"
            } else {
                key
            };
            assert!(text.contains(named), "{key} = {value}: {text}");
            assert!(!text.contains("Clashing"), "{key} = {value}: {text}");
        }
        Ok(())
    }

    #[test]
    fn refuses_a_tokenizer_with_an_empty_vocabulary() -> Result<()> {
        let (_dir, path) = tiny_with(|p| {
            let file = p.join("tokenizer.json");
            let text = std::fs::read_to_string(&file).expect("tokenizer.json");
            let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
            json["model"]["vocab"] = serde_json::json!({});
            json["model"]["merges"] = serde_json::json!([]);
            json["added_tokens"] = serde_json::json!([]);
            std::fs::write(&file, json.to_string()).expect("writing tokenizer.json");
        })?;
        let err = LoadedModel::load(&path).expect_err("empty vocabulary");
        assert!(format!("{err:#}").contains("vocab"), "{err:#}");
        Ok(())
    }
}
