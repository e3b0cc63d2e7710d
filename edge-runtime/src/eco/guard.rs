//! The zombie-compute guard: watches a generation token by token and stops it when it has
//! gone degenerate (an exactly repeating cycle of tokens, a stuck token, collapsed entropy
//! with nothing new, or no new n-gram over a window) or when it exceeds its budget (tokens,
//! seconds, joules, g CO2e). It plugs into `engine::generate::generate` as the gate closure
//! (alone or in front of the governor's gate), reports why it stopped, and counts the energy
//! the stop avoided: the remaining budget at the rate observed so far.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::energy::{Mark, MeterHandle};
use crate::engine::generate::{Gate, TokenEvent};

/// Per-request budgets; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Most tokens.
    pub max_tokens: Option<usize>,
    /// Most wall seconds.
    pub max_seconds: Option<f64>,
    /// Most joules at the board.
    pub max_joules: Option<f64>,
    /// Most grams of CO2e.
    pub max_g_co2e: Option<f64>,
}

/// Detector thresholds and budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// Longest token cycle looked for.
    pub max_period: usize,
    /// A cycle must span at least this many tokens (a stuck token: this many in a row).
    pub min_cycle_tokens: usize,
    /// A cycle must repeat at least this many times (a list or a refrain may say one line
    /// twice; half a period more tells a loop from it).
    pub min_cycle_repeats: f64,
    /// A cycle spanning this many tokens is a loop however few times it repeated (never
    /// fewer than two), so that long cycles are caught this soon.
    pub max_cycle_span: usize,
    /// Tokens over which mean entropy is taken.
    pub entropy_window: usize,
    /// Mean entropy (bits) below which the distribution counts as collapsed.
    pub entropy_floor_bits: f64,
    /// Tokens over which new n-grams are looked for.
    pub novelty_window: usize,
    /// n of the n-grams.
    pub novelty_ngram: usize,
    /// Stop when fewer than this fraction of the window's n-grams are new.
    pub novelty_min_fraction: f64,
    /// Budgets.
    pub budget: Budget,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            max_period: 32,
            min_cycle_tokens: 16,
            min_cycle_repeats: 2.5,
            max_cycle_span: 64,
            entropy_window: 32,
            entropy_floor_bits: 0.05,
            novelty_window: 48,
            novelty_ngram: 4,
            novelty_min_fraction: 0.2,
            budget: Budget::default(),
        }
    }
}

/// What the guard stopped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum GuardKind {
    /// A cycle of tokens repeating exactly.
    Cycle,
    /// One token repeated.
    StuckToken,
    /// Near-certain predictions and little new content.
    EntropyCollapse,
    /// No new n-gram over the novelty window.
    NoNewContent,
    /// Token budget.
    TokenBudget,
    /// Time budget.
    TimeBudget,
    /// Energy budget.
    EnergyBudget,
    /// Carbon budget.
    CarbonBudget,
}

impl GuardKind {
    /// True for the degenerate-output detectors (not budgets).
    pub fn is_degenerate(self) -> bool {
        matches!(
            self,
            GuardKind::Cycle
                | GuardKind::StuckToken
                | GuardKind::EntropyCollapse
                | GuardKind::NoNewContent
        )
    }
}

/// Why and where the guard stopped a generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardStop {
    /// The detector or budget.
    pub kind: GuardKind,
    /// A sentence for the user and telemetry.
    pub reason: String,
    /// Tokens generated when it stopped.
    pub at_token: usize,
    /// Where the degenerate stretch began (token index), for the detectors.
    pub loop_start: Option<usize>,
    /// Energy the stop avoided (J): the remaining budget at the observed rate.
    pub avoided_j: Option<f64>,
}

impl fmt::Display for GuardStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "zombie guard: {}", self.reason)?;
        if let Some(j) = self.avoided_j {
            write!(f, " ({j:.1} J avoided)")?;
        }
        Ok(())
    }
}

/// Shannon entropy (bits) of softmax(`logits`).
pub fn entropy_bits(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return 0.0;
    }
    let mut z = 0.0f64;
    let mut s = 0.0f64;
    for &l in logits {
        let x = f64::from(l - max);
        let e = x.exp();
        z += e;
        s += e * x;
    }
    if z <= 0.0 {
        return 0.0;
    }
    // H = log z - E[x] (natural units), converted to bits.
    (z.ln() - s / z) / std::f64::consts::LN_2
}

fn ngram_key(tokens: &[u32]) -> u64 {
    // FNV-1a over the ids: collisions only make the detector more lenient.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &t in tokens {
        for b in t.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Watches one generation.
#[derive(Debug)]
pub struct ZombieGuard {
    cfg: GuardConfig,
    g_co2e_per_j: f64,
    tokens: Vec<u32>,
    runs: Vec<usize>,
    entropies: VecDeque<f64>,
    seen: HashSet<u64>,
    novel: VecDeque<bool>,
    started: Instant,
    stop: Option<GuardStop>,
}

impl ZombieGuard {
    /// A guard with `cfg`; `g_co2e_per_j` converts energy into the carbon budget's unit.
    pub fn new(cfg: GuardConfig, g_co2e_per_j: f64) -> Self {
        let runs = vec![0; cfg.max_period + 1];
        ZombieGuard {
            cfg,
            g_co2e_per_j,
            tokens: vec![],
            runs,
            entropies: VecDeque::new(),
            seen: HashSet::new(),
            novel: VecDeque::new(),
            started: Instant::now(),
            stop: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GuardConfig {
        &self.cfg
    }

    /// Why it stopped, once it has.
    pub fn stopped(&self) -> Option<&GuardStop> {
        self.stop.as_ref()
    }

    /// Seconds since the guard was made.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Looks at the state before the next token: `energy_j` is the energy spent on this
    /// request so far and `elapsed_s` its wall time.
    pub fn check(&mut self, event: &TokenEvent<'_>, elapsed_s: f64, energy_j: f64) -> Gate {
        if let Some(stop) = &self.stop {
            return Gate::Stop(stop.to_string());
        }
        // The logits are those of the token about to be sampled: score them first so the
        // window covers the newest prediction.
        if let Some(logits) = event.logits {
            self.entropies.push_back(entropy_bits(logits));
            while self.entropies.len() > self.cfg.entropy_window {
                self.entropies.pop_front();
            }
        }
        let new_from = self.tokens.len().min(event.generated.len());
        if event.generated.len() < self.tokens.len() {
            self.tokens.truncate(event.generated.len());
        }
        let mut found = None;
        for &id in &event.generated[new_from..] {
            self.tokens.push(id);
            let f = self.observe_token();
            if found.is_none() {
                found = f;
            }
        }
        let n = self.tokens.len();
        let found = found
            .or_else(|| self.entropy_collapse())
            .or_else(|| self.budget_exceeded(n, elapsed_s, energy_j));
        match found {
            Some((kind, reason, loop_start)) => {
                let avoided_j = if kind.is_degenerate() {
                    self.avoided_j(n, elapsed_s, energy_j)
                } else {
                    None
                };
                let stop = GuardStop {
                    kind,
                    reason,
                    at_token: n,
                    loop_start,
                    avoided_j,
                };
                let gate = Gate::Stop(stop.to_string());
                self.stop = Some(stop);
                gate
            }
            None => Gate::Continue,
        }
    }

    /// Tokens a cycle of `p` tokens must span to count as a loop.
    fn cycle_span(&self, p: usize) -> usize {
        let repeats = (self.cfg.min_cycle_repeats.max(1.0) * p as f64).ceil() as usize;
        self.cfg
            .min_cycle_tokens
            .max(repeats.min(self.cfg.max_cycle_span.max(2 * p)))
    }

    /// Updates the detectors with the newest token.
    fn observe_token(&mut self) -> Option<(GuardKind, String, Option<usize>)> {
        let i = self.tokens.len() - 1;
        let mut hit = None;
        for p in 1..=self.cfg.max_period {
            if i >= p && self.tokens.get(i) == self.tokens.get(i - p) {
                self.runs[p] += 1;
            } else {
                self.runs[p] = 0;
            }
            let span = self.runs[p] + p;
            let need = self.cycle_span(p);
            if hit.is_none() && self.runs[p] > 0 && span >= need {
                let start = i + 1 - span;
                hit = Some(if p == 1 {
                    (
                        GuardKind::StuckToken,
                        format!(
                            "stuck token: id {} repeated {span} times from token {start}",
                            self.tokens[i]
                        ),
                        Some(start),
                    )
                } else {
                    (
                        GuardKind::Cycle,
                        format!(
                            "a {p}-token cycle repeated {:.1} times from token {start}",
                            span as f64 / p as f64
                        ),
                        Some(start),
                    )
                });
            }
        }
        let n = self.cfg.novelty_ngram.max(1);
        if self.tokens.len() >= n {
            let key = ngram_key(&self.tokens[self.tokens.len() - n..]);
            let is_new = self.seen.insert(key);
            self.novel.push_back(is_new);
            while self.novel.len() > self.cfg.novelty_window {
                self.novel.pop_front();
            }
            let w = self.cfg.novelty_window;
            let new = self.novel.iter().filter(|&&b| b).count();
            if hit.is_none()
                && w > 0
                && self.novel.len() == w
                && (new as f64) < self.cfg.novelty_min_fraction * w as f64
            {
                let start = self.tokens.len() - w;
                hit = Some((
                    GuardKind::NoNewContent,
                    format!("only {new} new {n}-grams in the last {w} tokens (from token {start})"),
                    Some(start),
                ));
            }
        }
        hit
    }

    fn entropy_collapse(&self) -> Option<(GuardKind, String, Option<usize>)> {
        let w = self.cfg.entropy_window;
        if w == 0 || self.entropies.len() < w || self.novel.len() < w {
            return None;
        }
        let mean = self.entropies.iter().sum::<f64>() / w as f64;
        let novel = self.novel.iter().rev().take(w).filter(|&&b| b).count();
        // Collapsed entropy alone is a confident answer; with under half the window new it
        // is a confident loop.
        if mean < self.cfg.entropy_floor_bits && novel * 2 < w {
            let start = self.tokens.len().saturating_sub(w);
            Some((
                GuardKind::EntropyCollapse,
                format!(
                    "entropy collapsed to {mean:.3} bits/token with {novel} of the last {w} \
                     tokens new (from token {start})"
                ),
                Some(start),
            ))
        } else {
            None
        }
    }

    fn budget_exceeded(
        &self,
        n: usize,
        elapsed_s: f64,
        energy_j: f64,
    ) -> Option<(GuardKind, String, Option<usize>)> {
        let b = &self.cfg.budget;
        if let Some(max) = b.max_tokens
            && n >= max
        {
            return Some((
                GuardKind::TokenBudget,
                format!("token budget of {max} reached"),
                None,
            ));
        }
        if let Some(max) = b.max_seconds
            && elapsed_s >= max
        {
            return Some((
                GuardKind::TimeBudget,
                format!("time budget of {max} s reached after {elapsed_s:.2} s"),
                None,
            ));
        }
        if let Some(max) = b.max_joules
            && energy_j >= max
        {
            return Some((
                GuardKind::EnergyBudget,
                format!("energy budget of {max} J reached ({energy_j:.2} J)"),
                None,
            ));
        }
        let g = energy_j * self.g_co2e_per_j;
        if let Some(max) = b.max_g_co2e
            && g >= max
        {
            return Some((
                GuardKind::CarbonBudget,
                format!("carbon budget of {max} g CO2e reached ({g:.4} g)"),
                None,
            ));
        }
        None
    }

    /// The remaining budget at the rate observed so far (J), the tightest budget deciding;
    /// `None` without any budget or before any energy was measured.
    fn avoided_j(&self, n: usize, elapsed_s: f64, energy_j: f64) -> Option<f64> {
        if n == 0 || energy_j <= 0.0 {
            return None;
        }
        let b = &self.cfg.budget;
        let per_token = energy_j / n as f64;
        let per_s = if elapsed_s > 0.0 {
            energy_j / elapsed_s
        } else {
            0.0
        };
        let mut left: Vec<f64> = vec![];
        if let Some(max) = b.max_tokens {
            left.push(max.saturating_sub(n) as f64 * per_token);
        }
        if let Some(max) = b.max_seconds {
            left.push((max - elapsed_s).max(0.0) * per_s);
        }
        if let Some(max) = b.max_joules {
            left.push((max - energy_j).max(0.0));
        }
        if let Some(max) = b.max_g_co2e
            && self.g_co2e_per_j > 0.0
        {
            left.push((max / self.g_co2e_per_j - energy_j).max(0.0));
        }
        left.into_iter().reduce(f64::min)
    }

    /// A gate for `generate`: checks each token against the detectors and the budgets, with
    /// the request's energy read from `meter` since `start` (0 J without a meter).
    pub fn gate<'a>(
        &'a mut self,
        meter: Option<&'a MeterHandle>,
        start: Option<Mark>,
    ) -> impl FnMut(TokenEvent<'_>) -> Gate + 'a {
        move |event| {
            let energy = match (meter, &start) {
                (Some(m), Some(s)) => m.since(s).energy_j,
                _ => 0.0,
            };
            let elapsed = self.elapsed_s();
            self.check(&event, elapsed, energy)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(guard: &mut ZombieGuard, tokens: &[u32]) -> Option<usize> {
        for n in 0..=tokens.len() {
            let ev = TokenEvent {
                generated: &tokens[..n],
                logits: None,
            };
            if let Gate::Stop(_) = guard.check(&ev, 0.0, 0.0) {
                return Some(n);
            }
        }
        None
    }

    fn prose(n: usize) -> Vec<u32> {
        // A pseudo-random walk over a 500-token vocabulary: no cycles.
        let mut x: u64 = 12345;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) % 500) as u32
            })
            .collect()
    }

    #[test]
    fn stops_a_seven_token_cycle_within_three_periods_of_its_start() {
        let mut tokens = prose(30);
        let cycle: Vec<u32> = (900..907).collect();
        for _ in 0..20 {
            tokens.extend(&cycle);
        }
        let mut g = ZombieGuard::new(GuardConfig::default(), 0.0);
        let at = run(&mut g, &tokens).expect("stops");
        let stop = g.stopped().expect("reason");
        assert_eq!(stop.kind, GuardKind::Cycle);
        assert_eq!(stop.loop_start, Some(30));
        // A cycle repeats 2.5 times: 7-token cycle -> 18 tokens after its start.
        assert_eq!(at, 30 + 18);
        assert!(stop.reason.contains("7-token cycle"), "{}", stop.reason);
    }

    #[test]
    fn names_a_stuck_token() {
        let mut tokens = prose(10);
        tokens.extend(std::iter::repeat_n(42u32, 40));
        let mut g = ZombieGuard::new(GuardConfig::default(), 0.0);
        let at = run(&mut g, &tokens).expect("stops");
        assert_eq!(g.stopped().map(|s| s.kind), Some(GuardKind::StuckToken));
        assert_eq!(at, 10 + 16);
    }

    #[test]
    fn a_line_said_twice_is_not_a_loop_but_a_third_time_is() {
        // A 13-token line twice (an ingredient list that names one item twice), then prose.
        let line: Vec<u32> = (700..713).collect();
        let mut tokens = prose(40);
        tokens.extend(&line);
        tokens.extend(&line);
        tokens.extend(prose(60).iter().map(|t| t + 2000));
        let mut g = ZombieGuard::new(GuardConfig::default(), 0.0);
        assert_eq!(run(&mut g, &tokens), None, "{:?}", g.stopped());
        // The same line a third time is stopped halfway through it.
        let mut tokens = prose(40);
        for _ in 0..3 {
            tokens.extend(&line);
        }
        let mut g = ZombieGuard::new(GuardConfig::default(), 0.0);
        assert_eq!(run(&mut g, &tokens), Some(40 + 33));
    }

    #[test]
    fn a_thirty_token_cycle_is_caught_within_sixty_four_tokens() {
        let mut tokens = prose(50);
        let cycle: Vec<u32> = (1000..1030).collect();
        for _ in 0..6 {
            tokens.extend(&cycle);
        }
        let mut g = ZombieGuard::new(GuardConfig::default(), 0.0);
        let at = run(&mut g, &tokens).expect("stops");
        assert!(
            at - 50 <= 64,
            "stopped {} tokens after the loop began",
            at - 50
        );
    }

    #[test]
    fn a_long_loop_with_variations_stops_for_lack_of_new_content() {
        // A 40-token passage repeated with one token changed each time: never an exact
        // cycle of <= 32 tokens, but almost no new 4-grams.
        let mut tokens = prose(20);
        let passage = prose(300)[200..240].to_vec();
        for k in 0..5u32 {
            let mut p = passage.clone();
            p[(k as usize * 7) % 40] = 2000 + k;
            tokens.extend(p);
        }
        let cfg = GuardConfig {
            max_period: 8,
            ..GuardConfig::default()
        };
        let mut g = ZombieGuard::new(cfg, 0.0);
        run(&mut g, &tokens).expect("stops");
        assert_eq!(g.stopped().map(|s| s.kind), Some(GuardKind::NoNewContent));
    }

    #[test]
    fn never_stops_varied_text() {
        let tokens = prose(2000);
        let mut g = ZombieGuard::new(GuardConfig::default(), 0.0);
        assert_eq!(run(&mut g, &tokens), None);
    }

    #[test]
    fn entropy_of_uniform_and_certain_distributions() {
        assert!((entropy_bits(&[0.0; 8]) - 3.0).abs() < 1e-9);
        assert!(entropy_bits(&[0.0, -100.0, -100.0]) < 1e-3);
    }

    #[test]
    fn collapsed_entropy_with_little_new_content_stops() {
        // Alternating two short phrases with near-certain logits: the cycle detector is
        // switched off to isolate the entropy rule.
        let cfg = GuardConfig {
            max_period: 1,
            min_cycle_tokens: 1000,
            novelty_window: 32,
            entropy_window: 32,
            ..GuardConfig::default()
        };
        let mut g = ZombieGuard::new(cfg, 0.0);
        let mut certain = vec![-100.0f32; 16];
        certain[3] = 0.0;
        let mut tokens: Vec<u32> = prose(8);
        let mut stopped = None;
        for k in 0..200u32 {
            tokens.push(if k % 9 == 0 { 3000 + k } else { k % 3 });
            let ev = TokenEvent {
                generated: &tokens,
                logits: Some(&certain),
            };
            if let Gate::Stop(_) = g.check(&ev, 0.0, 0.0) {
                stopped = g.stopped().map(|s| s.kind);
                break;
            }
        }
        assert_eq!(stopped, Some(GuardKind::EntropyCollapse));
    }

    #[test]
    fn enforces_each_budget_and_counts_avoided_energy() {
        let tokens = prose(100);
        let budget = |b: Budget| GuardConfig {
            budget: b,
            ..GuardConfig::default()
        };
        let mut g = ZombieGuard::new(
            budget(Budget {
                max_tokens: Some(10),
                ..Budget::default()
            }),
            0.0,
        );
        assert_eq!(run(&mut g, &tokens), Some(10));
        assert_eq!(g.stopped().map(|s| s.kind), Some(GuardKind::TokenBudget));

        let check = |b: Budget, secs: f64, joules: f64, g_per_j: f64| {
            let mut g = ZombieGuard::new(budget(b), g_per_j);
            let ev = TokenEvent {
                generated: &tokens[..5],
                logits: None,
            };
            (g.check(&ev, secs, joules), g.stopped().map(|s| s.kind))
        };
        let secs = Budget {
            max_seconds: Some(2.0),
            ..Budget::default()
        };
        assert_eq!(check(secs, 1.9, 0.0, 0.0).0, Gate::Continue);
        assert_eq!(check(secs, 2.0, 0.0, 0.0).1, Some(GuardKind::TimeBudget));
        let joules = Budget {
            max_joules: Some(50.0),
            ..Budget::default()
        };
        assert_eq!(check(joules, 0.0, 49.0, 0.0).0, Gate::Continue);
        assert_eq!(
            check(joules, 0.0, 50.0, 0.0).1,
            Some(GuardKind::EnergyBudget)
        );
        let carbon = Budget {
            max_g_co2e: Some(0.01),
            ..Budget::default()
        };
        // 473 g/kWh = 1.3139e-4 g/J: 0.01 g is reached at 76.1 J.
        let g_per_j = 473.0 / 3.6e6;
        assert_eq!(check(carbon, 0.0, 76.0, g_per_j).0, Gate::Continue);
        assert_eq!(
            check(carbon, 0.0, 76.2, g_per_j).1,
            Some(GuardKind::CarbonBudget)
        );

        // A loop stopped at token 48 of a 256-token budget at 2 J/token avoids 208 x 2 J.
        let mut tokens = prose(30);
        for _ in 0..10 {
            tokens.extend(900u32..907);
        }
        let mut g = ZombieGuard::new(
            budget(Budget {
                max_tokens: Some(256),
                ..Budget::default()
            }),
            0.0,
        );
        let mut at = 0;
        for n in 0..tokens.len() {
            let ev = TokenEvent {
                generated: &tokens[..n],
                logits: None,
            };
            if let Gate::Stop(_) = g.check(&ev, 1.0, 2.0 * n as f64) {
                at = n;
                break;
            }
        }
        assert_eq!(at, 48);
        let avoided = g.stopped().and_then(|s| s.avoided_j).expect("avoided");
        assert!((avoided - 416.0).abs() < 1e-9, "{avoided}");
    }
}
