//! `BertAttention`, a tract op computing an encoder layer's whole self-attention in one step:
//! from the query, key and value projections (`[batch, seq, hidden]` f32, heads side by side
//! in each row, as the linear maps write them) and the `[batch, seq]` attention mask, the
//! `[batch, seq, hidden]` context, `softmax(Q Kᵀ / √head_dim) V` per head. Each head is read
//! in place through strides ([`kernels::attention`](crate::engine::kernels::attention)):
//! no reshape, transpose or broadcast mask is materialised, and only the attended tokens are
//! computed. The batch is split over tract's current executor.
//!
//! The mask must be ones then zeros in every row (padding at the end, as
//! [`Embedder`](crate::engine::embed::Embedder) pads); the context rows of padding are zero.
//! In ONNX it is a node of domain [`DOMAIN`], inputs `q`, `k`, `v`, `attention_mask`, attribute
//! `heads`; [`register`] teaches a tract ONNX parser to read it.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use crate::engine::kernels::attention::{HeadRows, RowSoftmax, attention_head};

/// ONNX domain of the node.
pub const DOMAIN: &str = "org.thermo.bert";
/// ONNX op type of the node.
pub const OP_TYPE: &str = "BertAttention";

/// Adds [`OP_TYPE`] to the ops `onnx` parses.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert(OP_TYPE, parse);
}

fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let heads: usize = node.get_attr("heads")?;
    ensure!(heads > 0, "{OP_TYPE}: heads must be above 0");
    Ok((expand(BertAttention { heads }), vec![]))
}

impl Expansion for BertAttention {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 4)?;
        check_output_arity(outputs, 1)?;
        for input in &inputs[..3] {
            s.equals(&input.datum_type, f32::datum_type())?;
            s.equals(&input.shape, &outputs[0].shape)?;
        }
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].rank, 3)?;
        s.equals(&inputs[3].rank, 2)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.clone(), inputs)
    }
}

/// Multi-head self-attention over `[batch, seq, hidden]` projections under a padding mask.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BertAttention {
    heads: usize,
}

impl BertAttention {
    /// Attention with `heads` heads (which must divide the hidden width).
    pub fn new(heads: usize) -> Self {
        Self { heads }
    }
}

impl Op for BertAttention {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{} heads", self.heads)])
    }

    op_as_typed_op!();
}

/// Attended tokens of each mask row: its leading ones, the rest being zeros.
fn lengths(mask: &[i64], seq: usize) -> TractResult<Vec<usize>> {
    mask.chunks_exact(seq.max(1))
        .map(|row| {
            let len = row.iter().take_while(|&&m| m != 0).count();
            ensure!(
                row[len..].iter().all(|&m| m == 0),
                "{OP_TYPE}: an attention mask row is not ones then zeros"
            );
            Ok(len)
        })
        .collect()
}

impl EvalOp for BertAttention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (q, k, v, mask) = args_4!(inputs);
        let shape: TVec<usize> = q.shape().into();
        ensure!(
            shape.len() == 3 && k.shape() == &*shape && v.shape() == &*shape,
            "{OP_TYPE}: q, k and v must share one [batch, seq, hidden] shape, got {:?}, {:?}, \
             {:?}",
            q.shape(),
            k.shape(),
            v.shape()
        );
        let (batch, seq, hidden) = (shape[0], shape[1], shape[2]);
        ensure!(
            mask.shape() == [batch, seq],
            "{OP_TYPE}: mask {:?} for projections {shape:?}",
            mask.shape()
        );
        ensure!(
            hidden.is_multiple_of(self.heads),
            "{OP_TYPE}: {} heads do not divide {hidden}",
            self.heads
        );
        let d = hidden / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mask = mask.cast_to::<i64>()?;
        let lens = lengths(mask.try_as_plain_ram()?.as_slice::<i64>()?, seq)?;
        let (q, k, v) = (
            q.try_as_plain_ram()?.as_slice::<f32>()?,
            k.try_as_plain_ram()?.as_slice::<f32>()?,
            v.try_as_plain_ram()?.as_slice::<f32>()?,
        );
        let mut out = Tensor::zero::<f32>(&shape)?;
        let per_batch = seq * hidden;
        if per_batch > 0 {
            let mut view = out.try_as_plain_ram_mut()?;
            let y = view.as_slice_mut::<f32>()?;
            let work = batch.saturating_mul(seq * seq).saturating_mul(hidden);
            tract_linalg::multithread::par_chunks_mut(y, per_batch, work, |b0, chunk| {
                let softmax = RowSoftmax::new()?;
                let mut scores = Vec::new();
                for (i, out_b) in chunk.chunks_exact_mut(per_batch).enumerate() {
                    let b = b0 + i;
                    let len = lens[b];
                    scores.resize(len * (len + 1), 0.0);
                    let at = b * per_batch..(b + 1) * per_batch;
                    let (qb, kb, vb) = (&q[at.clone()], &k[at.clone()], &v[at]);
                    for h in 0..self.heads {
                        let rows = HeadRows {
                            offset: h * d,
                            stride: hidden,
                        };
                        attention_head(
                            qb,
                            kb,
                            vb,
                            out_b,
                            rows,
                            (len, d),
                            scale,
                            &softmax,
                            &mut scores,
                        )?;
                    }
                }
                Ok(())
            })?;
        }
        Ok(tvec![out.into_tvalue()])
    }
}

impl TypedOp for BertAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 4
                && inputs[..3]
                    .iter()
                    .all(|f| f.datum_type == f32::datum_type()),
            "{OP_TYPE}: q, k and v must be f32, with a mask"
        );
        Ok(tvec![f32::fact(inputs[0].shape.clone())])
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_rows_give_their_leading_ones_and_a_gap_is_refused() {
        assert_eq!(
            lengths(&[1, 1, 0, 1, 1, 1, 0, 0, 0], 3).expect("prefixes"),
            [2, 3, 0]
        );
        assert!(lengths(&[1, 0, 1], 3).is_err());
    }

    #[test]
    fn padding_rows_are_zero_and_attended_rows_ignore_the_padding() {
        let (seq, hidden) = (4, 8);
        let op = BertAttention::new(2);
        let x: Vec<f32> = (0..seq * hidden)
            .map(|i| (i % 7) as f32 / 3.0 - 1.0)
            .collect();
        let run = |x: &[f32], mask: &[i64]| {
            let t = |v: &[f32]| {
                Tensor::from_shape(&[1, seq, hidden], v)
                    .expect("t")
                    .into_tvalue()
            };
            let m = Tensor::from_shape(&[1, seq], mask)
                .expect("m")
                .into_tvalue();
            let out = op
                .eval(&EvalContext::out_of_plan(), tvec![t(x), t(x), t(x), m])
                .expect("runs");
            out[0]
                .try_as_plain_ram()
                .expect("ram")
                .as_slice::<f32>()
                .expect("f32")
                .to_vec()
        };
        let full = run(&x, &[1, 1, 1, 1]);
        let padded = run(&x, &[1, 1, 0, 0]);
        assert!(padded[2 * hidden..].iter().all(|&v| v == 0.0));
        // Other values where the padding is: the first two rows do not change.
        let mut y = x.clone();
        y[2 * hidden..].iter_mut().for_each(|v| *v += 5.0);
        assert_eq!(run(&y, &[1, 1, 0, 0])[..2 * hidden], padded[..2 * hidden]);
        assert_ne!(full[..2 * hidden], padded[..2 * hidden]);
    }
}
