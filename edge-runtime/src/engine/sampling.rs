//! Next-token selection from a logits row: greedy, temperature, top-k, top-p and a
//! repetition penalty, reproducible under a seed. Pure: no model, no I/O.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; `0.0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens; `0` disables.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability mass reaches `p`; `1.0` disables.
    pub top_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens; `1.0` disables.
    pub repeat_penalty: f32,
    /// How many of the most recent tokens the repetition penalty looks at.
    pub repeat_last_n: usize,
    /// Seed of the random generator (sampling is reproducible for a given seed).
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 42,
        }
    }
}

/// Why a set of sampling parameters was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplingError {
    /// Temperature negative or not finite.
    #[error("temperature must be a finite number >= 0, got {0}")]
    Temperature(f32),
    /// top-p outside (0, 1].
    #[error("top-p must be in (0, 1], got {0}")]
    TopP(f32),
    /// Repetition penalty not strictly positive.
    #[error("repeat penalty must be a finite number > 0, got {0}")]
    RepeatPenalty(f32),
    /// The logits row was empty.
    #[error("empty logits row")]
    EmptyLogits,
}

impl SamplingParams {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), SamplingError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(SamplingError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::TopP(self.top_p));
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            return Err(SamplingError::RepeatPenalty(self.repeat_penalty));
        }
        Ok(())
    }
}

/// A stateful sampler (it owns the random generator).
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    scratch: Vec<(u32, f32)>,
}

impl Sampler {
    /// Builds a sampler after validating `params`.
    pub fn new(params: SamplingParams) -> Result<Self, SamplingError> {
        params.validate()?;
        let rng = StdRng::seed_from_u64(params.seed);
        Ok(Sampler {
            params,
            rng,
            scratch: Vec::new(),
        })
    }

    /// The parameters in use.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Chooses the next token from `logits` (modified in place by the penalty), given the
    /// tokens generated or read so far (`history`, oldest first).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> Result<u32, SamplingError> {
        if logits.is_empty() {
            return Err(SamplingError::EmptyLogits);
        }
        let start = history.len().saturating_sub(self.params.repeat_last_n);
        apply_repeat_penalty(logits, self.params.repeat_penalty, &history[start..]);
        if self.params.temperature == 0.0 {
            return Ok(argmax(logits));
        }
        let inv_t = 1.0 / self.params.temperature;
        let scratch = &mut self.scratch;
        scratch.clear();
        scratch.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l * inv_t)),
        );
        scratch.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if self.params.top_k > 0 && self.params.top_k < scratch.len() {
            scratch.truncate(self.params.top_k);
        }
        // Softmax over the survivors, most likely first.
        let max = scratch[0].1;
        let mut total = 0.0f32;
        for entry in scratch.iter_mut() {
            entry.1 = (entry.1 - max).exp();
            total += entry.1;
        }
        let mut keep = scratch.len();
        if self.params.top_p < 1.0 {
            let mut mass = 0.0f32;
            for (i, entry) in scratch.iter().enumerate() {
                mass += entry.1 / total;
                if mass >= self.params.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        let kept = &scratch[..keep];
        let kept_total: f32 = kept.iter().map(|e| e.1).sum();
        let mut r = self.rng.random::<f32>() * kept_total;
        for &(id, p) in kept {
            if r < p {
                return Ok(id);
            }
            r -= p;
        }
        Ok(kept[keep - 1].0)
    }
}

/// Index of the largest value (the first one on ties). `logits` must not be empty.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The CTRL-paper repetition penalty as llama.cpp and transformers apply it: each distinct
/// token in `recent` gets its logit divided by `penalty` when positive, multiplied when negative.
pub fn apply_repeat_penalty(logits: &mut [f32], penalty: f32, recent: &[u32]) {
    if penalty == 1.0 {
        return;
    }
    let mut seen: Vec<u32> = recent.to_vec();
    seen.sort_unstable();
    seen.dedup();
    for id in seen {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = if *l >= 0.0 {
                *l / penalty
            } else {
                *l * penalty
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(p: SamplingParams) -> Sampler {
        Sampler::new(p).expect("valid params")
    }

    #[test]
    fn greedy_picks_the_largest_logit() {
        let mut s = sampler(SamplingParams::default());
        let mut logits = vec![0.1, 2.5, -1.0, 2.4];
        assert_eq!(s.sample(&mut logits, &[]).ok(), Some(1));
    }

    #[test]
    fn repeat_penalty_divides_positive_and_multiplies_negative_logits() {
        let mut logits = vec![2.0, -2.0, 1.0];
        apply_repeat_penalty(&mut logits, 2.0, &[0, 1, 1]);
        assert_eq!(logits, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn repeat_penalty_can_change_the_greedy_choice() {
        let p = SamplingParams {
            repeat_penalty: 1.5,
            ..Default::default()
        };
        let mut s = sampler(p);
        let mut logits = vec![3.0, 2.5];
        assert_eq!(s.sample(&mut logits, &[0]).ok(), Some(1));
    }

    #[test]
    fn same_seed_gives_the_same_tokens() {
        let p = SamplingParams {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        };
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |p: SamplingParams| {
            let mut s = sampler(p);
            (0..20)
                .map(|_| s.sample(&mut logits.clone(), &[]).unwrap_or(u32::MAX))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(p.clone()), draw(p.clone()));
        assert_ne!(draw(p.clone()), draw(SamplingParams { seed: 8, ..p }));
    }

    #[test]
    fn top_k_one_is_greedy_even_when_hot() {
        let p = SamplingParams {
            temperature: 5.0,
            top_k: 1,
            ..Default::default()
        };
        let mut s = sampler(p);
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 1.0, 0.5], &[]).ok(), Some(1));
        }
    }

    #[test]
    fn top_p_drops_the_unlikely_tail() {
        // probabilities ~ [0.84, 0.11, 0.04, 0.01]: top-p 0.8 keeps only the first.
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.8,
            ..Default::default()
        };
        let mut s = sampler(p);
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [4.0, 2.0, 1.0, -0.5], &[]).ok(), Some(0));
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let p = SamplingParams {
            temperature: 1.0,
            seed: 3,
            ..Default::default()
        };
        let mut s = sampler(p);
        let (a, b) = (0.0f32, (3.0f32).ln()); // p = [0.25, 0.75]
        let n = 4000;
        let ones = (0..n)
            .filter(|_| s.sample(&mut [a, b], &[]).ok() == Some(1))
            .count();
        let frac = ones as f32 / n as f32;
        assert!((frac - 0.75).abs() < 0.03, "fraction of token 1 was {frac}");
    }

    #[test]
    fn rejects_out_of_range_parameters() {
        let bad = [
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            SamplingParams {
                repeat_penalty: 0.0,
                ..Default::default()
            },
        ];
        for p in bad {
            assert!(Sampler::new(p.clone()).is_err(), "{p:?} was accepted");
        }
    }

    #[test]
    fn empty_logits_are_an_error() {
        let mut s = sampler(SamplingParams::default());
        assert_eq!(s.sample(&mut [], &[]), Err(SamplingError::EmptyLogits));
    }
}
