//! One run: a controller on a twin for the whole simulated duration, ticking once per control
//! period and advancing the compute pool and the twin in small steps in between.

use std::time::{Duration, Instant};

use super::limit::PhysicalLimit;
use super::metrics::{RunMetrics, RunSummary};
use super::workload::{Pool, Scenario};
use super::{
    AMBIENT_STEP_C, BenchError, BenchOptions, BoardSpec, ControllerKind, Load,
    TRAINING_STEPS_PER_S, Twin, TwinBoard,
};
use crate::bench::svg::Panel;
use crate::governor::baseline::{Firmware, PowerAllocator, PowerAllocatorParams, StepWise};
use crate::governor::{
    AutoSetpoint, Controller, Decision, Demand, EfficientPacing, Governor, GovernorConfig, Limiter,
    Mode, Pace,
};

/// What one run yields: its figures, the cost of `decide`, and the plot.
pub(super) struct RunOutput {
    pub(super) summary: RunSummary,
    pub(super) decide_mean_us: f64,
    pub(super) decide_max_us: f64,
    pub(super) panels: Vec<Panel>,
}

/// The controller under test, configured for `spec` as the benchmark compares it.
fn controller_for(
    kind: ControllerKind,
    spec: &BoardSpec,
    cfg: &GovernorConfig,
    limit: &PhysicalLimit,
) -> Box<dyn Controller> {
    let setpoint = cfg.setpoint_c();
    match kind {
        ControllerKind::Ours => {
            let mut cfg = cfg.clone();
            cfg.platform = cfg.platform.clone().with_fan(spec.fan_max_level);
            Box::new(Governor::new(cfg))
        }
        ControllerKind::Auto => {
            let mut cfg = cfg.clone();
            cfg.platform = cfg.platform.clone().with_fan(spec.fan_max_level);
            cfg.auto = Some(AutoSetpoint::new(spec.weights, spec.steady_k_per_w));
            cfg.efficient_pacing = Some(EfficientPacing::default());
            Box::new(Governor::new(cfg))
        }
        ControllerKind::Ipa => {
            // Switch-on 10 K below the control temperature; sustainable power from the twin's
            // steady state at the setpoint (IPA's best case).
            let params = PowerAllocatorParams::kernel_defaults(
                setpoint - 10.0,
                setpoint,
                limit.dyn_power_w as f32,
            );
            Box::new(PowerAllocator::new(
                spec.platform.clone(),
                params,
                cfg.period(),
            ))
        }
        ControllerKind::StepWise => Box::new(StepWise::new(spec.platform.clone(), setpoint)),
        ControllerKind::Firmware => Box::new(Firmware::new(spec.platform.clone())),
    }
}

/// Runs `kind` on a fresh twin of `board` in `scenario` for `opts.duration`: once per control
/// period the twin's sensor is read, the controller decides (its call timed), and the pool
/// and the twin advance in `opts.sim_step` steps under the decision.
pub(super) fn run_one(
    board: &dyn TwinBoard,
    scenario: Scenario,
    kind: ControllerKind,
    opts: &BenchOptions,
    cfg: &GovernorConfig,
    limit: &PhysicalLimit,
) -> Result<RunOutput, BenchError> {
    let spec = board.spec();
    let noise = if scenario == Scenario::NoisySensor {
        (opts.noise_stddev_c, opts.dropout_probability)
    } else {
        (0.0, 0.0)
    };
    let mut run = Run {
        spec,
        cfg,
        twin: board.twin(noise, opts.seed)?,
        controller: controller_for(kind, spec, cfg, limit),
        pool: Pool::new(scenario, opts.seed, spec.tokens_per_s_max),
        metrics: RunMetrics::new(
            f64::from(cfg.setpoint_c()),
            opts.duration.as_secs_f64() * 2.0 / 3.0,
        )
        .with_footprint(spec.weights, spec.tokens_per_s_max / TRAINING_STEPS_PER_S),
        decision: Decision {
            freq_cap_khz: None,
            threads: spec.platform.cores(),
            pacing: [Pace::FULL; 3],
            fan_level: None,
            mode: Mode::Unlimited,
            limiter: Limiter::None,
            reason: String::new(),
            power_budget_w: f32::INFINITY,
        },
        utilisation: 0.0,
        demand: Demand::default(),
        eff_khz: spec.platform.khz(spec.platform.top_level()),
        decide_total: Duration::ZERO,
        decide_max: Duration::ZERO,
        plot: Plot::default(),
    };
    let duration_s = opts.duration.as_secs_f64();
    let period_s = opts.period.as_secs_f64();
    let n_sub = (period_s / opts.sim_step.as_secs_f64()).round().max(1.0) as u32;
    let ticks = (duration_s / period_s).round() as u64;
    let mut events_done = false;
    for tick in 0..ticks {
        let now_s = tick as f64 * period_s;
        if !events_done && now_s >= duration_s / 2.0 {
            events_done = true;
            match scenario {
                Scenario::AmbientStep => run.twin.set_ambient_c(AMBIENT_STEP_C),
                Scenario::FanFailure => run.twin.fail_fan(),
                _ => {}
            }
        }
        run.decide(Duration::from_secs_f64(now_s));
        if let Some(sp) = run.controller.setpoint_c() {
            run.metrics.set_setpoint(f64::from(sp));
        }
        let last_die = run.advance(now_s, period_s, n_sub);
        // One plot point per second; tokens/s over a 10 s window.
        if tick % 4 == 3 {
            run.plot
                .point(now_s + period_s, last_die, run.eff_khz, tick % 40 == 39);
        }
    }
    let calls = ticks.max(1) as f64;
    Ok(RunOutput {
        summary: run.metrics.summary(),
        decide_mean_us: run.decide_total.as_secs_f64() * 1e6 / calls,
        decide_max_us: run.decide_max.as_secs_f64() * 1e6,
        panels: run
            .plot
            .panels(f64::from(cfg.setpoint_c()), spec.firmware_throttle_c),
    })
}

/// The state of one run between control periods.
struct Run<'a> {
    spec: &'a BoardSpec,
    cfg: &'a GovernorConfig,
    twin: Box<dyn Twin>,
    controller: Box<dyn Controller>,
    pool: Pool,
    metrics: RunMetrics,
    /// The decision in force.
    decision: Decision,
    /// Share of the last period the pool was busy.
    utilisation: f32,
    /// Per-class occupancy over the last period.
    demand: Demand,
    /// The frequency in kHz the CPU ran at after the last sub-step.
    eff_khz: u32,
    decide_total: Duration,
    decide_max: Duration,
    plot: Plot,
}

impl Run<'_> {
    /// Reads the twin's sensors as the runtime would and lets the controller decide at `now`.
    fn decide(&mut self, now: Duration) {
        let obs = self.twin.observe(
            self.spec,
            now,
            &self.decision,
            self.eff_khz,
            self.utilisation,
            self.demand,
        );
        let t0 = Instant::now();
        self.decision = self.controller.decide(obs, now);
        let spent = t0.elapsed();
        self.decide_total += spent;
        self.decide_max = self.decide_max.max(spent);
    }

    /// Advances the pool and the twin through one period of `period_s` from `now_s` in
    /// `n_sub` steps under the decision in force; returns the true die temperature at its end.
    fn advance(&mut self, now_s: f64, period_s: f64, n_sub: u32) -> f64 {
        let p = &self.spec.platform;
        let top_khz = p.khz(p.top_level());
        let cap = self.decision.freq_cap_khz.unwrap_or(top_khz);
        let threads = self.decision.threads.clamp(1, p.cores());
        let duty = self.decision.pacing.map(|pace| pace.duty);
        let g = f64::from(p.thread_speedup(threads)) / f64::from(p.thread_speedup(p.cores()));
        let dt = period_s / f64::from(n_sub);
        let (mut busy, mut had, mut last_die) = (0.0, [0.0; 3], f64::NAN);
        for sub in 0..n_sub {
            let t = now_s + f64::from(sub) * dt;
            self.eff_khz = self.twin.effective_khz(cap);
            let speed = f64::from(self.eff_khz) / f64::from(top_khz) * g;
            let rates = [
                self.spec.tokens_per_s_max * speed,
                TRAINING_STEPS_PER_S * speed,
                TRAINING_STEPS_PER_S * speed,
            ];
            let out = self.pool.advance(t, dt, rates, duty, self.cfg.priorities());
            for (at, itl) in out.tokens {
                self.metrics.token(at, itl);
                self.plot.window_tokens += 1;
            }
            for _ in 0..out.training_steps {
                self.metrics.training_step();
            }
            let busy_s = out.busy_s.iter().sum::<f64>();
            busy += busy_s;
            for (h, o) in had.iter_mut().zip(out.had_work_s) {
                *h += o;
            }
            let load = Load {
                cap_khz: cap,
                threads,
                duty: (busy_s / dt).clamp(0.0, 1.0),
                fan_level: self.decision.fan_level,
            };
            let s = self.twin.step(dt, load);
            self.metrics.step(dt, s.die_c, s.power_w, s.throttle_events);
            last_die = s.die_c;
        }
        self.utilisation = (busy / period_s).clamp(0.0, 1.0) as f32;
        self.demand = Demand {
            occupancy: had.map(|h| (h / period_s).clamp(0.0, 1.0) as f32),
        };
        last_die
    }
}

/// The series of a run's plot.
#[derive(Default)]
struct Plot {
    temp: Vec<(f64, f64)>,
    freq: Vec<(f64, f64)>,
    tokens: Vec<(f64, f64)>,
    /// Tokens since the last tokens/s point.
    window_tokens: u64,
}

impl Plot {
    /// Adds the die temperature and the CPU frequency at `t`, and with `tokens` the tokens/s
    /// over the 10 s since the last such point.
    fn point(&mut self, t: f64, die_c: f64, eff_khz: u32, tokens: bool) {
        self.temp.push((t, die_c));
        self.freq.push((t, f64::from(eff_khz) / 1000.0));
        if tokens {
            self.tokens.push((t, self.window_tokens as f64 / 10.0));
            self.window_tokens = 0;
        }
    }

    /// Three stacked panels: die temperature against the setpoint and the firmware throttle
    /// point, CPU frequency, tokens/s.
    fn panels(self, setpoint_c: f64, firmware_throttle_c: f32) -> Vec<Panel> {
        vec![
            Panel {
                label: "die °C".to_string(),
                colour: "#d04a02",
                points: self.temp,
                references: vec![
                    (setpoint_c, format!("setpoint {setpoint_c:.0} °C")),
                    (
                        f64::from(firmware_throttle_c),
                        format!("firmware throttle {firmware_throttle_c:.0} °C"),
                    ),
                ],
            },
            Panel {
                label: "CPU MHz".to_string(),
                colour: "#1f5fa8",
                points: self.freq,
                references: Vec::new(),
            },
            Panel {
                label: "tokens/s".to_string(),
                colour: "#2a8a3e",
                points: self.tokens,
                references: Vec::new(),
            },
        ]
    }
}
