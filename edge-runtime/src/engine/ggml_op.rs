//! `GgmlMatMul`, a tract op computing `x @ Wᵀ` with `W` kept in its stored ggml blocks
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K): the op quantizes each input row to int8
//! per block of the weight's size (32 values, or 256 for the K-quants, as llama.cpp does) and
//! runs the integer-dot [`kernels`](crate::engine::kernels), splitting output rows over the
//! [`RowPool`], as many threads as tract's current executor has (the one
//! [`ComputeThreads`](crate::engine::ComputeThreads) sizes).
//!
//! In ONNX it is a node of domain [`DOMAIN`] with inputs `x` (`[.., K]` f32) and the
//! weight's block bytes (`[N, K / block values · block bytes]` u8 initializer), attributes
//! `K`, `N` and `ggml_type` (the GGUF type id). [`onnx`] returns a tract ONNX parser that knows it.
//!
//! `GgmlGather` ([`GATHER_OP_TYPE`], same domain) looks up embedding rows in such a table:
//! inputs the table (`[N, row bytes]` u8 initializer, the tied head's own) and the ids,
//! attributes `K`, `N` and `ggml_type`; each row is decoded as it is gathered, so a model
//! whose head is its embedding holds that table once, in its stored blocks.

use std::sync::Arc;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use crate::engine::kernels::{
    BlockKind, GEMV_ROWS, Isa, Q8Rows, QuantMatrix, TILE, decode_q8_0, matmul, matmul_f32_t,
    matmul_t,
};
use crate::engine::quant::{GgmlType, dequantize};
use crate::engine::row_pool::{self, RowJob, RowPool};

/// ONNX domain of the node.
pub const DOMAIN: &str = "org.thermo.ggml";
/// ONNX op type of the node.
pub const OP_TYPE: &str = "GgmlMatMul";

/// ONNX op type of the embedding lookup.
pub const GATHER_OP_TYPE: &str = "GgmlGather";

/// A tract ONNX parser that also reads [`OP_TYPE`] and [`GATHER_OP_TYPE`] nodes.
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register.insert(OP_TYPE, parse);
    onnx.op_register.insert(GATHER_OP_TYPE, parse_gather);
    onnx
}

/// The `K`, `N` and `ggml_type` attributes both ops carry.
fn table_attrs(node: &NodeProto) -> TractResult<(usize, usize, GgmlType)> {
    let k: usize = node.get_attr("K")?;
    let n: usize = node.get_attr("N")?;
    let type_id: i64 = node.get_attr("ggml_type")?;
    let kind = u32::try_from(type_id)
        .ok()
        .and_then(GgmlType::from_id)
        .with_context(|| format!("{}: unknown ggml type id {type_id}", node.op_type))?;
    Ok((k, n, kind))
}

fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let (k, n, kind) = table_attrs(node)?;
    let kind = BlockKind::from_ggml(kind)?;
    let f32_rows = node.get_attr_opt::<i64>("f32_rows")?.unwrap_or(0);
    let f32_rows = usize::try_from(f32_rows)
        .map_err(|_| format_err!("{OP_TYPE}: f32_rows {f32_rows} is below 0"))?;
    Ok((
        expand(GgmlMatMulSpec {
            kind,
            k,
            n,
            f32_rows,
        }),
        vec![],
    ))
}

/// The parsed node, before its weight constant is known.
#[derive(Clone, Debug)]
struct GgmlMatMulSpec {
    kind: BlockKind,
    k: usize,
    n: usize,
    f32_rows: usize,
}

impl Expansion for GgmlMatMulSpec {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        let n = self.n.to_dim();
        s.given(&inputs[0].rank, move |s, rank| {
            let rank = rank as usize;
            s.equals(&outputs[0].rank, rank as i64)?;
            for ax in 0..rank.saturating_sub(1) {
                s.equals(&outputs[0].shape[ax], &inputs[0].shape[ax])?;
            }
            s.equals(&outputs[0].shape[rank.saturating_sub(1)], n.clone())
        })?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let weights = block_constant(model, inputs[1], OP_TYPE, prefix)?;
        let op = GgmlMatMul::new(self.kind, self.n, self.k, weights)?.with_f32_rows(self.f32_rows);
        model.wire_node(prefix, op, &inputs[..1])
    }
}

/// The block bytes at `outlet`, which must be a constant (an initializer).
fn block_constant(
    model: &TypedModel,
    outlet: OutletId,
    op: &str,
    node: &str,
) -> TractResult<Arc<Tensor>> {
    model
        .outlet_fact(outlet)?
        .konst
        .clone()
        .with_context(|| format!("{op} {node}: the block table must be a constant"))
}

/// `y = x @ Wᵀ` for a `[n, k]` weight held in ggml blocks; `x` is `[.., k]` f32.
#[derive(Clone, Debug)]
pub struct GgmlMatMul {
    kind: BlockKind,
    n: usize,
    k: usize,
    weights: Arc<Tensor>,
    isa: Isa,
    f32_rows: usize,
}

impl GgmlMatMul {
    /// Wraps `weights` (u8, `n · k / block values` blocks of `kind`), checking their size.
    pub fn new(kind: BlockKind, n: usize, k: usize, weights: Arc<Tensor>) -> TractResult<Self> {
        ensure!(
            weights.datum_type() == u8::datum_type(),
            "{OP_TYPE}: weight bytes are {:?}, not u8",
            weights.datum_type()
        );
        let op = Self {
            kind,
            n,
            k,
            weights,
            isa: Isa::detect(),
            f32_rows: 0,
        };
        op.matrix()?;
        Ok(op)
    }

    /// Multiplies products of at least `rows` activation rows in f32 over the decoded weight
    /// when it is Q8_0 (0: never); the integer dots otherwise.
    pub fn with_f32_rows(mut self, rows: usize) -> Self {
        self.f32_rows = rows;
        self
    }

    fn matrix(&self) -> TractResult<QuantMatrix<'_>> {
        let bytes: &[u8] = self.weights.try_as_plain_ram()?.as_slice()?;
        Ok(QuantMatrix::new(self.kind, self.n, self.k, bytes)?)
    }
}

impl PartialEq for GgmlMatMul {
    fn eq(&self, other: &Self) -> bool {
        (self.kind, self.n, self.k, self.f32_rows) == (other.kind, other.n, other.k, other.f32_rows)
            && Arc::ptr_eq(&self.weights, &other.weights)
    }
}

impl Eq for GgmlMatMul {}

impl Op for GgmlMatMul {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?} {}x{} on {:?}",
            self.kind, self.n, self.k, self.isa
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for GgmlMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape();
        ensure!(
            shape.last() == Some(&self.k),
            "{OP_TYPE}: input shape {shape:?} does not end in {}",
            self.k
        );
        let m = input.len() / self.k;
        let mut out_shape: TVec<usize> = shape.into();
        if let Some(last) = out_shape.last_mut() {
            *last = self.n;
        }
        let mut out = Tensor::zero::<f32>(&out_shape)?;
        if m == 0 {
            return Ok(tvec![out.into_tvalue()]);
        }
        let threads = self.threads_for(m);
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let y = view.as_slice_mut::<f32>()?;
            if self.f32_rows > 0 && m >= self.f32_rows && self.kind == BlockKind::Q8_0 {
                self.f32_product(input.into_arc_tensor(), y, threads)?;
            } else if m >= threads * TILE && threads > 1 {
                // Prefill: each thread quantizes, multiplies and lays out its own activation rows.
                self.split_activations(input.into_arc_tensor(), y, threads)?;
            } else {
                let x: &[f32] = input.try_as_plain_ram()?.as_slice()?;
                with_quantized(|q| {
                    // The workers have dropped their handles by now; a fresh copy otherwise.
                    Arc::make_mut(q).quantize_for(self.kind, x, m, self.k)?;
                    self.split_rows(q, m, y, threads)
                })?;
            }
        }
        Ok(tvec![out.into_tvalue()])
    }
}

thread_local! {
    /// The quantized activations of the last product run on this thread, reused so that a
    /// step allocates no quantization buffers.
    static QUANTIZED: std::cell::RefCell<Arc<Q8Rows>> = std::cell::RefCell::default();
}

thread_local! {
    /// The f32 weight of the last product run in f32 on this thread, its buffer reused.
    static DECODED: std::cell::RefCell<Arc<Vec<f32>>> = std::cell::RefCell::default();
}

/// Runs `f` on this thread's quantization buffer, or on a fresh one when this thread is
/// already inside a product.
fn with_quantized<T>(f: impl FnOnce(&mut Arc<Q8Rows>) -> TractResult<T>) -> TractResult<T> {
    QUANTIZED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut q) => f(&mut q),
        Err(_) => f(&mut Arc::default()),
    })
}

/// Below this many multiply-adds a product runs on the calling thread alone.
const SPLIT_MACS: usize = 1 << 16;

impl GgmlMatMul {
    /// How many threads a product with `m` activation rows is split over: tract's current
    /// executor's width, or one for a product too small to pay for the hand-over.
    fn threads_for(&self, m: usize) -> usize {
        let macs = self.n.saturating_mul(self.k).saturating_mul(m);
        if macs < SPLIT_MACS {
            1
        } else {
            row_pool::current_threads()
        }
    }

    /// `y = x · Wᵀ` (`[m, n]`) from the quantized `q`, the weight rows split over `threads`
    /// (the split decode takes, where one activation row meets every weight row), or all on
    /// this thread.
    fn split_rows(
        &self,
        q: &Arc<Q8Rows>,
        m: usize,
        y: &mut [f32],
        threads: usize,
    ) -> TractResult<()> {
        if m == 1 {
            // One activation row: the transposed product is the output itself.
            return self.product(q, y, threads);
        }
        if threads == 1 {
            return Ok(matmul(self.isa, &self.matrix()?, q, y)?);
        }
        let mut out_t = vec![0f32; self.n * m];
        self.product(q, &mut out_t, threads)?;
        transpose_into(&out_t, self.n, m, y);
        Ok(())
    }

    /// `out_t = W · qᵀ` (`[n, m]`), output rows split over `threads` of the [`RowPool`].
    fn product(&self, q: &Arc<Q8Rows>, out_t: &mut [f32], threads: usize) -> TractResult<()> {
        let m = out_t.len() / self.n;
        if threads == 1 {
            // On this thread alone: no job to build, nothing shared.
            return Ok(matmul_t(self.isa, &self.matrix()?, 0, q, out_t)?);
        }
        let (weights, q, isa) = (self.weights.clone(), q.clone(), self.isa);
        let (kind, n, k) = (self.kind, self.n, self.k);
        let job: RowJob = Arc::new(move |row0, chunk: &mut [f32]| {
            let w = matrix_of(&weights, kind, n, k)?;
            matmul_t(isa, &w, row0, &q, chunk).map_err(|e| e.to_string())
        });
        RowPool::global()
            .run(out_t, m, GEMV_ROWS, threads, job)
            .map_err(|e| format_err!("{OP_TYPE}: {e}"))
    }

    /// `y = x · Wᵀ` with the activation rows of `x` split over `threads`: each share is
    /// quantized and multiplied by every weight row, into place, by the thread that owns it,
    /// so nothing of a prefill product runs on one thread while the others wait.
    fn split_activations(&self, x: Arc<Tensor>, y: &mut [f32], threads: usize) -> TractResult<()> {
        let (weights, isa) = (self.weights.clone(), self.isa);
        let (kind, n, k) = (self.kind, self.n, self.k);
        let job: RowJob = Arc::new(move |a0, chunk: &mut [f32]| {
            let w = matrix_of(&weights, kind, n, k)?;
            let rows = chunk.len() / n;
            let x: &[f32] = x
                .try_as_plain_ram()
                .and_then(|x| x.as_slice())
                .map_err(|e| e.to_string())?;
            let share = x
                .get(a0 * k..(a0 + rows) * k)
                .ok_or_else(|| format!("activation rows {a0}..+{rows} out of range"))?;
            with_quantized(|q| {
                Arc::make_mut(q).quantize_for(kind, share, rows, k)?;
                Ok(matmul(isa, &w, q, chunk)?)
            })
            .map_err(|e| e.to_string())
        });
        RowPool::global()
            .run(y, n, TILE, threads, job)
            .map_err(|e| format_err!("{OP_TYPE}: {e}"))
    }
}

impl GgmlMatMul {
    /// `y = x · Wᵀ` in f32: `W` decoded once into this thread's buffer, then the activation
    /// rows split over `threads`, each share multiplied on the f32 GEMM by the thread that
    /// owns it.
    fn f32_product(&self, x: Arc<Tensor>, y: &mut [f32], threads: usize) -> TractResult<()> {
        let matrix = self.matrix()?;
        let decode = |w: &mut Arc<Vec<f32>>| -> TractResult<Arc<Vec<f32>>> {
            // Pool workers have dropped their handles by now; a fresh copy otherwise.
            decode_q8_0(&matrix, Arc::make_mut(w))?;
            Ok(w.clone())
        };
        let w = DECODED.with(|cell| match cell.try_borrow_mut() {
            Ok(mut w) => decode(&mut w),
            Err(_) => decode(&mut Arc::default()),
        })?;
        let (n, k) = (self.n, self.k);
        let job: RowJob = Arc::new(move |a0, chunk: &mut [f32]| {
            let rows = chunk.len() / n;
            let x: &[f32] = x
                .try_as_plain_ram()
                .and_then(|x| x.as_slice())
                .map_err(|e| e.to_string())?;
            let share = x
                .get(a0 * k..(a0 + rows) * k)
                .ok_or_else(|| format!("activation rows {a0}..+{rows} out of range"))?;
            matmul_f32_t(share, &w, k, chunk).map_err(|e| e.to_string())
        });
        RowPool::global()
            .run(y, n, TILE, threads, job)
            .map_err(|e| format_err!("{OP_TYPE}: {e}"))
    }
}

/// The weight matrix a pool job reads.
fn matrix_of(
    weights: &Tensor,
    kind: BlockKind,
    n: usize,
    k: usize,
) -> Result<QuantMatrix<'_>, String> {
    let bytes: &[u8] = weights
        .try_as_plain_ram()
        .and_then(|w| w.as_slice())
        .map_err(|e| e.to_string())?;
    QuantMatrix::new(kind, n, k, bytes).map_err(|e| e.to_string())
}

/// `[rows, cols]` `a` to `[cols, rows]` in `t`.
fn transpose_into(a: &[f32], rows: usize, cols: usize, t: &mut [f32]) {
    for (r, row) in a.chunks_exact(cols).enumerate() {
        for (c, v) in row.iter().enumerate() {
            t[c * rows + r] = *v;
        }
    }
}

impl TypedOp for GgmlMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        ensure!(
            x.datum_type == f32::datum_type(),
            "{OP_TYPE}: input must be f32"
        );
        ensure!(
            x.shape.last() == Some(&self.k.to_dim()),
            "{OP_TYPE}: input {:?} does not end in {}",
            x.shape,
            self.k
        );
        let mut shape: TVec<TDim> = x.shape.iter().cloned().collect();
        if let Some(last) = shape.last_mut() {
            *last = self.n.to_dim();
        }
        Ok(tvec![f32::fact(shape)])
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let rows: TDim = inputs[0].shape.iter().rev().skip(1).product();
        Ok(tvec![(
            Cost::FMA(f32::datum_type()),
            rows * self.n * self.k
        )])
    }

    as_op!();
}

fn parse_gather(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let (k, n, kind) = table_attrs(node)?;
    ensure!(
        kind.has_decoder(),
        "{GATHER_OP_TYPE}: no decoder for ggml type {kind:?}"
    );
    Ok((expand(GgmlGatherSpec { kind, k, n }), vec![]))
}

/// The parsed lookup, before its table constant is known.
#[derive(Clone, Debug)]
struct GgmlGatherSpec {
    kind: GgmlType,
    k: usize,
    n: usize,
}

impl Expansion for GgmlGatherSpec {
    fn name(&self) -> StaticName {
        GATHER_OP_TYPE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].rank, inputs[1].rank.bex() + 1)?;
        let k = self.k.to_dim();
        s.given(&inputs[1].rank, move |s, rank| {
            let rank = rank as usize;
            for ax in 0..rank {
                s.equals(&outputs[0].shape[ax], &inputs[1].shape[ax])?;
            }
            s.equals(&outputs[0].shape[rank], k.clone())
        })?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let table = block_constant(model, inputs[0], GATHER_OP_TYPE, prefix)?;
        let op = GgmlGather::new(self.kind, self.n, self.k, table)?;
        model.wire_node(prefix, op, &inputs[1..])
    }
}

/// Rows `ids` of an `[n, k]` table held in ggml blocks, decoded to f32: `[..ids, k]`.
#[derive(Clone, Debug)]
pub struct GgmlGather {
    kind: GgmlType,
    n: usize,
    k: usize,
    table: Arc<Tensor>,
}

impl GgmlGather {
    /// Wraps `table` (u8, `n` rows of `k` values of `kind`), checking its size.
    pub fn new(kind: GgmlType, n: usize, k: usize, table: Arc<Tensor>) -> TractResult<Self> {
        ensure!(
            table.datum_type() == u8::datum_type(),
            "{GATHER_OP_TYPE}: table bytes are {:?}, not u8",
            table.datum_type()
        );
        let row_bytes = kind.byte_size(k)?;
        ensure!(
            n.checked_mul(row_bytes) == Some(table.len()),
            "{GATHER_OP_TYPE}: {} table bytes are not {n} rows of {k} {kind:?} values",
            table.len()
        );
        Ok(Self { kind, n, k, table })
    }
}

impl PartialEq for GgmlGather {
    fn eq(&self, other: &Self) -> bool {
        (self.kind, self.n, self.k) == (other.kind, other.n, other.k)
            && Arc::ptr_eq(&self.table, &other.table)
    }
}

impl Eq for GgmlGather {}

impl Op for GgmlGather {
    fn name(&self) -> StaticName {
        GATHER_OP_TYPE.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?} {}x{}", self.kind, self.n, self.k)])
    }

    op_as_typed_op!();
}

impl EvalOp for GgmlGather {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let ids = args_1!(inputs);
        let mut shape: TVec<usize> = ids.shape().into();
        shape.push(self.k);
        let ids = ids.cast_to::<i64>()?;
        let ids: &[i64] = ids.try_as_plain_ram()?.as_slice()?;
        let table: &[u8] = self.table.try_as_plain_ram()?.as_slice()?;
        let row_bytes = table.len() / self.n.max(1);
        let mut out = Vec::with_capacity(ids.len().saturating_mul(self.k));
        for &id in ids {
            let row = usize::try_from(id)
                .ok()
                .filter(|&r| r < self.n)
                .with_context(|| {
                    format!("{GATHER_OP_TYPE}: id {id} outside the {} rows", self.n)
                })?;
            let bytes = &table[row * row_bytes..(row + 1) * row_bytes];
            out.extend(dequantize(self.kind, bytes, self.k)?);
        }
        Ok(tvec![Tensor::from_shape(&shape, &out)?.into_tvalue()])
    }
}

impl TypedOp for GgmlGather {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        shape.push(self.k.to_dim());
        Ok(tvec![f32::fact(shape)])
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::llama::WeightData;

    const N: usize = 5;
    const K: usize = 64;

    fn q4_1_op() -> (GgmlMatMul, Vec<f32>) {
        let values: Vec<f32> = (0..N * K)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let Ok(WeightData::Q4_1(bytes)) = WeightData::quantize(&values, GgmlType::Q4_1) else {
            panic!("quantizes")
        };
        let dense = dequantize(GgmlType::Q4_1, &bytes, N * K).expect("decodes");
        let t = Tensor::from_shape(&[N, bytes.len() / N], &bytes).expect("tensor");
        let op = GgmlMatMul::new(BlockKind::Q4_1, N, K, Arc::new(t)).expect("op");
        (op, dense)
    }

    /// `n × k` test weights (the same values every time) quantized to `ty`: their blocks
    /// and the `[n, row bytes]` table an op holds.
    fn block_table(n: usize, k: usize, ty: GgmlType) -> (Vec<u8>, Arc<Tensor>) {
        let values: Vec<f32> = (0..n * k)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) / 30.0)
            .collect();
        let bytes = match WeightData::quantize(&values, ty) {
            Ok(WeightData::Q4_1(b) | WeightData::Q8_0(b)) => b,
            _ => panic!("{ty:?} quantizes to blocks"),
        };
        let t = Tensor::from_shape(&[n, bytes.len() / n], &bytes).expect("tensor");
        (bytes, Arc::new(t))
    }

    fn run(op: &GgmlMatMul, shape: &[usize], x: &[f32]) -> TractResult<Vec<f32>> {
        let input = Tensor::from_shape(shape, x)?.into_tvalue();
        let out = op.eval(&EvalContext::out_of_plan(), tvec![input])?;
        Ok(out[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
    }

    #[test]
    fn evaluates_batched_rows_exactly_as_one_row_at_a_time() {
        let (op, dense) = q4_1_op();
        let x: Vec<f32> = (0..6 * K)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
            .collect();
        let batched = run(&op, &[2, 3, K], &x).expect("runs");
        assert_eq!(batched.len(), 6 * N);
        for (r, row) in x.chunks_exact(K).enumerate() {
            let single = run(&op, &[1, 1, K], row).expect("runs");
            assert_eq!(single, batched[r * N..(r + 1) * N], "row {r}");
            for (j, y) in single.iter().enumerate() {
                let w = &dense[j * K..(j + 1) * K];
                let exact: f32 = w.iter().zip(row).map(|(a, b)| a * b).sum();
                let mag: f32 = w.iter().zip(row).map(|(a, b)| (a * b).abs()).sum();
                assert!(
                    (y - exact).abs() <= 0.01 * mag,
                    "row {r} col {j}: {y} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn a_product_split_over_threads_equals_the_one_thread_product_bit_for_bit() {
        use tract_linalg::multithread::{Executor, multithread_tract_scope};
        // 70 rows (not a multiple of the 4-row pass) x 1024: above the split threshold.
        let (n, k) = (70, 1024);
        let (_, t) = block_table(n, k, GgmlType::Q4_1);
        let op = GgmlMatMul::new(BlockKind::Q4_1, n, k, t).expect("op");
        // One row and three (the weight rows split), nine and sixteen (the activations split).
        for m in [1, 3, 9, 16] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 23) as f32 - 11.0) / 5.0)
                .collect();
            let one = run(&op, &[m, k], &x).expect("runs");
            for threads in [2, 3] {
                let split = multithread_tract_scope(Executor::multithread(threads), || {
                    assert_eq!(row_pool::current_threads(), threads);
                    run(&op, &[m, k], &x)
                })
                .expect("runs");
                assert_eq!(one, split, "m={m}, {threads} threads");
            }
        }
    }

    #[test]
    fn the_f32_mode_multiplies_the_decoded_q8_0_weight_exactly_on_any_thread_count() {
        use tract_linalg::multithread::{Executor, multithread_tract_scope};
        let (n, k) = (70, 1024);
        let (bytes, t) = block_table(n, k, GgmlType::Q8_0);
        let dense = dequantize(GgmlType::Q8_0, &bytes, n * k).expect("decodes");
        let op = GgmlMatMul::new(BlockKind::Q8_0, n, k, t.clone())
            .expect("op")
            .with_f32_rows(4);
        let int8 = GgmlMatMul::new(BlockKind::Q8_0, n, k, t).expect("op");
        for m in [1, 4, 9, 16] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 23) as f32 - 11.0) / 5.0)
                .collect();
            let one = run(&op, &[m, k], &x).expect("runs");
            for (i, row) in x.chunks_exact(k).enumerate() {
                for (j, y) in one[i * n..(i + 1) * n].iter().enumerate() {
                    let w = &dense[j * k..(j + 1) * k];
                    let exact: f32 = w.iter().zip(row).map(|(a, b)| a * b).sum();
                    let mag: f32 = w.iter().zip(row).map(|(a, b)| (a * b).abs()).sum();
                    let tol = if m >= 4 { 1e-5 } else { 1e-2 };
                    assert!((y - exact).abs() <= tol * mag, "m={m} ({i}, {j})");
                }
            }
            // Below `f32_rows` the integer dots run, as without the attribute.
            assert_eq!(
                m < 4,
                one == run(&int8, &[m, k], &x).expect("runs"),
                "m={m}"
            );
            for threads in [2, 3] {
                let split = multithread_tract_scope(Executor::multithread(threads), || {
                    run(&op, &[m, k], &x)
                })
                .expect("runs");
                assert_eq!(one, split, "m={m}, {threads} threads");
            }
        }
    }

    #[test]
    fn refuses_weight_bytes_that_do_not_fit_the_shape() {
        let t = Tensor::from_shape(&[N, 39], &[0u8; N * 39]).expect("tensor");
        assert!(GgmlMatMul::new(BlockKind::Q4_1, N, K, Arc::new(t)).is_err());
        let f = Tensor::from_shape(&[N * 10], &[0f32; N * 10]).expect("tensor");
        assert!(GgmlMatMul::new(BlockKind::Q4_1, N, K, Arc::new(f)).is_err());
    }

    #[test]
    fn an_input_of_the_wrong_width_is_an_error_not_a_panic() {
        let (op, _) = q4_1_op();
        assert!(run(&op, &[1, 32], &[0.5; 32]).is_err());
        let fact = f32::fact([1usize, 32]);
        assert!(op.output_facts(&[&fact]).is_err());
    }

    #[test]
    fn gathers_the_decoded_rows_and_refuses_ids_outside_the_table() {
        let values: Vec<f32> = (0..N * K)
            .map(|i| ((i * 17 % 53) as f32 - 26.0) / 9.0)
            .collect();
        let Ok(WeightData::Q8_0(bytes)) = WeightData::quantize(&values, GgmlType::Q8_0) else {
            panic!("quantizes")
        };
        let dense = dequantize(GgmlType::Q8_0, &bytes, N * K).expect("decodes");
        let table = Tensor::from_shape(&[N, bytes.len() / N], &bytes).expect("tensor");
        let op = GgmlGather::new(GgmlType::Q8_0, N, K, Arc::new(table)).expect("op");
        let gather = |ids: &[i64], shape: &[usize]| {
            let ids = Tensor::from_shape(shape, ids)?.into_tvalue();
            let out = op.eval(&EvalContext::out_of_plan(), tvec![ids])?;
            let shape = out[0].shape().to_vec();
            TractResult::Ok((
                shape,
                out[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
            ))
        };
        let (shape, rows) = gather(&[4, 0, 4], &[1, 3]).expect("gathers");
        assert_eq!(shape, [1, 3, K]);
        for (row, id) in rows.chunks_exact(K).zip([4, 0, 4]) {
            assert_eq!(row, &dense[id * K..(id + 1) * K]);
        }
        for bad in [-1, N as i64, i64::MAX] {
            assert!(gather(&[0, bad], &[1, 2]).is_err(), "id {bad}");
        }
        let short = Tensor::from_shape(
            &[N - 1, bytes.len() / N],
            &bytes[..bytes.len() / N * (N - 1)],
        );
        assert!(GgmlGather::new(GgmlType::Q8_0, N, K, Arc::new(short.expect("tensor"))).is_err());
    }
}
