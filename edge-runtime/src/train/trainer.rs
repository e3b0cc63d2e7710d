//! The fine-tuning loop: packed rows of training examples in a seeded order, gradient
//! accumulation, AdamW, held-out evaluation, a governor permit at training priority around
//! every optimizer step, and checkpoints that let `--resume` continue exactly.
//!
//! A checkpoint is one safetensors file (`checkpoint.safetensors`: adapter, AdamW moments,
//! and in its metadata the step, the data cursor, the options and a digest of the data),
//! replaced atomically; the PEFT adapter files beside it are replaced atomically too. Every
//! random choice (data order per epoch, dropout masks per micro-batch) is derived from the
//! seed and the step, so the cursor is all the random state a resume needs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::atomic::write_atomically;
use super::data::{Example, common_prefix, epoch_order, pack_all, push_example, row_cost};
use super::lora::{LoraAdapter, LoraConfig, NamedTensors, read_safetensors, safetensors_bytes};
use super::model::{BaseModel, ForwardOptions, PackedRow};
use super::optim::{AdamW, AdamWParams, Schedule, learning_rate};
use crate::governor::Priority;
use crate::pacing::Permits;

/// Name of the checkpoint file in the output folder.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
const META_KEY: &str = "thermo.checkpoint";
/// Metadata key of the checkpoint's SHA-256 over its training state and every tensor.
const SUM_KEY: &str = "thermo.checkpoint.sha256";

/// SHA-256 (hex) over the training state's JSON and every tensor's name, shape and values,
/// in name order: any changed bit of a checkpoint's content changes it.
fn checkpoint_sum(meta: &str, tensors: &NamedTensors) -> String {
    let mut h = Sha256::new();
    h.update((meta.len() as u64).to_le_bytes());
    h.update(meta.as_bytes());
    for (name, (shape, values)) in tensors {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        for v in values {
            h.update(v.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything that shapes a run; a resumed run must use the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// What to adapt.
    pub lora: LoraConfig,
    /// Optimizer steps in the run.
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warmup steps.
    pub warmup: usize,
    /// Shape after warmup.
    pub schedule: Schedule,
    /// Micro-batches (packed rows) per optimizer step.
    pub accum: usize,
    /// Tokens per packed row.
    pub seq_len: usize,
    /// AdamW hyper-parameters.
    pub adamw: AdamWParams,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Seed of the adapter init, the data order and dropout.
    pub seed: u64,
}

/// Where a run stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Optimizer steps done.
    pub step: usize,
    /// Epoch of the data cursor.
    pub epoch: u64,
    /// Index into that epoch's order of the next example.
    pub index: usize,
    /// Training tokens processed.
    pub tokens: u64,
    /// Energy spent so far in J (as reported by the caller).
    pub energy_j: f64,
    /// Loss of the last step.
    pub loss: Option<f64>,
    /// Last held-out loss (mean NLL per scored token).
    pub eval_loss: Option<f64>,
    /// Held-out recall of every evaluation so far, in order (runs that measure recall).
    #[serde(default)]
    pub recall: Vec<f64>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    options: TrainOptions,
    progress: Progress,
    data_digest: String,
    optimizer_steps: u64,
}

/// One optimizer step's outcome.
#[derive(Clone, Debug)]
pub struct StepReport {
    /// Steps done after this one.
    pub step: usize,
    /// Mean training loss over the step's scored tokens.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens processed in this step.
    pub tokens: usize,
    /// Wall time of the step (permit wait excluded), s.
    pub seconds: f64,
    /// Time spent waiting for the governor's permit, s.
    pub waited_s: f64,
}

/// Digest of the tokenized training and held-out data.
pub fn data_digest(train: &[Example], eval: &[Example]) -> String {
    let mut h = Sha256::new();
    for set in [train, eval] {
        for e in set {
            for id in &e.ids {
                h.update(id.to_le_bytes());
            }
            h.update((e.scored_from as u64).to_le_bytes());
            h.update(b"|");
        }
        h.update(b"#");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A training run in memory.
pub struct Trainer<'m> {
    model: &'m BaseModel,
    /// The adapter being trained.
    pub adapter: LoraAdapter,
    opt: AdamW,
    /// The run's options.
    pub options: TrainOptions,
    train: Vec<Example>,
    eval_rows: Vec<PackedRow>,
    order: Vec<usize>,
    /// Length of the token prefix all examples share (packed once per row).
    shared: usize,
    /// Where the run stands.
    pub progress: Progress,
    digest: String,
    /// States entering the lowest adapted layer, when that is above layer 0.
    frozen: Option<FrozenCache>,
    /// Scored tokens of each held-out example, in order (to read recall off packed rows).
    eval_counts: Vec<usize>,
    /// States of each held-out row entering the lowest adapted layer, computed on the
    /// first evaluation (no adapter sits below it, so they never change).
    eval_frozen: Vec<Option<Tensor>>,
    /// Whether evaluations measure recall and the run stops once it saturates.
    recall_stop: bool,
}

/// Hidden states entering the lowest adapted layer, per training example (its tokens after
/// the shared prefix) and for the shared prefix. No adapter sits below that layer, so these
/// states never change during a run: each is computed once, the first time its example is
/// packed, and later rows start at that layer. (In a packed row an example sees only the
/// shared prefix and itself, so its states do not depend on its row-mates.)
struct FrozenCache {
    layer: usize,
    prefix: Option<Tensor>,
    examples: Vec<Option<Tensor>>,
}

impl<'m> Trainer<'m> {
    /// A fresh run over `train`, evaluated on `eval`.
    pub fn new(
        model: &'m BaseModel,
        options: TrainOptions,
        train: Vec<Example>,
        eval: Vec<Example>,
    ) -> Result<Self> {
        ensure!(!train.is_empty(), "no training examples");
        ensure!(options.accum >= 1, "--accum must be at least 1");
        ensure!(options.steps >= 1, "--steps must be at least 1");
        if let Some(e) = train.iter().find(|e| e.ids.len() > options.seq_len) {
            bail!(
                "{}:{}: {} tokens, longer than --seq-len {}",
                e.file.display(),
                e.line,
                e.ids.len(),
                options.seq_len
            );
        }
        let adapter = LoraAdapter::new(options.lora.clone(), &model.config, options.seed)?;
        let vars = adapter
            .named_vars()
            .into_iter()
            .map(|(_, v)| v.clone())
            .collect();
        let opt = AdamW::new(vars, options.adamw)?;
        let digest = data_digest(&train, &eval);
        let shared = common_prefix(&[&train, &eval]);
        let eval_rows = pack_all(&eval, options.seq_len, shared);
        let eval_rows_len = eval_rows.len();
        let eval_counts = eval
            .iter()
            .map(|e| e.ids.len().saturating_sub(e.scored_from.max(1)))
            .collect();
        let order = epoch_order(train.len(), options.seed, 0);
        let frozen = adapter
            .lowest_layer()
            .filter(|&l| l > 0)
            .map(|layer| FrozenCache {
                layer,
                prefix: None,
                examples: vec![None; train.len()],
            });
        Ok(Trainer {
            model,
            adapter,
            opt,
            options,
            train,
            eval_rows,
            order,
            shared,
            progress: Progress::default(),
            digest,
            frozen,
            eval_frozen: vec![None; eval_rows_len],
            eval_counts,
            recall_stop: false,
        })
    }

    /// The same trainer measuring held-out recall at every evaluation and stopping the run
    /// once recall saturates (see [`recall_saturated`]). Meant for held-out questions whose
    /// answers restate what the training data holds.
    pub fn with_recall_stop(mut self) -> Self {
        self.recall_stop = true;
        self
    }

    /// Whether evaluations measure recall and may stop the run.
    pub fn stops_on_recall(&self) -> bool {
        self.recall_stop
    }

    /// The same trainer computing every layer on every step (no cached frozen states):
    /// the reference the cache is held to, and a benchmark baseline.
    pub fn without_frozen_cache(mut self) -> Self {
        self.frozen = None;
        self
    }

    /// Computes the cached frozen states of every training example now instead of on each
    /// example's first use (steady-state benchmarks); a no-op when every layer is adapted.
    pub fn warm_frozen_cache(&mut self) -> Result<()> {
        let all: Vec<usize> = (0..self.train.len()).collect();
        let mut row = PackedRow::default();
        if let Some(first) = self.train.first() {
            push_example(&mut row, first, self.shared);
        }
        self.frozen_start(&row, &all)?;
        Ok(())
    }

    /// The next packed row of training examples; advances the data cursor.
    fn next_row(&mut self) -> PackedRow {
        self.next_row_with_members().0
    }

    /// The next packed row and the indices of the training examples in it, in row order.
    fn next_row_with_members(&mut self) -> (PackedRow, Vec<usize>) {
        let mut row = PackedRow::default();
        let mut members = vec![];
        loop {
            if self.progress.index >= self.order.len() {
                self.progress.epoch += 1;
                self.progress.index = 0;
                self.order = epoch_order(self.train.len(), self.options.seed, self.progress.epoch);
            }
            let i = self.order[self.progress.index];
            let ex = &self.train[i];
            if !row.ids.is_empty()
                && row.ids.len() + row_cost(ex, self.shared) > self.options.seq_len
            {
                return (row, members);
            }
            push_example(&mut row, ex, self.shared);
            members.push(i);
            self.progress.index += 1;
        }
    }

    /// Where the forward pass of `row` (holding the training examples `members`) starts:
    /// the cached states entering the lowest adapted layer, or `None` when every layer is
    /// adapted. A state missing from the cache is computed from its example alone (the
    /// shared prefix from the prefix alone), so cached values do not depend on packing and a
    /// resumed run recomputes them bit for bit.
    fn frozen_start(
        &mut self,
        row: &PackedRow,
        members: &[usize],
    ) -> Result<Option<(usize, Tensor)>> {
        let Some(cache) = self.frozen.as_mut() else {
            return Ok(None);
        };
        let shared = row.shared;
        let mut parts = Vec::with_capacity(members.len() + 1);
        if shared > 0 {
            if cache.prefix.is_none() {
                let alone = PackedRow {
                    ids: row.ids[..shared].to_vec(),
                    positions: (0..shared as u32).collect(),
                    segment: vec![0; shared],
                    targets: vec![],
                    shared: 0,
                };
                cache.prefix = Some(self.model.frozen_hidden(&alone, cache.layer)?);
            }
            parts.extend(cache.prefix.clone());
        }
        for &i in members {
            let slot = cache
                .examples
                .get_mut(i)
                .context("a packed example outside the training set")?;
            if slot.is_none() {
                let ex = &self.train[i];
                let mut alone = PackedRow::default();
                push_example(&mut alone, ex, shared);
                let h = self.model.frozen_hidden(&alone, cache.layer)?;
                *slot = Some(h.narrow(0, shared, row_cost(ex, shared))?.contiguous()?);
            }
            parts.extend(slot.clone());
        }
        Ok(Some((cache.layer, Tensor::cat(&parts, 0)?)))
    }

    /// One optimizer step over `accum` packed rows.
    pub fn step(&mut self) -> Result<StepReport> {
        let t0 = Instant::now();
        let o = &self.options;
        let lr = learning_rate(o.lr, o.warmup, o.steps, o.schedule, self.progress.step);
        let accum = o.accum;
        let mut sum: Vec<Option<candle_core::Tensor>> = vec![];
        let (mut loss_sum, mut scored, mut tokens) = (0.0f64, 0usize, 0usize);
        for micro in 0..accum {
            let (row, members) = self.next_row_with_members();
            let start = self.frozen_start(&row, &members)?;
            let fo = ForwardOptions {
                dropout: self.options.lora.dropout,
                dropout_seed: self
                    .options
                    .seed
                    .wrapping_add((self.progress.step * accum + micro) as u64 + 1),
            };
            let (loss, n) = self.model.loss_from(&row, Some(&self.adapter), fo, start)?;
            loss_sum += f64::from(loss.to_scalar::<f32>()?) * n as f64;
            scored += n;
            tokens += row.ids.len();
            let grads = (loss / accum as f64)?.backward()?;
            let g = self.opt.grads_of(&grads);
            if sum.is_empty() {
                sum = g;
            } else {
                for (s, g) in sum.iter_mut().zip(g) {
                    *s = match (s.take(), g) {
                        (Some(a), Some(b)) => Some((a + b)?),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
        let grad_norm = self.opt.step(&sum, lr, self.options.max_grad_norm)?;
        self.progress.step += 1;
        self.progress.tokens += tokens as u64;
        let loss = loss_sum / scored.max(1) as f64;
        ensure!(loss.is_finite(), "the training loss diverged ({loss})");
        self.progress.loss = Some(loss);
        Ok(StepReport {
            step: self.progress.step,
            loss,
            lr,
            grad_norm,
            tokens,
            seconds: t0.elapsed().as_secs_f64(),
            waited_s: 0.0,
        })
    }

    /// Held-out loss (mean NLL per scored token, as [`Trainer::eval_loss`]) and recall: the
    /// share of held-out examples whose whole scored answer is the model's greedy choice
    /// token by token (what greedy decoding of the prompt would write), from one forward
    /// pass per row; `None`s without held-out data. Records the loss in the progress.
    pub fn eval_loss_and_recall(&mut self) -> Result<(Option<f64>, Option<f64>)> {
        let mut hits = Vec::with_capacity(self.eval_counts.iter().sum());
        let (mut sum, mut scored) = (0.0f64, 0usize);
        for i in 0..self.eval_rows.len() {
            let hidden = self.eval_hidden(i)?;
            let row = &self.eval_rows[i];
            let at: Vec<usize> = row.targets.iter().map(|&(p, _)| p).collect();
            let logits = self.model.logits_at(&hidden, &at, false)?;
            let best = logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?;
            hits.extend(best.iter().zip(&row.targets).map(|(b, &(_, t))| *b == t));
            let logp = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)?;
            let tgt: Vec<u32> = row.targets.iter().map(|&(_, t)| t).collect();
            let tgt = Tensor::from_vec(tgt, (at.len(), 1), &candle_core::Device::Cpu)?;
            sum -= f64::from(logp.gather(&tgt, 1)?.sum_all()?.to_scalar::<f32>()?);
            scored += at.len();
        }
        ensure!(
            hits.len() == self.eval_counts.iter().sum::<usize>(),
            "held-out rows and examples disagree"
        );
        let (mut at, mut recalled) = (0, 0usize);
        for &n in &self.eval_counts {
            recalled += usize::from(hits[at..at + n].iter().all(|&h| h));
            at += n;
        }
        let n = self.eval_counts.len();
        let loss = (scored > 0).then(|| sum / scored as f64);
        self.progress.eval_loss = loss;
        Ok((loss, (n > 0).then(|| recalled as f64 / n as f64)))
    }

    /// Final hidden states of held-out row `i` under the adapter, starting from the row's
    /// cached states at the lowest adapted layer when that is above layer 0.
    fn eval_hidden(&mut self, i: usize) -> Result<Tensor> {
        let row = &self.eval_rows[i];
        let layer = self.adapter.lowest_layer().filter(|&l| l > 0);
        let start = match (layer, self.eval_frozen.get_mut(i)) {
            (Some(l), Some(slot)) => {
                if slot.is_none() {
                    *slot = Some(self.model.frozen_hidden(row, l)?);
                }
                slot.clone().map(|h| (l, h))
            }
            _ => None,
        };
        Ok(self
            .model
            .hidden_from(row, Some(&self.adapter), ForwardOptions::EVAL, start)?
            .detach())
    }

    /// Mean negative log-likelihood per scored held-out token (`None` without held-out data).
    pub fn eval_loss(&mut self) -> Result<Option<f64>> {
        Ok(self.eval_loss_and_recall()?.0)
    }

    /// Gradients of a single training row, by PEFT name (for checks that every adapter
    /// learns).
    pub fn probe_gradients(&mut self) -> Result<Vec<(String, f32)>> {
        let (saved, order) = (self.progress.clone(), self.order.clone());
        let row = self.next_row();
        (self.progress, self.order) = (saved, order);
        let (loss, _) = self
            .model
            .loss(&row, Some(&self.adapter), ForwardOptions::EVAL)?;
        let grads = loss.backward()?;
        self.adapter
            .named_vars()
            .into_iter()
            .map(|(n, v)| {
                let norm = match grads.get(v.as_tensor()) {
                    Some(g) => g.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt(),
                    None => 0.0,
                };
                Ok((n, norm))
            })
            .collect()
    }

    /// The checkpoint as safetensors bytes.
    pub fn checkpoint_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors = self.adapter.tensors()?;
        for (i, (name, var)) in self.adapter.named_vars().into_iter().enumerate() {
            let shape = var.as_tensor().dims().to_vec();
            let m = self.opt.m[i].flatten_all()?.to_vec1::<f32>()?;
            let v = self.opt.v[i].flatten_all()?.to_vec1::<f32>()?;
            tensors.insert(format!("optimizer.m.{name}"), (shape.clone(), m));
            tensors.insert(format!("optimizer.v.{name}"), (shape, v));
        }
        let meta = CheckpointMeta {
            options: self.options.clone(),
            progress: self.progress.clone(),
            data_digest: self.digest.clone(),
            optimizer_steps: self.opt.t,
        };
        let meta = serde_json::to_string(&meta)?;
        let mut md = HashMap::new();
        md.insert(SUM_KEY.to_string(), checkpoint_sum(&meta, &tensors));
        md.insert(META_KEY.to_string(), meta);
        safetensors_bytes(&tensors, Some(md))
    }

    /// Writes the checkpoint and the PEFT adapter into `dir`, each file atomically.
    pub fn save(&self, dir: &Path, base_model: Option<String>) -> Result<()> {
        write_atomically(&dir.join(CHECKPOINT), &self.checkpoint_bytes()?)?;
        self.adapter.save_peft(dir, base_model)
    }

    /// Restores a checkpoint written by a run with the same options and data; refuses one
    /// whose checksum does not match its content or that holds a non-finite value.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let (tensors, md) = read_safetensors(bytes).context("reading the checkpoint")?;
        let meta_text = md
            .get(META_KEY)
            .context("the checkpoint has no training state")?;
        let sum = md
            .get(SUM_KEY)
            .context("the checkpoint has no checksum, so it cannot be trusted")?;
        ensure!(
            *sum == checkpoint_sum(meta_text, &tensors),
            "the checkpoint is corrupt: its SHA-256 does not match its content; the adapter \
             beside it is untouched"
        );
        let meta: CheckpointMeta =
            serde_json::from_str(meta_text).context("parsing the checkpoint's training state")?;
        ensure!(
            meta.options == self.options,
            "the checkpoint was written with other options ({}); resume with the same flags",
            serde_json::to_string(&meta.options)?
        );
        ensure!(
            meta.data_digest == self.digest,
            "the checkpoint was written for other training data"
        );
        self.adapter.set_from(&tensors)?;
        let get = |name: &str| -> Result<candle_core::Tensor> {
            let (shape, values) = tensors
                .get(name)
                .with_context(|| format!("the checkpoint has no tensor {name}"))?;
            Ok(candle_core::Tensor::from_vec(
                values.clone(),
                shape.clone(),
                &candle_core::Device::Cpu,
            )?)
        };
        for (i, (name, _)) in self.adapter.named_vars().into_iter().enumerate() {
            self.opt.m[i] = get(&format!("optimizer.m.{name}"))?;
            self.opt.v[i] = get(&format!("optimizer.v.{name}"))?;
        }
        self.opt.t = meta.optimizer_steps;
        self.progress = meta.progress;
        self.order = epoch_order(self.train.len(), self.options.seed, self.progress.epoch);
        Ok(())
    }

    /// The adapter's tensors (for comparisons).
    pub fn adapter_tensors(&self) -> Result<NamedTensors> {
        self.adapter.tensors()
    }
}

/// Largest safetensors header [`checkpoint_progress`] reads.
pub const MAX_CHECKPOINT_HEADER_BYTES: u64 = 16 << 20;

/// Where the run checkpointed at `path` stands, read from the checkpoint's header alone (its
/// tensors are neither read nor checked: [`Trainer::restore`] checks them).
pub fn checkpoint_progress(path: &Path) -> Result<Progress> {
    use std::io::Read as _;
    let shown = path.display();
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {shown}"))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .with_context(|| format!("{shown}: no safetensors header"))?;
    let len = u64::from_le_bytes(len);
    ensure!(
        len <= MAX_CHECKPOINT_HEADER_BYTES,
        "{shown}: a header of {len} bytes, more than the {MAX_CHECKPOINT_HEADER_BYTES} a \
         checkpoint's may take"
    );
    let mut header = vec![];
    f.take(len)
        .read_to_end(&mut header)
        .with_context(|| format!("reading {shown}"))?;
    ensure!(
        header.len() as u64 == len,
        "{shown}: the header is cut short"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&header).with_context(|| format!("{shown}: the header"))?;
    let meta = v
        .get("__metadata__")
        .and_then(|m| m.get(META_KEY))
        .and_then(|m| m.as_str())
        .with_context(|| format!("{shown} has no training state"))?;
    let meta: CheckpointMeta = serde_json::from_str(meta)
        .with_context(|| format!("{shown}: parsing the training state"))?;
    Ok(meta.progress)
}

/// Mean NLL per scored token of `rows` under `model` + `adapter`.
pub fn eval_loss(
    model: &BaseModel,
    adapter: Option<&LoraAdapter>,
    rows: &[PackedRow],
) -> Result<Option<f64>> {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for row in rows {
        let (loss, k) = model.loss(row, adapter, ForwardOptions::EVAL)?;
        sum += f64::from(loss.detach().to_scalar::<f32>()?) * k as f64;
        n += k;
    }
    Ok((n > 0).then(|| sum / n as f64))
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// All steps done.
    Finished,
    /// Stopped on request (SIGTERM) after a checkpoint.
    Stopped,
    /// Stopped before its last step because held-out recall saturated; the adapter and
    /// checkpoint are saved.
    Saturated,
}

/// Whether recall, measured at every evaluation (`history`, oldest first), has saturated:
/// perfect at the last two evaluations, or no better than its earlier best over the last
/// [`RECALL_PATIENCE`] evaluations.
pub fn recall_saturated(history: &[f64]) -> bool {
    let n = history.len();
    if n >= 2 && history[n - 2..].iter().all(|&r| r >= 1.0) {
        return true;
    }
    if n <= RECALL_PATIENCE {
        return false;
    }
    let (before, recent) = history.split_at(n - RECALL_PATIENCE);
    let best_before = before.iter().copied().fold(0.0, f64::max);
    best_before > 0.0 && recent.iter().all(|&r| r <= best_before)
}

/// Evaluations without a gain in recall after which a run counts as saturated.
pub const RECALL_PATIENCE: usize = 3;

/// Hooks and cadence of [`run`].
pub struct RunControl<'a> {
    /// Governor permits: one at [`Priority::Training`] is held across every step.
    pub permits: Option<&'a Permits>,
    /// Set (e.g. by SIGTERM) to checkpoint and stop after the current step.
    pub stop: &'a AtomicBool,
    /// Checkpoint every N steps (0: only at the end and on stop).
    pub checkpoint_every: usize,
    /// Held-out evaluation every N steps (0: only at the end).
    pub eval_every: usize,
    /// Called after each step; returns the energy in J that step cost.
    pub on_step: &'a mut dyn FnMut(&StepReport, &Progress) -> f64,
    /// Base model name recorded in `adapter_config.json`.
    pub base_model: Option<String>,
}

/// Runs `trainer` to its last step, writing checkpoints into `out`.
pub fn run(trainer: &mut Trainer<'_>, out: &Path, ctl: &mut RunControl<'_>) -> Result<Outcome> {
    while trainer.progress.step < trainer.options.steps {
        if ctl.stop.load(Ordering::SeqCst) {
            trainer.save(out, ctl.base_model.clone())?;
            return Ok(Outcome::Stopped);
        }
        let wait = Instant::now();
        let permit = match ctl.permits {
            None => None,
            // A paused or throttled run still notices a stop request while it waits.
            Some(p) => match p.acquire_unless(Priority::Training, ctl.stop) {
                Some(permit) => Some(permit),
                None => {
                    trainer.save(out, ctl.base_model.clone())?;
                    return Ok(Outcome::Stopped);
                }
            },
        };
        let waited_s = wait.elapsed().as_secs_f64();
        let mut report = trainer.step()?;
        drop(permit);
        report.waited_s = waited_s;
        let step = trainer.progress.step;
        let last = step == trainer.options.steps;
        let evaluate = (ctl.eval_every > 0 && step.is_multiple_of(ctl.eval_every)) || last;
        if evaluate && trainer.recall_stop {
            if let (_, Some(r)) = trainer.eval_loss_and_recall()? {
                trainer.progress.recall.push(r);
            }
        } else if evaluate {
            trainer.eval_loss()?;
        }
        trainer.progress.energy_j += (ctl.on_step)(&report, &trainer.progress);
        let saturated =
            evaluate && !last && trainer.recall_stop && recall_saturated(&trainer.progress.recall);
        if saturated {
            trainer.save(out, ctl.base_model.clone())?;
            return Ok(Outcome::Saturated);
        }
        if (ctl.checkpoint_every > 0 && step.is_multiple_of(ctl.checkpoint_every)) || last {
            trainer.save(out, ctl.base_model.clone())?;
        }
    }
    Ok(Outcome::Finished)
}
