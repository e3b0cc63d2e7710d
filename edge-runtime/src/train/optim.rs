//! AdamW with decoupled weight decay and a warmup + cosine/linear/constant learning-rate
//! schedule. Its state (first and second moments per variable) is plain tensors so that a
//! checkpoint can store and restore it exactly.

use anyhow::{Result, ensure};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

/// Shape of the learning rate after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Schedule {
    /// Half a cosine from the peak down to 10 % of it at the last step.
    Cosine,
    /// A straight line from the peak down to 10 % of it at the last step.
    Linear,
    /// The peak throughout.
    Constant,
}

/// Learning rate at optimizer step `step` (0-based) of `total`.
pub fn learning_rate(
    peak: f64,
    warmup: usize,
    total: usize,
    schedule: Schedule,
    step: usize,
) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let floor = 0.1 * peak;
    match schedule {
        Schedule::Constant => peak,
        Schedule::Linear => floor + (peak - floor) * (1.0 - progress),
        Schedule::Cosine => {
            floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

/// AdamW hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWParams {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator guard.
    pub eps: f64,
    /// Decoupled weight decay per unit learning rate.
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW over a fixed list of variables.
pub struct AdamW {
    params: AdamWParams,
    vars: Vec<Var>,
    /// First moments, one per variable.
    pub m: Vec<Tensor>,
    /// Second moments, one per variable.
    pub v: Vec<Tensor>,
    /// Steps taken.
    pub t: u64,
}

impl AdamW {
    /// An optimizer with zero moments for `vars`.
    pub fn new(vars: Vec<Var>, params: AdamWParams) -> Result<Self> {
        let m = vars
            .iter()
            .map(|v| v.as_tensor().zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(AdamW {
            params,
            vars,
            m,
            v,
            t: 0,
        })
    }

    /// One update with `grads` (a missing gradient counts as zero) at learning rate `lr`;
    /// the gradients are first scaled down to a global norm of at most `max_norm`.
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64, max_norm: f64) -> Result<f64> {
        ensure!(grads.len() == self.vars.len(), "one gradient per variable");
        let mut sq = 0.0f64;
        for g in grads.iter().flatten() {
            sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
        let norm = sq.sqrt();
        let clip = if norm > max_norm && norm > 0.0 {
            max_norm / norm
        } else {
            1.0
        };
        self.t += 1;
        let p = self.params;
        let bc1 = 1.0 - p.beta1.powi(self.t as i32);
        let bc2 = 1.0 - p.beta2.powi(self.t as i32);
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = &grads[i] else { continue };
            let g = (g * clip)?;
            let m = ((&self.m[i] * p.beta1)? + (&g * (1.0 - p.beta1))?)?;
            let v = ((&self.v[i] * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let m_hat = (&m / bc1)?;
            let v_hat = (&v / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            let theta = var.as_tensor();
            let next = ((theta * (1.0 - lr * p.weight_decay))? - (update * lr)?)?;
            var.set(&next)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(norm)
    }

    /// Gradients of every variable from a backward pass, in variable order.
    pub fn grads_of(&self, store: &GradStore) -> Vec<Option<Tensor>> {
        self.vars
            .iter()
            .map(|v| store.get(v.as_tensor()).cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_rises_then_cosine_falls_to_a_tenth() {
        let lr = |s| learning_rate(1.0, 10, 110, Schedule::Cosine, s);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!((lr(110) - 0.1).abs() < 1e-12);
        assert!(lr(60) < lr(30));
        assert!((learning_rate(1.0, 0, 100, Schedule::Linear, 50) - 0.55).abs() < 1e-12);
    }

    #[test]
    fn adamw_minimises_a_quadratic() {
        let x = Var::new(&[3.0f32, -2.0], &candle_core::Device::Cpu).expect("var");
        let mut opt = AdamW::new(vec![x.clone()], AdamWParams::default()).expect("opt");
        for _ in 0..300 {
            let loss = x.as_tensor().sqr().and_then(|t| t.sum_all()).expect("loss");
            let grads = loss.backward().expect("backward");
            let g = opt.grads_of(&grads);
            opt.step(&g, 0.05, 1e9).expect("step");
        }
        let v = x.as_tensor().to_vec1::<f32>().expect("values");
        assert!(v.iter().all(|x| x.abs() < 0.05), "{v:?}");
    }
}
