//! LoRA adapters: which projections of which layers carry a low-rank update
//! `ΔW = (alpha / rank) · B · A` (`A: [rank, in]`, `B: [out, rank]`), their trainable
//! variables, and the Hugging Face PEFT file format (`adapter_model.safetensors` with
//! `base_model.model.model.layers.{i}.{self_attn|mlp}.{proj}.lora_{A|B}.weight` tensors and
//! `adapter_config.json`). Rows are in Hugging Face order, the order [`LlamaWeights`] uses
//! after the GGUF importer has undone llama.cpp's Q/K row permutation, so an adapter maps
//! onto PEFT's view of the same model without any permutation.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::atomic::write_atomically;
use crate::engine::llama::{LlamaConfig, LlamaWeights, WeightData};

/// Name of the adapter weights file (PEFT).
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// Name of the adapter configuration file (PEFT).
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// Named f32 tensors: name -> (shape, row-major values).
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// A projection that can carry an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Target {
    /// `self_attn.q_proj`.
    Q,
    /// `self_attn.k_proj`.
    K,
    /// `self_attn.v_proj`.
    V,
    /// `self_attn.o_proj`.
    O,
    /// `mlp.gate_proj`.
    Gate,
    /// `mlp.up_proj`.
    Up,
    /// `mlp.down_proj`.
    Down,
}

impl Target {
    /// Every target, in layer order.
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// PEFT's module name (`q_proj`, ...).
    pub fn module(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// The module's parent in the Hugging Face layer (`self_attn` or `mlp`).
    pub fn parent(self) -> &'static str {
        match self {
            Target::Q | Target::K | Target::V | Target::O => "self_attn",
            Target::Gate | Target::Up | Target::Down => "mlp",
        }
    }

    /// Parses a PEFT module name.
    pub fn from_module(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.module() == name)
    }

    /// Hugging Face name of the base weight this target adapts in layer `layer`.
    pub fn weight_name(self, layer: usize) -> String {
        format!(
            "model.layers.{layer}.{}.{}.weight",
            self.parent(),
            self.module()
        )
    }

    /// Shape `[out, in]` of the projection in a model with config `c`.
    pub fn shape(self, c: &LlamaConfig) -> (usize, usize) {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let q = c.num_attention_heads * c.head_dim();
        let kv = c.num_key_value_heads * c.head_dim();
        match self {
            Target::Q => (q, h),
            Target::K | Target::V => (kv, h),
            Target::O => (h, q),
            Target::Gate | Target::Up => (i, h),
            Target::Down => (h, i),
        }
    }
}

/// What to adapt and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank of every update.
    pub rank: usize,
    /// Scale numerator: the update is `alpha / rank · B·A`.
    pub alpha: f32,
    /// Dropout on the adapter's input while training.
    pub dropout: f32,
    /// Adapted projections.
    pub targets: Vec<Target>,
    /// Adapted layers, ascending.
    pub layers: Vec<usize>,
}

impl LoraConfig {
    /// `rank`/`alpha`/`dropout` on `targets`, on the top `top_layers` of `num_layers` (all
    /// when `None`).
    pub fn new(
        rank: usize,
        alpha: f32,
        dropout: f32,
        targets: Vec<Target>,
        num_layers: usize,
        top_layers: Option<usize>,
    ) -> Result<Self> {
        ensure!(rank >= 1, "the LoRA rank must be at least 1");
        ensure!(alpha > 0.0 && alpha.is_finite(), "alpha must be positive");
        ensure!(
            (0.0..1.0).contains(&dropout),
            "dropout must lie in [0, 1), got {dropout}"
        );
        ensure!(!targets.is_empty(), "no target modules");
        let first = match top_layers {
            Some(n) => {
                ensure!(
                    (1..=num_layers).contains(&n),
                    "--top-layers {n} is outside 1..={num_layers}"
                );
                num_layers - n
            }
            None => 0,
        };
        let mut targets = targets;
        targets.sort();
        targets.dedup();
        Ok(LoraConfig {
            rank,
            alpha,
            dropout,
            targets,
            layers: (first..num_layers).collect(),
        })
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        f64::from(self.alpha) / self.rank as f64
    }
}

/// PEFT's `adapter_config.json` (the fields this runtime reads and writes).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeftConfig {
    /// Always `LORA`.
    pub peft_type: String,
    /// `CAUSAL_LM`.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Rank.
    pub r: usize,
    /// Scale numerator.
    pub lora_alpha: f32,
    /// Training dropout.
    #[serde(default)]
    pub lora_dropout: f32,
    /// Adapted module names.
    pub target_modules: TargetModules,
    /// Adapted layers (all when absent).
    #[serde(default)]
    pub layers_to_transform: Option<LayerList>,
    /// `none`: biases are not trained.
    #[serde(default)]
    pub bias: Option<String>,
    /// Whether weights are stored transposed (never, for Llama).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Rank-stabilised scaling `alpha / sqrt(r)` (not supported).
    #[serde(default)]
    pub use_rslora: bool,
    /// The base model this adapter was trained on.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// PEFT's inference flag.
    #[serde(default)]
    pub inference_mode: bool,
}

/// `target_modules`: a list, or one name.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// A list of module names.
    List(Vec<String>),
    /// A single module name.
    One(String),
}

/// `layers_to_transform`: a list, or one layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LayerList {
    /// Several layers.
    List(Vec<usize>),
    /// One layer.
    One(usize),
}

/// One adapted projection: `A: [rank, in]`, `B: [out, rank]`.
pub struct LoraPair {
    /// Down-projection.
    pub a: Var,
    /// Up-projection (starts at zero).
    pub b: Var,
    /// `alpha / rank`.
    pub scale: f64,
}

/// All adapters of a model.
pub struct LoraAdapter {
    /// What is adapted.
    pub config: LoraConfig,
    pairs: BTreeMap<(usize, Target), LoraPair>,
}

fn peft_name(layer: usize, t: Target, ab: &str) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{}.lora_{ab}.weight",
        t.parent(),
        t.module()
    )
}

/// Parses `base_model.model.model.layers.{i}.{parent}.{module}.lora_{A|B}[.default].weight`.
fn parse_peft_name(name: &str) -> Option<(usize, Target, bool)> {
    let rest = name.strip_prefix("base_model.model.model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let mut parts = rest.split('.');
    let parent = parts.next()?;
    let target = Target::from_module(parts.next()?)?;
    if target.parent() != parent {
        return None;
    }
    let is_a = match parts.next()? {
        "lora_A" => true,
        "lora_B" => false,
        _ => return None,
    };
    let tail: Vec<&str> = parts.collect();
    (tail == ["weight"] || tail == ["default", "weight"]).then_some((layer, target, is_a))
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Fails, naming the tensor and the element, when a value is NaN or infinite.
pub fn ensure_finite(name: &str, values: &[f32]) -> Result<()> {
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        bail!(
            "tensor {name} holds a non-finite value ({v} at element {i} of {})",
            values.len()
        );
    }
    Ok(())
}

/// Serialises named f32 tensors as safetensors bytes, with optional string metadata.
/// Refuses a tensor with a non-finite value, so such weights are never written.
pub fn safetensors_bytes(
    tensors: &NamedTensors,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    for (name, (_, values)) in tensors {
        ensure_finite(name, values)?;
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, (s, v))| (n.clone(), s.clone(), f32_bytes(v)))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("building safetensors views")?;
    safetensors::serialize(views, metadata).context("serialising safetensors")
}

/// Reads every f32 tensor of a safetensors buffer, and its metadata. Refuses a tensor with a
/// non-finite value, naming it.
pub fn read_safetensors(bytes: &[u8]) -> Result<(NamedTensors, HashMap<String, String>)> {
    let st = safetensors::SafeTensors::deserialize(bytes).context("not a safetensors file")?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(bytes).context("not a safetensors file")?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        ensure!(
            view.dtype() == safetensors::Dtype::F32,
            "tensor {name} is {:?}; only F32 is supported",
            view.dtype()
        );
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<f32>>();
        ensure_finite(&name, &values)?;
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

fn var_values(v: &Var) -> Result<Vec<f32>> {
    Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

impl LoraAdapter {
    /// Fresh adapters for a model with config `model`: `A` uniform in ±1/√in (PEFT's
    /// Kaiming init), `B` zero, so training starts from the base model exactly.
    pub fn new(config: LoraConfig, model: &LlamaConfig, seed: u64) -> Result<Self> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut pairs = BTreeMap::new();
        for &l in &config.layers {
            ensure!(
                l < model.num_hidden_layers,
                "layer {l} does not exist (the model has {})",
                model.num_hidden_layers
            );
            for &t in &config.targets {
                let (out, inp) = t.shape(model);
                let bound = 1.0 / (inp as f32).sqrt();
                let a: Vec<f32> = (0..config.rank * inp)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (config.rank, inp), &Device::Cpu)?)?;
                let b = Var::zeros((out, config.rank), candle_core::DType::F32, &Device::Cpu)?;
                pairs.insert(
                    (l, t),
                    LoraPair {
                        a,
                        b,
                        scale: config.scale(),
                    },
                );
            }
        }
        Ok(LoraAdapter { config, pairs })
    }

    /// The pair adapting `target` in `layer`, if any.
    pub fn pair(&self, layer: usize, target: Target) -> Option<&LoraPair> {
        self.pairs.get(&(layer, target))
    }

    /// The lowest adapted layer (None for an empty adapter).
    pub fn lowest_layer(&self) -> Option<usize> {
        self.pairs.keys().next().map(|&(l, _)| l)
    }

    /// Every trainable variable with its PEFT tensor name, in a fixed order.
    pub fn named_vars(&self) -> Vec<(String, &Var)> {
        let mut out = Vec::with_capacity(self.pairs.len() * 2);
        for (&(l, t), p) in &self.pairs {
            out.push((peft_name(l, t, "A"), &p.a));
            out.push((peft_name(l, t, "B"), &p.b));
        }
        out
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.named_vars()
            .iter()
            .map(|(_, v)| v.as_tensor().elem_count())
            .sum()
    }

    /// Every tensor under its PEFT name: `(shape, values)`.
    pub fn tensors(&self) -> Result<NamedTensors> {
        self.named_vars()
            .into_iter()
            .map(|(n, v)| Ok((n, (v.as_tensor().dims().to_vec(), var_values(v)?))))
            .collect()
    }

    /// PEFT's `adapter_config.json` for this adapter.
    pub fn peft_config(&self, base_model: Option<String>) -> PeftConfig {
        PeftConfig {
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            r: self.config.rank,
            lora_alpha: self.config.alpha,
            lora_dropout: self.config.dropout,
            target_modules: TargetModules::List(
                self.config
                    .targets
                    .iter()
                    .map(|t| t.module().to_string())
                    .collect(),
            ),
            layers_to_transform: Some(LayerList::List(self.config.layers.clone())),
            bias: Some("none".into()),
            fan_in_fan_out: false,
            use_rslora: false,
            base_model_name_or_path: base_model,
            inference_mode: true,
        }
    }

    /// Writes `adapter_model.safetensors` and `adapter_config.json` into `dir`, each
    /// atomically (temp file, fsync, rename).
    pub fn save_peft(&self, dir: &Path, base_model: Option<String>) -> Result<()> {
        let bytes = safetensors_bytes(&self.tensors()?, None)?;
        write_atomically(&dir.join(ADAPTER_WEIGHTS), &bytes)?;
        let cfg = serde_json::to_vec_pretty(&self.peft_config(base_model))?;
        write_atomically(&dir.join(ADAPTER_CONFIG), &cfg)
    }

    /// Loads a PEFT adapter from `dir` for a model with config `model`, checking that the
    /// config and every tensor name and shape fit the model.
    pub fn load_peft(dir: &Path, model: &LlamaConfig) -> Result<Self> {
        let cfg_path = dir.join(ADAPTER_CONFIG);
        let text =
            std::fs::read(&cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?;
        let w_path = dir.join(ADAPTER_WEIGHTS);
        let bytes =
            std::fs::read(&w_path).with_context(|| format!("reading {}", w_path.display()))?;
        Self::from_peft_bytes(&text, &bytes, dir, model)
    }

    /// Builds a PEFT adapter from the bytes of its `adapter_config.json` and
    /// `adapter_model.safetensors` (read from the folder `dir`, which names it in errors),
    /// checking that the config and every tensor name and shape fit `model`.
    pub fn from_peft_bytes(
        config: &[u8],
        weights: &[u8],
        dir: &Path,
        model: &LlamaConfig,
    ) -> Result<Self> {
        let cfg_path = dir.join(ADAPTER_CONFIG);
        let peft: PeftConfig = serde_json::from_slice(config)
            .with_context(|| format!("parsing {}", cfg_path.display()))?;
        ensure!(
            peft.peft_type == "LORA",
            "{}: peft_type {:?} is not LORA",
            cfg_path.display(),
            peft.peft_type
        );
        ensure!(
            !peft.use_rslora && !peft.fan_in_fan_out,
            "{}: rsLoRA and fan_in_fan_out adapters are not supported",
            cfg_path.display()
        );
        let w_path = dir.join(ADAPTER_WEIGHTS);
        let (tensors, _) =
            read_safetensors(weights).with_context(|| format!("reading {}", w_path.display()))?;
        Self::from_tensors(&peft, tensors, model)
            .with_context(|| format!("the adapter in {} does not fit this model", dir.display()))
    }

    /// Builds an adapter from PEFT tensors, checking names and shapes against `model`.
    pub fn from_tensors(
        peft: &PeftConfig,
        tensors: NamedTensors,
        model: &LlamaConfig,
    ) -> Result<Self> {
        let rank = peft.r;
        ensure!(rank >= 1, "rank r = 0");
        let listed = match &peft.layers_to_transform {
            Some(LayerList::List(layers)) => layers.as_slice(),
            Some(LayerList::One(layer)) => std::slice::from_ref(layer),
            None => &[],
        };
        if let Some(bad) = listed.iter().find(|&&l| l >= model.num_hidden_layers) {
            bail!(
                "layers_to_transform names layer {bad}; the model's layers are 0 to {}",
                model.num_hidden_layers.saturating_sub(1)
            );
        }
        let mut halves: BTreeMap<(usize, Target), [Option<Var>; 2]> = BTreeMap::new();
        for (name, (shape, values)) in tensors {
            let Some((layer, t, is_a)) = parse_peft_name(&name) else {
                bail!("tensor {name} is not a LoRA weight of a Llama layer");
            };
            ensure!(
                layer < model.num_hidden_layers,
                "{name}: the model has only {} layers",
                model.num_hidden_layers
            );
            let (out, inp) = t.shape(model);
            let want = if is_a {
                vec![rank, inp]
            } else {
                vec![out, rank]
            };
            ensure!(
                shape == want,
                "{name} has shape {shape:?}; rank {rank} on this model needs {want:?}"
            );
            let var = Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu)?)?;
            halves.entry((layer, t)).or_default()[usize::from(!is_a)] = Some(var);
        }
        ensure!(!halves.is_empty(), "the adapter has no LoRA tensors");
        let mut targets = vec![];
        let mut layers = vec![];
        let mut pairs = BTreeMap::new();
        let scale = f64::from(peft.lora_alpha) / rank as f64;
        for ((l, t), [a, b]) in halves {
            let (Some(a), Some(b)) = (a, b) else {
                bail!(
                    "{} of layer {l} has only one of lora_A / lora_B",
                    t.module()
                );
            };
            targets.push(t);
            layers.push(l);
            pairs.insert((l, t), LoraPair { a, b, scale });
        }
        targets.sort();
        targets.dedup();
        layers.sort();
        layers.dedup();
        Ok(LoraAdapter {
            config: LoraConfig {
                rank,
                alpha: peft.lora_alpha,
                dropout: peft.lora_dropout,
                targets,
                layers,
            },
            pairs,
        })
    }

    /// Replaces every variable's value from `tensors` (PEFT names); shapes must match.
    pub fn set_from(&self, tensors: &NamedTensors) -> Result<()> {
        for (name, var) in self.named_vars() {
            let (shape, values) = tensors
                .get(&name)
                .with_context(|| format!("the checkpoint has no tensor {name}"))?;
            ensure!(
                shape.as_slice() == var.as_tensor().dims(),
                "{name}: checkpoint shape {shape:?} differs from {:?}",
                var.as_tensor().dims()
            );
            var.set(&Tensor::from_vec(
                values.clone(),
                shape.clone(),
                &Device::Cpu,
            )?)?;
        }
        Ok(())
    }

    /// The dense update `scale · B·A` (`[out, in]`, row-major) of one pair.
    pub fn delta(&self, layer: usize, target: Target) -> Result<Option<Vec<f32>>> {
        let Some(p) = self.pair(layer, target) else {
            return Ok(None);
        };
        let d = (p.b.as_tensor().matmul(p.a.as_tensor())? * p.scale)?;
        Ok(Some(d.flatten_all()?.to_vec1::<f32>()?))
    }

    /// Adds every update into `weights`, dequantizing adapted projections to f32: for
    /// f32/f16 bases only (a block-quantized base keeps the adapter as a side branch).
    pub fn merge_into(&self, weights: &mut LlamaWeights) -> Result<()> {
        for &(l, t) in self.pairs.keys() {
            let name = t.weight_name(l);
            let w = weights
                .tensors
                .get_mut(&name)
                .with_context(|| format!("the model has no tensor {name}"))?;
            let mut values = match &w.data {
                WeightData::F32(v) => v.clone(),
                _ => w
                    .dequantize()
                    .with_context(|| format!("dequantizing {name}"))?,
            };
            let delta = self.delta(l, t)?.unwrap_or_default();
            ensure!(
                delta.len() == values.len(),
                "{name}: update of {} values for {} weights",
                delta.len(),
                values.len()
            );
            for (w, d) in values.iter_mut().zip(delta) {
                *w += d;
            }
            w.data = WeightData::F32(values);
        }
        Ok(())
    }

    /// The adapted `(layer, target)` pairs, ascending.
    pub fn keys(&self) -> Vec<(usize, Target)> {
        self.pairs.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::onnx_export::tiny_llama_config;

    #[test]
    fn peft_names_round_trip() {
        for t in Target::ALL {
            for ab in ["A", "B"] {
                let n = peft_name(3, t, ab);
                assert_eq!(parse_peft_name(&n), Some((3, t, ab == "A")), "{n}");
            }
        }
        assert_eq!(
            parse_peft_name(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
            ),
            Some((0, Target::Q, true))
        );
        assert_eq!(
            parse_peft_name("base_model.model.model.layers.0.mlp.q_proj.lora_A.weight"),
            None
        );
        assert_eq!(
            parse_peft_name("model.layers.0.self_attn.q_proj.weight"),
            None
        );
    }

    #[test]
    fn saved_adapter_loads_back_with_the_same_values() {
        let c = tiny_llama_config();
        let cfg = LoraConfig::new(4, 8.0, 0.0, vec![Target::Q, Target::V], 2, None).expect("cfg");
        let a = LoraAdapter::new(cfg, &c, 1).expect("adapter");
        let dir = tempfile::tempdir().expect("tmp");
        a.save_peft(dir.path(), None).expect("save");
        let b = LoraAdapter::load_peft(dir.path(), &c).expect("load");
        assert_eq!(a.config, b.config);
        assert_eq!(a.tensors().expect("a"), b.tensors().expect("b"));
        let text = std::fs::read_to_string(dir.path().join(ADAPTER_CONFIG)).expect("cfg");
        assert!(text.contains("\"peft_type\": \"LORA\""), "{text}");
        assert!(text.contains("\"q_proj\""), "{text}");
    }

    #[test]
    fn a_non_finite_adapter_is_never_written_over_a_good_one() {
        let c = tiny_llama_config();
        let cfg = LoraConfig::new(4, 8.0, 0.0, vec![Target::Q, Target::V], 2, None).expect("cfg");
        let a = LoraAdapter::new(cfg, &c, 1).expect("adapter");
        let dir = tempfile::tempdir().expect("tmp");
        a.save_peft(dir.path(), None).expect("save");
        let good = std::fs::read(dir.path().join(ADAPTER_WEIGHTS)).expect("read");
        let clean = a.tensors().expect("t");
        let names: Vec<String> = clean.keys().cloned().collect();
        for (k, bad) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY]
            .into_iter()
            .enumerate()
        {
            let mut t = clean.clone();
            let name = &names[k % names.len()];
            if let Some((_, v)) = t.get_mut(name) {
                v[k] = bad;
            }
            a.set_from(&t).expect("set");
            let err = a.save_peft(dir.path(), None).expect_err("must refuse");
            assert!(format!("{err:#}").contains(name.as_str()), "{err:#}");
            let now = std::fs::read(dir.path().join(ADAPTER_WEIGHTS)).expect("read");
            assert_eq!(now, good);
        }
    }

    #[test]
    fn loading_an_adapter_with_a_non_finite_weight_fails_naming_the_tensor() {
        let c = tiny_llama_config();
        let cfg = LoraConfig::new(4, 8.0, 0.0, vec![Target::Q, Target::V], 2, None).expect("cfg");
        let a = LoraAdapter::new(cfg, &c, 1).expect("adapter");
        let dir = tempfile::tempdir().expect("tmp");
        a.save_peft(dir.path(), None).expect("save");
        let path = dir.path().join(ADAPTER_WEIGHTS);
        let good = std::fs::read(&path).expect("read");
        let header = 8 + u64::from_le_bytes(good[..8].try_into().expect("8 bytes")) as usize;
        let (tensors, _) = read_safetensors(&good).expect("parse");
        let mut tried = 0;
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [
                header,
                good.len() - 4,
                header + (good.len() - header) / 8 * 4,
            ] {
                let mut bytes = good.clone();
                bytes[at..at + 4].copy_from_slice(&bad.to_le_bytes());
                std::fs::write(&path, &bytes).expect("write");
                let err = LoraAdapter::load_peft(dir.path(), &c)
                    .err()
                    .expect("must refuse");
                let text = format!("{err:#}");
                assert!(text.contains("non-finite"), "{text}");
                assert!(tensors.keys().any(|n| text.contains(n.as_str())), "{text}");
                tried += 1;
            }
        }
        assert_eq!(tried, 9);
    }

    #[test]
    fn rejects_an_adapter_whose_rank_does_not_match_its_tensors() {
        let c = tiny_llama_config();
        let cfg = LoraConfig::new(4, 8.0, 0.0, vec![Target::Q], 2, None).expect("cfg");
        let a = LoraAdapter::new(cfg, &c, 1).expect("adapter");
        let mut peft = a.peft_config(None);
        peft.r = 8;
        let err = LoraAdapter::from_tensors(&peft, a.tensors().expect("t"), &c)
            .err()
            .expect("must fail");
        assert!(format!("{err:#}").contains("rank 8"), "{err:#}");
    }

    #[test]
    fn refuses_layers_to_transform_outside_the_model_naming_the_field() {
        let c = tiny_llama_config();
        let cfg = LoraConfig::new(4, 8.0, 0.0, vec![Target::Q], 2, None).expect("cfg");
        let a = LoraAdapter::new(cfg, &c, 1).expect("adapter");
        for layers in [
            LayerList::List(vec![99, 1_000_000]),
            LayerList::List(vec![0, 2]),
            LayerList::One(usize::MAX),
        ] {
            let mut peft = a.peft_config(None);
            peft.layers_to_transform = Some(layers.clone());
            let err = LoraAdapter::from_tensors(&peft, a.tensors().expect("t"), &c)
                .err()
                .expect("must fail");
            assert!(
                format!("{err:#}").contains("layers_to_transform"),
                "{layers:?}: {err:#}"
            );
        }
    }

    #[test]
    fn rejects_an_adapter_for_a_wider_model() {
        let c = tiny_llama_config();
        let mut wide = c.clone();
        wide.hidden_size *= 2;
        wide.intermediate_size *= 2;
        let cfg = LoraConfig::new(2, 4.0, 0.0, vec![Target::V], 2, None).expect("cfg");
        let a = LoraAdapter::new(cfg, &wide, 1).expect("adapter");
        let err = LoraAdapter::from_tensors(&a.peft_config(None), a.tensors().expect("t"), &c)
            .err()
            .expect("must fail");
        assert!(format!("{err:#}").contains("shape"), "{err:#}");
    }

    #[test]
    fn top_layers_select_the_last_layers() {
        let cfg =
            LoraConfig::new(8, 16.0, 0.0, vec![Target::V, Target::Q], 30, Some(4)).expect("cfg");
        assert_eq!(cfg.layers, vec![26, 27, 28, 29]);
        assert_eq!(cfg.targets, vec![Target::Q, Target::V]);
        assert!(LoraConfig::new(8, 16.0, 0.0, vec![Target::Q], 30, Some(31)).is_err());
    }
}
