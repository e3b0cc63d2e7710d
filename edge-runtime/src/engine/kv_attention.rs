//! `KvAttention`, a stateful tract op that owns one layer's KV cache and computes causal
//! grouped-query attention over it: each step appends the new keys and values to the
//! layer's buffers in place and reads the whole past from them, so no step copies the past
//! (the unfolded graph concatenates `past` and `new` into a fresh `present` tensor per
//! layer and step).
//!
//! The op's inputs are the RoPE'd queries `[1, kv_heads, group, seq, head_dim]`, keys and
//! values `[1, kv_heads, seq, head_dim]`; its output is the attention context in the
//! queries' shape. Query `i` of a step sits at cache slot `past + i` and reads slots
//! `0..=past + i`. The buffers live in the op's [`OpState`]; the engine moves a
//! conversation's [`LayerCache`] in before a run and out after it, so a cache belongs to
//! its `KvState`, not to a plan, and truncating or resetting it never touches tract.
//!
//! [`fuse_attention`] rewrites a graph written by this crate's exporter (recognised by its
//! node names and `llama_config` metadata) so that every layer's past/present
//! concatenations and score/softmax/context products become one `KvAttention` node; the
//! `past_key_values` / `present` / `attention_mask` I/O goes away with them.

use std::collections::HashSet;
use std::sync::Arc;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{ModelProto, NodeProto, OperatorSetIdProto};
use tract_onnx::tract_hir::internal::*;

use crate::engine::kernels::{axpy, dot};
use crate::engine::llama::LlamaConfig;
use crate::engine::row_pool::{self, RowJob, RowPool};

/// ONNX domain of the node.
pub const DOMAIN: &str = "org.thermo.attention";
/// ONNX op type of the node.
pub const OP_TYPE: &str = "KvAttention";

/// Registers the [`OP_TYPE`] parser on an ONNX framework.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert(OP_TYPE, parse);
}

fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let layer: usize = node.get_attr("layer")?;
    let kv_heads: usize = node.get_attr("kv_heads")?;
    let group: usize = node.get_attr("group")?;
    let head_dim: usize = node.get_attr("head_dim")?;
    let scale: f32 = node.get_attr("scale")?;
    ensure!(
        kv_heads > 0 && group > 0 && head_dim > 0,
        "{OP_TYPE}: kv_heads {kv_heads}, group {group} and head_dim {head_dim} must be above 0"
    );
    let op = KvAttention {
        layer,
        kv_heads,
        group,
        head_dim,
        scale,
    };
    Ok((expand(Spec(op)), vec![]))
}

/// The parsed node: its shape rules, wiring the typed op.
#[derive(Clone, Debug)]
struct Spec(KvAttention);

/// Causal grouped-query attention over a KV cache the op's state owns (see the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct KvAttention {
    /// Decoder layer whose cache this node holds.
    pub layer: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Query heads per key/value head.
    pub group: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Factor on the query-key dot products (`1/√head_dim` for Llama).
    pub scale: f32,
}

impl Eq for KvAttention {}

impl Expansion for Spec {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 1)?;
        for t in inputs.iter().chain(outputs) {
            s.equals(&t.datum_type, f32::datum_type())?;
        }
        s.equals(&inputs[0].rank, 5)?;
        s.equals(&inputs[1].rank, 4)?;
        s.equals(&inputs[2].rank, 4)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.0.clone(), inputs)
    }
}

impl Op for KvAttention {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "layer {}: {}x{} heads of {}",
            self.layer, self.kv_heads, self.group, self.head_dim
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for KvAttention {
    not_out_of_plan!();

    fn state(&self, _ctx: &EvalContext) -> TractResult<Option<Box<dyn OpState>>> {
        Ok(Some(Box::new(KvAttentionState::default())))
    }
}

impl TypedOp for KvAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 3,
            "{OP_TYPE} takes queries, keys and values"
        );
        let (q, k, v) = (inputs[0], inputs[1], inputs[2]);
        ensure!(
            [q, k, v].iter().all(|f| f.datum_type == f32::datum_type()),
            "{OP_TYPE}: inputs must be f32"
        );
        let (kv, g, hd) = (
            self.kv_heads.to_dim(),
            self.group.to_dim(),
            self.head_dim.to_dim(),
        );
        ensure!(
            q.rank() == 5 && q.shape[1] == kv && q.shape[2] == g && q.shape[4] == hd,
            "{OP_TYPE}: queries {:?} are not [b, {kv}, {g}, s, {hd}]",
            q.shape
        );
        for x in [k, v] {
            ensure!(
                x.rank() == 4 && x.shape[1] == kv && x.shape[3] == hd,
                "{OP_TYPE}: keys/values {:?} are not [b, {kv}, s, {hd}]",
                x.shape
            );
        }
        Ok(tvec![q.without_value()])
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let q: TDim = inputs[0].shape.iter().product();
        Ok(tvec![(Cost::FMA(f32::datum_type()), q * 2usize)])
    }

    as_op!();
}

/// One layer's cached keys and values, row `t` holding slot `t` of every key/value head
/// (`[len, kv_heads · head_dim]`, row-major), with room to grow without copying the past.
/// The buffers are shared with the row pool's workers during a step and with clones of the
/// cache (a kept chat turn), and copied only when one of those still holds them at a write.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerCache {
    k: Arc<Vec<f32>>,
    v: Arc<Vec<f32>>,
    len: usize,
}

impl LayerCache {
    /// Slots held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps the first `len` slots (a no-op when it holds fewer); capacity stays.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            let row = self.k.len() / self.len;
            Arc::make_mut(&mut self.k).truncate(len * row);
            Arc::make_mut(&mut self.v).truncate(len * row);
            self.len = len;
        }
    }

    /// Forgets every slot.
    pub fn clear(&mut self) {
        self.truncate(0);
    }
}

/// The op state: the cache the engine moved in for this run.
#[derive(Clone, Debug, Default)]
pub struct KvAttentionState {
    /// The layer's cache.
    pub cache: LayerCache,
}

impl OpState for KvAttentionState {
    fn eval(
        &mut self,
        _ctx: &EvalContext,
        op: &dyn Op,
        inputs: TVec<TValue>,
    ) -> TractResult<TVec<TValue>> {
        let op = op
            .downcast_ref::<KvAttention>()
            .context("KvAttentionState run by another op")?;
        let (q, k, v) = args_3!(inputs);
        let out = op.step(&mut self.cache, &q, &k, &v)?;
        Ok(tvec![out.into_tvalue()])
    }

    fn reset_lanes(&mut self, _lanes: &[LaneId]) -> TractResult<()> {
        bail!("{OP_TYPE} holds one conversation's cache and has no lanes")
    }
}

impl KvAttention {
    /// Appends `k`, `v` to `cache` and attends `q` over it.
    fn step(
        &self,
        cache: &mut LayerCache,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> TractResult<Tensor> {
        let (kv, g, hd) = (self.kv_heads, self.group, self.head_dim);
        let seq = k.shape().get(2).copied().unwrap_or(0);
        let expected_q = [1, kv, g, seq, hd];
        let expected_kv = [1, kv, seq, hd];
        ensure!(
            q.shape() == expected_q && k.shape() == expected_kv && v.shape() == expected_kv,
            "{OP_TYPE}: shapes {:?}, {:?}, {:?}; expected {expected_q:?} and {expected_kv:?} \
             (one sequence at a time)",
            q.shape(),
            k.shape(),
            v.shape()
        );
        let past = cache.len;
        append_heads(
            Arc::make_mut(&mut cache.k),
            k.try_as_plain_ram()?.as_slice::<f32>()?,
            kv,
            seq,
            hd,
        );
        append_heads(
            Arc::make_mut(&mut cache.v),
            v.try_as_plain_ram()?.as_slice::<f32>()?,
            kv,
            seq,
            hd,
        );
        cache.len += seq;
        let q = q.try_as_plain_ram()?;
        let q = q.as_slice::<f32>()?;
        let mut out = vec![0f32; q.len()];
        // One output row per (kv head, group member, query): rows are independent.
        let rows = kv * g * seq;
        let work = rows * (past + seq) * hd * 2;
        let threads = if work < THREADING_WORK {
            1
        } else {
            row_pool::current_threads()
        };
        if threads == 1 {
            // On this thread alone: nothing to share, so nothing copied.
            self.attend_rows(&cache.k, &cache.v, q, seq, past, 0, &mut out);
        } else {
            let (keys, values, op) = (cache.k.clone(), cache.v.clone(), self.clone());
            let q = Arc::new(q.to_vec());
            let job: RowJob = Arc::new(move |row0, chunk: &mut [f32]| {
                op.attend_rows(&keys, &values, &q, seq, past, row0, chunk);
                Ok(())
            });
            RowPool::global()
                .run(&mut out, hd, 1, threads, job)
                .map_err(|e| format_err!("{OP_TYPE}: {e}"))?;
        }
        Tensor::from_shape(&expected_q, &out)
    }

    /// Output rows `row0..` (one per kv head, group member and query, `head_dim` wide) of a
    /// step of `seq` queries over `past` cached slots before them.
    #[allow(
        clippy::too_many_arguments,
        reason = "one step's data, borrowed or shared"
    )]
    fn attend_rows(
        &self,
        keys: &[f32],
        values: &[f32],
        q: &[f32],
        seq: usize,
        past: usize,
        row0: usize,
        out: &mut [f32],
    ) {
        let (g, hd) = (self.group, self.head_dim);
        let mut scores = Vec::with_capacity(past + seq);
        for (r, o) in out.chunks_exact_mut(hd).enumerate() {
            let row = row0 + r;
            let (head, i) = (row / (g * seq), row % seq);
            let qrow = &q[row * hd..(row + 1) * hd];
            self.attend(keys, values, head, past + i + 1, qrow, &mut scores, o);
        }
    }

    /// Softmax-weighted sum of the values of slots `0..slots` of `head` for one query.
    #[allow(
        clippy::too_many_arguments,
        reason = "one query's slice of the step's data"
    )]
    fn attend(
        &self,
        keys: &[f32],
        values: &[f32],
        head: usize,
        slots: usize,
        q: &[f32],
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let hd = self.head_dim;
        let stride = self.kv_heads * hd;
        let at = head * hd;
        scores.clear();
        let mut max = f32::NEG_INFINITY;
        for t in 0..slots {
            let key = &keys[t * stride + at..t * stride + at + hd];
            let s = dot(q, key) * self.scale;
            max = max.max(s);
            scores.push(s);
        }
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        out.fill(0.0);
        for (t, p) in scores.iter().enumerate() {
            let value = &values[t * stride + at..t * stride + at + hd];
            axpy(*p, value, out);
        }
        let inv = 1.0 / sum;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

/// Multiply-adds below which one step's attention stays on the calling thread: a decode
/// step over a short context costs less than handing rows to the pool.
const THREADING_WORK: usize = 1 << 18;

/// Appends `[kv, seq, hd]` head-major rows to a `[slot, kv · hd]` buffer.
fn append_heads(buf: &mut Vec<f32>, new: &[f32], kv: usize, seq: usize, hd: usize) {
    buf.reserve(new.len());
    for i in 0..seq {
        for h in 0..kv {
            let at = (h * seq + i) * hd;
            buf.extend_from_slice(&new[at..at + hd]);
        }
    }
}

/// Node names the exporter gives one layer's attention, which [`fuse_attention`] replaces.
const REPLACED: [&str; 7] = ["k_t", "k_t5", "v5", "scores", "scaled", "masked", "probs"];

/// Rewrites a graph written by this crate's exporter so that each layer's attention is one
/// [`KvAttention`] node owning its cache; returns false, leaving `proto` as it was, for any
/// other graph (an Optimum export keeps its `past_key_values` I/O).
pub fn fuse_attention(proto: &mut ModelProto) -> TractResult<bool> {
    let Some(cfg) = proto
        .metadata_props
        .iter()
        .find(|e| e.key == "llama_config")
        .and_then(|e| serde_json::from_str::<LlamaConfig>(&e.value).ok())
    else {
        return Ok(false);
    };
    let Some(graph) = proto.graph.as_mut() else {
        return Ok(false);
    };
    let nkv = cfg.num_key_value_heads;
    if nkv == 0 || !cfg.num_attention_heads.is_multiple_of(nkv) {
        return Ok(false);
    }
    let index_of = |nodes: &[NodeProto], name: &str| nodes.iter().position(|n| n.name == name);
    // Plan every layer first: either all layers fuse or nothing changes.
    let mut plans = Vec::with_capacity(cfg.num_hidden_layers);
    for l in 0..cfg.num_hidden_layers {
        let a = format!("model.layers.{l}.self_attn");
        let find = |name: &str| index_of(&graph.node, name);
        let (Some(pk), Some(pv), Some(scores), Some(ctx)) = (
            find(&format!("present.{l}.key")),
            find(&format!("present.{l}.value")),
            find(&format!("{a}.scores")),
            find(&format!("{a}.context")),
        ) else {
            return Ok(false);
        };
        let input = |i: usize, slot: usize| graph.node[i].input.get(slot).cloned();
        let (Some(k), Some(v), Some(q)) = (input(pk, 1), input(pv, 1), input(scores, 0)) else {
            return Ok(false);
        };
        if REPLACED.iter().any(|n| find(&format!("{a}.{n}")).is_none()) {
            return Ok(false);
        }
        plans.push((l, a, q, k, v, graph.node[ctx].output.clone()));
    }
    for (l, a, q, k, v, outputs) in plans {
        let mut dropped: HashSet<String> = REPLACED.iter().map(|n| format!("{a}.{n}")).collect();
        dropped.insert(format!("present.{l}.key"));
        dropped.insert(format!("present.{l}.value"));
        graph.node.retain(|n| !dropped.contains(&n.name));
        let ctx_name = format!("{a}.context");
        let at = index_of(&graph.node, &ctx_name).context("the context node vanished")?;
        graph.node[at] = NodeProto {
            input: vec![q, k, v],
            output: outputs,
            name: ctx_name,
            op_type: OP_TYPE.into(),
            domain: DOMAIN.into(),
            attribute: attributes(l, &cfg),
            doc_string: String::new(),
        };
    }
    graph
        .input
        .retain(|i| !(i.name.starts_with("past_key_values.") || i.name == "attention_mask"));
    graph.output.retain(|o| !o.name.starts_with("present."));
    prune_dead_nodes(graph);
    proto.opset_import.push(OperatorSetIdProto {
        domain: DOMAIN.into(),
        version: 1,
    });
    Ok(true)
}

fn attributes(layer: usize, cfg: &LlamaConfig) -> Vec<tract_onnx::pb::AttributeProto> {
    use tract_onnx::pb::AttributeProto;
    use tract_onnx::pb::attribute_proto::AttributeType;
    let int = |name: &str, i: usize| AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: i as i64,
        ..Default::default()
    };
    let nkv = cfg.num_key_value_heads;
    vec![
        int("layer", layer),
        int("kv_heads", nkv),
        int("group", cfg.num_attention_heads / nkv),
        int("head_dim", cfg.head_dim()),
        AttributeProto {
            name: "scale".into(),
            r#type: AttributeType::Float as i32,
            f: 1.0 / (cfg.head_dim() as f32).sqrt(),
            ..Default::default()
        },
    ]
}

/// Drops the nodes no graph output depends on (the mask built from the removed I/O).
fn prune_dead_nodes(graph: &mut tract_onnx::pb::GraphProto) {
    let mut live: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let mut keep = vec![false; graph.node.len()];
    for (i, node) in graph.node.iter().enumerate().rev() {
        if node.output.iter().any(|o| live.contains(o)) {
            keep[i] = true;
            live.extend(node.input.iter().cloned());
        }
    }
    let mut flags = keep.into_iter();
    graph.node.retain(|_| flags.next().unwrap_or(true));
}

#[cfg(test)]
mod tests {
    use tract_onnx::prelude::{Framework, InferenceModelExt};

    use super::*;
    use crate::engine::WeightFormat;
    use crate::engine::import::{tiny_weights, write_tiny_model};
    use crate::engine::model::{KvState, LoadedModel};
    use crate::engine::onnx_export::to_model_proto;

    const PROMPT: [u32; 9] = [1, 17, 200, 3, 99, 171, 42, 8, 250];

    /// Logits of every position of `ids` from the exporter's graph as written (past and
    /// present as I/O, the past empty), run by tract without any rewrite.
    fn unfused_logits(seed: u64, format: WeightFormat, ids: &[u32]) -> TractResult<Vec<f32>> {
        let weights = tiny_weights(seed);
        let proto = to_model_proto(&weights, format)?;
        let plan = crate::engine::ggml_op::onnx()
            .model_for_proto_model(&proto)?
            .into_optimized()?
            .into_runnable()?;
        let cfg = &weights.config;
        let n = ids.len();
        let ids: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
        let mut inputs = tvec![
            Tensor::from_shape(&[1, n], &ids)?.into_tvalue(),
            Tensor::from_shape(&[1, n], &vec![1i64; n])?.into_tvalue(),
            Tensor::from_shape(&[1, n], &(0..n as i64).collect::<Vec<_>>())?.into_tvalue(),
        ];
        let empty = [1, cfg.num_key_value_heads, 0, cfg.head_dim()];
        for _ in 0..2 * cfg.num_hidden_layers {
            inputs.push(Tensor::zero::<f32>(&empty)?.into_tvalue());
        }
        let out = plan.run(inputs)?;
        Ok(out[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
    }

    fn worst(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn fused_attention_gives_the_logits_of_the_graph_with_cache_io() -> TractResult<()> {
        for format in [WeightFormat::F32, WeightFormat::Q4, WeightFormat::Ggml] {
            let tmp = tempfile::tempdir()?;
            let dir = tmp.path().join("tiny");
            write_tiny_model(&dir, 5, format)?;
            let model = LoadedModel::load(&dir)?;
            let vocab = model.vocab_size();
            let expected = unfused_logits(5, format, &PROMPT)?;
            // Prefill 4, then one token at a time, then the rest at once.
            let mut state = KvState::new(model)?;
            let mut got = state.forward_all(&PROMPT[..4])?;
            got.extend(state.forward_all(&PROMPT[4..5])?);
            got.extend(state.forward_all(&PROMPT[5..6])?);
            got.extend(state.forward_all(&PROMPT[6..])?);
            let diff = worst(&got, &expected);
            assert!(diff < 1e-4, "{format:?}: logits differ by {diff}");
            // A truncated cache answers as a fresh one fed the same prefix.
            state.truncate(5)?;
            let again = state.forward_all(&PROMPT[5..])?;
            let diff = worst(&again, &expected[5 * vocab..]);
            assert!(
                diff < 1e-4,
                "{format:?}: after truncate, logits differ by {diff}"
            );
        }
        Ok(())
    }

    #[test]
    fn two_threads_give_the_one_thread_logits_bit_for_bit() -> TractResult<()> {
        use tract_linalg::multithread::{Executor, multithread_tract_scope};
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("tiny");
        write_tiny_model(&dir, 9, WeightFormat::Ggml)?;
        let model = LoadedModel::load(&dir)?;
        // 96 tokens: enough work for attention and every product to be split.
        let ids: Vec<u32> = (0..96u32).map(|i| (i * 37 + 5) % 250).collect();
        let run = |model: &Arc<LoadedModel>| -> TractResult<Vec<f32>> {
            let mut state = KvState::new(model.clone())?;
            let mut logits = state.forward_all(&ids[..90])?;
            for &t in &ids[90..] {
                logits.extend(state.forward_all(&[t])?);
            }
            Ok(logits)
        };
        let one = run(&model)?;
        let two = multithread_tract_scope(Executor::multithread(2), || run(&model))?;
        assert!(one == two, "logits differ by up to {}", worst(&one, &two));
        Ok(())
    }

    #[test]
    fn a_graph_without_the_exporter_metadata_is_left_as_it_is() -> TractResult<()> {
        let mut proto = to_model_proto(&tiny_weights(2), WeightFormat::F32)?;
        proto.metadata_props.clear();
        let before = proto.clone();
        assert!(!fuse_attention(&mut proto)?);
        assert_eq!(proto, before);
        Ok(())
    }

    #[test]
    fn fusing_removes_the_cache_io_and_leaves_one_attention_node_per_layer() -> TractResult<()> {
        let weights = tiny_weights(2);
        let mut proto = to_model_proto(&weights, WeightFormat::F32)?;
        assert!(fuse_attention(&mut proto)?);
        let graph = proto.graph.as_ref().context("graph")?;
        let names = |v: &[tract_onnx::pb::ValueInfoProto]| -> Vec<String> {
            v.iter().map(|i| i.name.clone()).collect()
        };
        assert_eq!(names(&graph.input), ["input_ids", "position_ids"]);
        assert_eq!(names(&graph.output), ["logits"]);
        let fused = graph.node.iter().filter(|n| n.op_type == OP_TYPE).count();
        assert_eq!(fused, weights.config.num_hidden_layers);
        assert!(!graph.node.iter().any(|n| n.op_type == "Softmax"));
        Ok(())
    }

    #[test]
    fn a_truncated_layer_cache_keeps_its_first_slots() {
        let mut cache = LayerCache::default();
        append_heads(Arc::make_mut(&mut cache.k), &[1.0, 2.0, 3.0, 4.0], 2, 1, 2);
        append_heads(Arc::make_mut(&mut cache.v), &[5.0, 6.0, 7.0, 8.0], 2, 1, 2);
        cache.len = 1;
        append_heads(
            Arc::make_mut(&mut cache.k),
            &[9.0, 10.0, 11.0, 12.0],
            2,
            1,
            2,
        );
        append_heads(
            Arc::make_mut(&mut cache.v),
            &[13.0, 14.0, 15.0, 16.0],
            2,
            1,
            2,
        );
        cache.len = 2;
        cache.truncate(1);
        assert_eq!(cache.len(), 1);
        assert_eq!(*cache.k, [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(*cache.v, [5.0, 6.0, 7.0, 8.0]);
        cache.clear();
        assert!(cache.is_empty() && cache.k.is_empty());
    }

    #[test]
    fn appending_reorders_head_major_rows_into_slot_rows() {
        // [kv = 2, seq = 2, hd = 1]: head 0 slots (a, b), head 1 slots (c, d).
        let mut buf = vec![];
        append_heads(&mut buf, &[1.0, 2.0, 3.0, 4.0], 2, 2, 1);
        assert_eq!(buf, [1.0, 3.0, 2.0, 4.0]);
    }
}
