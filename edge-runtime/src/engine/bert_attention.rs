//! `BertAttention`, a tract op computing an encoder layer's whole self-attention in one step:
//! from the query, key and value projections side by side in each row (`[batch, seq, 3 ·
//! hidden]` f32: the queries, then the keys, then the values, heads side by side in each, as
//! one linear map over the three weights writes them) and the `[batch, seq]` attention mask,
//! the `[batch, seq, hidden]` context, `softmax(Q Kᵀ / √head_dim) V` per head. Each head is read
//! in place through strides ([`kernels::attention`](crate::engine::kernels::attention)):
//! no reshape, transpose or broadcast mask is materialised, and only the attended tokens are
//! computed. The batch is split over tract's current executor.
//!
//! The mask must be ones then zeros in every row (padding at the end, as
//! [`Embedder`](crate::engine::embed::Embedder) pads); the context rows of padding are zero.
//! In ONNX it is a node of domain [`DOMAIN`], inputs `qkv`, `attention_mask`, attribute
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
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].rank, 3)?;
        s.equals(&outputs[0].rank, 3)?;
        s.equals(&inputs[1].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], &inputs[0].shape[1])?;
        s.given(&inputs[0].shape[2], move |s, width| {
            s.equals(&outputs[0].shape[2], width / 3)
        })?;
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

/// Multi-head self-attention over `[batch, seq, 3 · hidden]` projections under a padding
/// mask.
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
        let (qkv, mask) = args_2!(inputs);
        let shape: TVec<usize> = qkv.shape().into();
        ensure!(
            shape.len() == 3 && shape[2].is_multiple_of(3),
            "{OP_TYPE}: qkv must be [batch, seq, 3 · hidden], got {shape:?}"
        );
        let (batch, seq, hidden) = (shape[0], shape[1], shape[2] / 3);
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
        let qkv = qkv.try_as_plain_ram()?;
        let qkv = qkv.as_slice::<f32>()?;
        let mut out = Tensor::zero::<f32>(&[batch, seq, hidden])?;
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
                    let qkv_b = &qkv[3 * b * per_batch..3 * (b + 1) * per_batch];
                    let (qb, kb, vb) = (qkv_b, &qkv_b[hidden..], &qkv_b[2 * hidden..]);
                    for h in 0..self.heads {
                        let rows = HeadRows {
                            offset: h * d,
                            stride: 3 * hidden,
                        };
                        let out_rows = HeadRows {
                            offset: h * d,
                            stride: hidden,
                        };
                        attention_head(
                            qb,
                            kb,
                            vb,
                            out_b,
                            (rows, out_rows),
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
            inputs.len() == 2 && inputs[0].datum_type == f32::datum_type(),
            "{OP_TYPE}: qkv must be f32, with a mask"
        );
        let shape = &inputs[0].shape;
        ensure!(
            shape.rank() == 3,
            "{OP_TYPE}: qkv must be [batch, seq, 3 · hidden]"
        );
        let width = shape[2].to_usize()?;
        ensure!(
            width.is_multiple_of(3),
            "{OP_TYPE}: qkv width {width} is not 3 · hidden"
        );
        Ok(tvec![f32::fact([
            shape[0].clone(),
            shape[1].clone(),
            (width / 3).to_dim()
        ])])
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
            let qkv: Vec<f32> = x
                .chunks_exact(hidden)
                .flat_map(|row| row.iter().chain(row).chain(row).copied())
                .collect();
            let qkv = Tensor::from_shape(&[1, seq, 3 * hidden], &qkv)
                .expect("t")
                .into_tvalue();
            let m = Tensor::from_shape(&[1, seq], mask)
                .expect("m")
                .into_tvalue();
            let out = op
                .eval(&EvalContext::out_of_plan(), tvec![qkv, m])
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
