//! `BertDense`, a tract op computing one linear map of an encoder layer with what follows it
//! in one pass over the output: `y = x · Wᵀ + b`, then either the exact GELU (the
//! feed-forward's first map) or a residual added and a layer norm (the attention output and
//! the feed-forward's second map), or nothing (the stacked query, key and value map). `W` is
//! `[N, K]`, f32 packed once into the [`gemm`](crate::engine::kernels::gemm) panels, or Q8_0
//! blocks decoded into those panels for each product, a share of panels per thread. The
//! activation rows are split over tract's current executor; each share is multiplied,
//! activated or normalised by the thread that owns it.
//!
//! In ONNX it is a node of domain [`DOMAIN`](crate::engine::bert_attention::DOMAIN), op type
//! [`OP_TYPE`], attributes `K`, `N`, `gelu` (0 or 1) and, for the layer norm, `epsilon`;
//! inputs `x` (`[.., K]` f32), the weight (an initializer: `[N, K]` f32, or `[N, K / 32 ·
//! 34]` u8 Q8_0 blocks), the bias (`[N]`), and with `epsilon` the residual (`[.., N]`) and
//! the norm's scale and offset (`[N]` initializers). [`register`] teaches a tract ONNX
//! parser to read it.

use std::sync::Arc;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use crate::engine::kernels::gemm::{
    Activation, AlignedBuf, PANEL, Panels, Q8Panels, add_layer_norm, gemm_bias, pack_panels,
    panels_len,
};
use crate::engine::kernels::{BlockKind, QuantMatrix};

/// ONNX op type of the node.
pub const OP_TYPE: &str = "BertDense";

/// Adds [`OP_TYPE`] to the ops `onnx` parses.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert(OP_TYPE, parse);
}

fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let k: usize = node.get_attr("K")?;
    let n: usize = node.get_attr("N")?;
    let gelu = node.get_attr_opt::<i64>("gelu")?.unwrap_or(0) != 0;
    let eps = node.get_attr_opt::<f32>("epsilon")?;
    ensure!(k > 0 && n > 0, "{OP_TYPE}: K and N must be above 0");
    ensure!(
        !(gelu && eps.is_some()),
        "{OP_TYPE}: GELU and a layer norm do not go together"
    );
    Ok((expand(BertDenseSpec { k, n, gelu, eps }), vec![]))
}

/// The parsed node, before its constants are known.
#[derive(Clone, Debug)]
struct BertDenseSpec {
    k: usize,
    n: usize,
    gelu: bool,
    eps: Option<f32>,
}

impl BertDenseSpec {
    fn arity(&self) -> usize {
        if self.eps.is_some() { 6 } else { 3 }
    }
}

impl Expansion for BertDenseSpec {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, self.arity())?;
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
        if self.eps.is_some() {
            s.equals(&inputs[3].datum_type, f32::datum_type())?;
            s.equals(&inputs[3].shape, &outputs[0].shape)?;
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let konst = |i: usize| -> TractResult<Arc<Tensor>> {
            model
                .outlet_fact(inputs[i])?
                .konst
                .clone()
                .with_context(|| format!("{OP_TYPE} {prefix}: input {i} must be a constant"))
        };
        let f32s = |t: Arc<Tensor>, len: usize, what: &str| -> TractResult<Vec<f32>> {
            let v = t.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
            ensure!(
                v.len() == len,
                "{OP_TYPE} {prefix}: {what} holds {} values, not {len}",
                v.len()
            );
            Ok(v)
        };
        let (n, k) = (self.n, self.k);
        let weight = konst(1)?;
        let weights = if weight.datum_type() == u8::datum_type() {
            let bytes: &[u8] = weight.try_as_plain_ram()?.as_slice()?;
            let w = QuantMatrix::new(BlockKind::Q8_0, n, k, bytes)?;
            DenseWeights::Q8(Arc::new(Q8Panels::from_q8_0(&w)?))
        } else {
            let w = weight.cast_to::<f32>()?;
            let mut packed = AlignedBuf::default();
            pack_panels(w.try_as_plain_ram()?.as_slice::<f32>()?, n, k, &mut packed)?;
            DenseWeights::F32(Arc::new(packed))
        };
        let bias = f32s(konst(2)?, n, "the bias")?;
        let norm = match self.eps {
            Some(eps) => Some(Arc::new(Norm {
                gamma: f32s(konst(4)?, n, "the norm's scale")?,
                beta: f32s(konst(5)?, n, "the norm's offset")?,
                eps,
            })),
            None => None,
        };
        let op = BertDense {
            n,
            k,
            weights,
            bias: Arc::new(bias),
            gelu: self.gelu,
            norm,
        };
        let wired: TVec<OutletId> = if op.norm.is_some() {
            tvec![inputs[0], inputs[3]]
        } else {
            tvec![inputs[0]]
        };
        model.wire_node(prefix, op, &wired)
    }
}

/// The weight of a [`BertDense`].
#[derive(Clone, Debug)]
enum DenseWeights {
    /// f32, packed in panels.
    F32(Arc<AlignedBuf>),
    /// Q8_0, bytes in panel order.
    Q8(Arc<Q8Panels>),
}

/// A layer norm's parameters.
#[derive(Debug)]
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

/// `y = x · Wᵀ + b`, then GELU, or a residual and a layer norm.
#[derive(Clone, Debug)]
pub struct BertDense {
    n: usize,
    k: usize,
    weights: DenseWeights,
    bias: Arc<Vec<f32>>,
    gelu: bool,
    norm: Option<Arc<Norm>>,
}

impl PartialEq for BertDense {
    fn eq(&self, other: &Self) -> bool {
        let same_weights = match (&self.weights, &other.weights) {
            (DenseWeights::F32(a), DenseWeights::F32(b)) => Arc::ptr_eq(a, b),
            (DenseWeights::Q8(a), DenseWeights::Q8(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        let same_norm = match (&self.norm, &other.norm) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        (self.n, self.k, self.gelu) == (other.n, other.k, other.gelu)
            && same_weights
            && same_norm
            && Arc::ptr_eq(&self.bias, &other.bias)
    }
}

impl Eq for BertDense {}

impl Op for BertDense {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let weights = match self.weights {
            DenseWeights::F32(_) => "f32",
            DenseWeights::Q8(_) => "Q8_0",
        };
        let then = match (self.gelu, &self.norm) {
            (true, _) => ", GELU",
            (false, Some(_)) => ", residual + layer norm",
            (false, None) => "",
        };
        Ok(vec![format!("{weights} {}x{}{then}", self.n, self.k)])
    }

    op_as_typed_op!();
}

thread_local! {
    /// The panels a Q8_0 weight was last decoded into on this thread, the buffer reused.
    static DECODED: std::cell::RefCell<AlignedBuf> = std::cell::RefCell::default();
}

impl EvalOp for BertDense {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let shape = x.shape();
        ensure!(
            shape.last() == Some(&self.k),
            "{OP_TYPE}: input shape {shape:?} does not end in {}",
            self.k
        );
        let mut out_shape: TVec<usize> = shape.into();
        if let Some(last) = out_shape.last_mut() {
            *last = self.n;
        }
        let residual = match (&self.norm, inputs.get(1)) {
            (Some(_), Some(r)) => {
                ensure!(
                    r.shape() == &*out_shape,
                    "{OP_TYPE}: residual {:?} for an output {out_shape:?}",
                    r.shape()
                );
                Some(r.try_as_plain_ram()?.as_slice::<f32>()?)
            }
            (Some(_), None) => bail!("{OP_TYPE}: the layer norm needs its residual"),
            (None, _) => None,
        };
        let x = x.try_as_plain_ram()?.as_slice::<f32>()?;
        let mut out = Tensor::zero::<f32>(&out_shape)?;
        if !x.is_empty() {
            let mut view = out.try_as_plain_ram_mut()?;
            let y = view.as_slice_mut::<f32>()?;
            match &self.weights {
                DenseWeights::F32(p) => self.product(x, p.as_slice(), residual, y)?,
                DenseWeights::Q8(w) => DECODED.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut buf) => self.q8_product(w, &mut buf, x, residual, y),
                    Err(_) => self.q8_product(w, &mut AlignedBuf::default(), x, residual, y),
                })?,
            }
        }
        Ok(tvec![out.into_tvalue()])
    }
}

impl BertDense {
    /// Decodes `w` into `buf`, a share of panels per thread, then runs the product on it.
    fn q8_product(
        &self,
        w: &Q8Panels,
        buf: &mut AlignedBuf,
        x: &[f32],
        residual: Option<&[f32]>,
        y: &mut [f32],
    ) -> TractResult<()> {
        let len = panels_len(self.n, self.k);
        buf.set_len(len);
        tract_linalg::multithread::par_chunks_mut(
            buf.as_mut_slice(),
            self.k * PANEL,
            len,
            |p0, chunk| Ok(w.decode(p0, chunk)?),
        )?;
        self.product(x, buf.as_slice(), residual, y)
    }

    /// `y` from the activations `x` and the packed weight, activation rows split over
    /// tract's executor.
    fn product(
        &self,
        x: &[f32],
        panels: &[f32],
        residual: Option<&[f32]>,
        y: &mut [f32],
    ) -> TractResult<()> {
        let (n, k) = (self.n, self.k);
        let panels = Panels::new(panels, n, k)?;
        let act = if self.gelu {
            Activation::Gelu
        } else {
            Activation::Identity
        };
        let work = y.len().saturating_mul(k);
        tract_linalg::multithread::par_chunks_mut(y, n, work, |r0, chunk| {
            let rows = chunk.len() / n;
            let xs = x
                .get(r0 * k..(r0 + rows) * k)
                .context("activation rows out of range")?;
            gemm_bias(xs, panels, &self.bias, act, chunk)?;
            if let (Some(norm), Some(res)) = (&self.norm, residual) {
                let res = res
                    .get(r0 * n..(r0 + rows) * n)
                    .context("residual rows out of range")?;
                add_layer_norm(chunk, res, &norm.gamma, &norm.beta, norm.eps)?;
            }
            Ok(())
        })
    }
}

impl TypedOp for BertDense {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        ensure!(
            x.datum_type == f32::datum_type() && x.shape.last() == Some(&self.k.to_dim()),
            "{OP_TYPE}: input must be f32 [.., {}], got {:?}",
            self.k,
            x.shape
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
