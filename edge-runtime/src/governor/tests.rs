//! State-machine tests of the adaptive governor against plants written here: a first-order
//! plant and a two-node (die + heatsink) plant, each driven by the decisions it receives.

use std::time::Duration;

use super::Controller;
use super::adaptive::Governor;
use super::config::{ConfigError, GovernorConfig};
use super::platform::{Opp, Platform};
use super::types::{
    ActuatorState, Decision, Demand, Health, Limiter, Mode, Observation, Priority, TempReading,
};

const PERIOD: Duration = Duration::from_millis(250);

fn platform() -> Result<Platform, ConfigError> {
    let opps = [
        (600_000, 850),
        (800_000, 875),
        (1_000_000, 900),
        (1_200_000, 925),
        (1_500_000, 975),
    ]
    .into_iter()
    .map(|(khz, millivolts)| Opp { khz, millivolts })
    .collect();
    Platform::new(opps, 4, 2.5, 1.2)
}

fn governor(setpoint_c: f32) -> Result<Governor, ConfigError> {
    let cfg = GovernorConfig::builder(platform()?, 80.0)
        .with_setpoint_c(setpoint_c)
        .build()?;
    Ok(Governor::new(cfg))
}

/// Runs the pool under `d` for one period with `demand`: returns (power in W, pool
/// utilisation, frequency in kHz). Classes share the pool by priority, each limited by its
/// duty.
fn pool_response(p: &Platform, d: &Decision, demand: &Demand) -> (f32, f32, u32) {
    let level = d
        .freq_cap_khz
        .map_or(p.top_level(), |k| p.level_at_or_below(k));
    let mut used = 0.0f32;
    for c in Priority::ALL {
        let want = demand.of(c);
        let occ = want.min(d.pace(c).duty).min(1.0 - used).max(0.0);
        used += occ;
    }
    (p.power_w(level, d.threads, used), used, p.khz(level))
}

/// First-order plant: `τ·dT/dt = T_amb + K·P − T`.
struct FirstOrder {
    t_c: f32,
    ambient_c: f32,
    gain_k_per_w: f32,
    tau_s: f32,
}

impl FirstOrder {
    fn step(&mut self, power_w: f32, dt_s: f32) {
        let target = self.ambient_c + self.gain_k_per_w * power_w;
        self.t_c += (target - self.t_c) * (1.0 - (-dt_s / self.tau_s).exp());
    }
}

/// Two-node plant: a fast die over a slow heatsink to ambient.
struct TwoNode {
    die_c: f32,
    sink_c: f32,
    ambient_c: f32,
    r_die_k_per_w: f32,
    c_die_j_per_k: f32,
    r_sink_k_per_w: f32,
    c_sink_j_per_k: f32,
}

impl TwoNode {
    fn step(&mut self, power_w: f32, dt_s: f32) {
        let sub = 20;
        let h = dt_s / sub as f32;
        for _ in 0..sub {
            let q_ds = (self.die_c - self.sink_c) / self.r_die_k_per_w;
            let q_sa = (self.sink_c - self.ambient_c) / self.r_sink_k_per_w;
            self.die_c += h * (power_w - q_ds) / self.c_die_j_per_k;
            self.sink_c += h * (q_ds - q_sa) / self.c_sink_j_per_k;
        }
    }
}

fn observation(
    t_c: f32,
    now: Duration,
    last: (f32, f32, u32),
    threads: u16,
    demand: Demand,
) -> Observation {
    Observation {
        temp: TempReading::fresh(t_c, now),
        power_w: None,
        actuators: ActuatorState {
            freq_khz: Some(last.2),
            threads,
            fan_level: None,
            utilisation: last.1,
        },
        demand,
    }
}

fn tick(k: u32) -> Duration {
    PERIOD * k
}

/// A governor in closed loop with the compute pool: each period it reads a temperature,
/// decides, and the pool runs the decision under the demand.
struct ClosedLoop {
    g: Governor,
    p: Platform,
    /// Power in W, pool utilisation and frequency in kHz over the last period.
    last: (f32, f32, u32),
    threads: u16,
}

impl ClosedLoop {
    fn new(g: Governor, p: Platform) -> Self {
        let last = (p.idle_w(), 0.0, p.khz(p.top_level()));
        ClosedLoop {
            g,
            p,
            last,
            threads: 4,
        }
    }

    /// Decides period `k` on a reading of `t_c` under `demand`.
    fn decide(&mut self, k: u32, t_c: f32, demand: Demand) -> Decision {
        let o = observation(t_c, tick(k), self.last, self.threads, demand);
        self.g.decide(o, tick(k))
    }

    /// Runs the pool for one period under `d`; returns the power in W.
    fn run(&mut self, d: &Decision, demand: &Demand) -> f32 {
        self.last = pool_response(&self.p, d, demand);
        self.threads = d.threads;
        self.last.0
    }

    /// Decides period `k` and runs it; returns the decision and the power in W.
    fn period(&mut self, k: u32, t_c: f32, demand: Demand) -> (Decision, f32) {
        let d = self.decide(k, t_c, demand);
        let power_w = self.run(&d, &demand);
        (d, power_w)
    }
}

#[test]
fn settles_without_overshoot_on_a_first_order_plant() -> Result<(), ConfigError> {
    let mut cl = ClosedLoop::new(governor(70.0)?, platform()?);
    // Unlimited, this plant would settle at 25 + 9 * 7.3 ≈ 91 °C.
    let mut plant = FirstOrder {
        t_c: 30.0,
        ambient_c: 25.0,
        gain_k_per_w: 9.0,
        tau_s: 20.0,
    };
    let demand = Demand::busy(&[Priority::Interactive]);
    let mut max_c = f32::MIN;
    let mut tail = Vec::new();
    for k in 0..2400 {
        let (_, power_w) = cl.period(k, plant.t_c, demand);
        plant.step(power_w, PERIOD.as_secs_f32());
        max_c = max_c.max(plant.t_c);
        if k >= 2000 {
            tail.push(plant.t_c);
        }
    }
    let mean = tail.iter().sum::<f32>() / tail.len() as f32;
    assert!(max_c <= 70.0, "overshoot: max {max_c:.2} °C");
    assert!(mean > 69.0, "settled too low: {mean:.2} °C");
    let spread = tail.iter().fold(0.0f32, |m, t| m.max((t - mean).abs()));
    assert!(spread < 0.3, "not settled: ±{spread:.2} K");
    Ok(())
}

#[test]
fn holds_the_setpoint_on_an_unseen_two_node_board_through_an_ambient_step()
-> Result<(), ConfigError> {
    let mut cl = ClosedLoop::new(governor(70.0)?, platform()?);
    let mut plant = TwoNode {
        die_c: 25.0,
        sink_c: 25.0,
        ambient_c: 25.0,
        r_die_k_per_w: 1.5,
        c_die_j_per_k: 2.0,
        r_sink_k_per_w: 6.0,
        c_sink_j_per_k: 40.0,
    };
    let demand = Demand::busy(&[Priority::Interactive]);
    let mut max_c = f32::MIN;
    let mut tail = Vec::new();
    for k in 0..9600 {
        if k == 4800 {
            plant.ambient_c = 40.0;
        }
        let (_, power_w) = cl.period(k, plant.die_c, demand);
        plant.step(power_w, PERIOD.as_secs_f32());
        max_c = max_c.max(plant.die_c);
        if k >= 8800 {
            tail.push(plant.die_c);
        }
    }
    let mean = tail.iter().sum::<f32>() / tail.len() as f32;
    assert!(max_c <= 70.5, "overshoot: max {max_c:.2} °C");
    assert!(
        mean > 69.0 && mean <= 70.0,
        "after the step: mean {mean:.2} °C"
    );
    Ok(())
}

#[test]
fn pauses_training_before_slowing_generation() -> Result<(), ConfigError> {
    let p = platform()?;
    let mut cl = ClosedLoop::new(governor(70.0)?, p.clone());
    // Generation alone (half the pool) would settle near 25 + 11 * 4.9 ≈ 79 °C.
    let mut plant = FirstOrder {
        t_c: 40.0,
        ambient_c: 25.0,
        gain_k_per_w: 11.0,
        tau_s: 15.0,
    };
    let mut demand = Demand::default();
    demand.occupancy[Priority::Interactive.index()] = 0.5;
    demand.occupancy[Priority::Training.index()] = 1.0;
    let (mut training_paused_at, mut generation_slowed_at) = (None, None);
    let mut training_paced_while_generation_full = false;
    for k in 0..2400 {
        let d = cl.decide(k, plant.t_c, demand);
        if d.mode == Mode::FailSafe {
            // Only until the second fresh reading at start-up.
            assert!(k < 2, "fail-safe at tick {k}: {}", d.reason);
            cl.last = pool_response(&p, &d, &demand);
            continue;
        }
        let training = d.pace(Priority::Training).duty;
        let generation_slowed = d.pace(Priority::Interactive).duty < 1.0
            || d.threads < 4
            || d.freq_cap_khz != Some(p.khz(p.top_level()));
        if generation_slowed {
            assert_eq!(
                training, 0.0,
                "generation slowed at tick {k} while training ran"
            );
            assert!(matches!(
                d.limiter,
                Limiter::Freq | Limiter::Threads | Limiter::PaceGeneration
            ));
            generation_slowed_at.get_or_insert(k);
        }
        if training == 0.0 {
            training_paused_at.get_or_insert(k);
        } else if training < 1.0 && !generation_slowed {
            training_paced_while_generation_full = true;
        }
        let power_w = cl.run(&d, &demand);
        plant.step(power_w, PERIOD.as_secs_f32());
    }
    match (training_paused_at, generation_slowed_at) {
        (Some(paused), Some(slowed)) => assert!(paused <= slowed, "{paused} vs {slowed}"),
        other => panic!("training paused / generation slowed at {other:?}"),
    }
    assert!(training_paced_while_generation_full);
    Ok(())
}

/// Brings a governor into regulation on a hot plant; returns it with the last decision.
fn regulating() -> Result<(Governor, Decision, u32), ConfigError> {
    let mut cl = ClosedLoop::new(governor(70.0)?, platform()?);
    let mut plant = FirstOrder {
        t_c: 60.0,
        ambient_c: 25.0,
        gain_k_per_w: 9.0,
        tau_s: 10.0,
    };
    let demand = Demand::busy(&[Priority::Interactive, Priority::Training]);
    let mut d = None;
    for k in 0..400 {
        let (dk, power_w) = cl.period(k, plant.t_c, demand);
        plant.step(power_w, PERIOD.as_secs_f32());
        d = Some(dk);
    }
    let d = d.ok_or(ConfigError::NoCores)?;
    assert_eq!(d.mode, Mode::Regulating, "{}", d.reason);
    Ok((cl.g, d, 400))
}

fn assert_coolest(d: &Decision) {
    assert_eq!(d.mode, Mode::FailSafe, "{}", d.reason);
    assert_eq!(d.limiter, Limiter::FailSafe);
    assert_eq!(d.freq_cap_khz, Some(600_000));
    assert_eq!(d.threads, 1);
    assert!(d.pace(Priority::Training).is_paused());
    assert!(d.pace(Priority::Batch).is_paused());
    assert_eq!(d.pace(Priority::Interactive).duty, 0.25);
    assert!(!d.reason.is_empty());
}

fn obs_with(reading: TempReading) -> Observation {
    Observation {
        temp: reading,
        power_w: None,
        actuators: ActuatorState {
            freq_khz: Some(1_000_000),
            threads: 4,
            fan_level: None,
            utilisation: 1.0,
        },
        demand: Demand::busy(&[Priority::Interactive, Priority::Training]),
    }
}

#[test]
fn enters_the_coolest_mode_on_a_stuck_reading_within_one_period() -> Result<(), ConfigError> {
    let (mut g, _, k) = regulating()?;
    let mut r = TempReading::fresh(69.5, tick(k));
    r.health = Health::Stuck;
    let d = g.decide(obs_with(r), tick(k));
    assert_coolest(&d);
    assert!(d.reason.contains("stuck"), "{}", d.reason);
    Ok(())
}

#[test]
fn enters_the_coolest_mode_on_implausible_readings_within_one_period() -> Result<(), ConfigError> {
    for bad in [250.0, -273.0, f32::NAN] {
        let (mut g, _, k) = regulating()?;
        let d = g.decide(obs_with(TempReading::fresh(bad, tick(k))), tick(k));
        assert_coolest(&d);
        assert!(d.reason.contains("implausible"), "{}", d.reason);
    }
    let (mut g, _, k) = regulating()?;
    // A plausible value that jumps 40 K in one period.
    let d = g.decide(obs_with(TempReading::fresh(29.0, tick(k))), tick(k));
    assert_coolest(&d);
    Ok(())
}

#[test]
fn detects_a_sensor_frozen_while_the_chip_idles() -> Result<(), ConfigError> {
    let (mut g, _, k0) = regulating()?;
    let mut entered = None;
    for i in 0..80 {
        let k = k0 + i;
        let mut o = obs_with(TempReading::fresh(69.7, tick(k)));
        o.actuators.utilisation = 0.0;
        let d = g.decide(o, tick(k));
        if d.mode == Mode::FailSafe {
            entered = Some(i);
            assert!(d.reason.contains("stuck"), "{}", d.reason);
            break;
        }
    }
    // Ten seconds of identical readings, then at once.
    assert!(
        entered.is_some_and(|i| (39..=41).contains(&i)),
        "entered at {entered:?}"
    );
    Ok(())
}

#[test]
fn a_coarse_sensor_that_holds_its_value_at_steady_state_is_not_stuck() -> Result<(), ConfigError> {
    let mut cl = ClosedLoop::new(governor(70.0)?, platform()?);
    let mut plant = FirstOrder {
        t_c: 40.0,
        ambient_c: 25.0,
        gain_k_per_w: 9.0,
        tau_s: 10.0,
    };
    // Generation a quarter of the time, so the chip settles below the setpoint.
    let mut demand = Demand::default();
    demand.occupancy[Priority::Interactive.index()] = 0.25;
    for k in 0..2400 {
        // A sensor with 0.5 °C steps.
        let reading = (plant.t_c * 2.0).round() / 2.0;
        let (d, power_w) = cl.period(k, reading, demand);
        assert!(k < 2 || d.mode != Mode::FailSafe, "tick {k}: {}", d.reason);
        plant.step(power_w, PERIOD.as_secs_f32());
    }
    Ok(())
}

#[test]
fn enters_the_coolest_mode_on_stale_readings_within_one_period() -> Result<(), ConfigError> {
    let (mut g, _, k) = regulating()?;
    // The sensor keeps answering with the sample taken at tick k - 1.
    let old = TempReading::fresh(69.5, tick(k - 1));
    let first = g.decide(obs_with(old), tick(k));
    assert_ne!(
        first.mode,
        Mode::FailSafe,
        "one old sample is not yet stale"
    );
    let second = g.decide(obs_with(old), tick(k + 1));
    assert_coolest(&second);
    assert!(second.reason.contains("stale"), "{}", second.reason);
    // Missing readings behave the same.
    let (mut g, _, k) = regulating()?;
    g.decide(obs_with(TempReading::missing(tick(k))), tick(k));
    let d = g.decide(obs_with(TempReading::missing(tick(k + 1))), tick(k + 1));
    assert_coolest(&d);
    Ok(())
}

#[test]
fn never_raises_a_limit_without_a_fresh_reading() -> Result<(), ConfigError> {
    let (mut g, mut prev, k0) = regulating()?;
    // Alternate fresh readings (cooling down, which invites raising) with every kind of
    // non-fresh reading.
    let mut fresh_t = 69.0;
    for i in 0..60u32 {
        let k = k0 + i;
        let reading = match i % 4 {
            0 | 2 => {
                fresh_t -= 0.3;
                TempReading::fresh(fresh_t, tick(k))
            }
            1 => TempReading::missing(tick(k)),
            _ => {
                let mut r = TempReading::fresh(40.0, tick(k));
                r.health = Health::Stale;
                r
            }
        };
        let fresh = reading.health == Health::Fresh;
        let d = g.decide(obs_with(reading), tick(k));
        if !fresh {
            assert!(d.freq_cap_khz <= prev.freq_cap_khz, "tick {i}: freq raised");
            assert!(d.threads <= prev.threads, "tick {i}: threads raised");
            for c in Priority::ALL {
                assert!(
                    d.pace(c).duty <= prev.pace(c).duty,
                    "tick {i}: {c:?} duty raised"
                );
            }
        }
        prev = d;
    }
    Ok(())
}

#[test]
fn leaves_the_coolest_mode_after_two_fresh_readings() -> Result<(), ConfigError> {
    let (mut g, _, k) = regulating()?;
    let d = g.decide(obs_with(TempReading::fresh(300.0, tick(k))), tick(k));
    assert_eq!(d.mode, Mode::FailSafe);
    let d = g.decide(obs_with(TempReading::fresh(60.0, tick(k + 1))), tick(k + 1));
    assert_eq!(d.mode, Mode::FailSafe);
    let d = g.decide(obs_with(TempReading::fresh(60.0, tick(k + 2))), tick(k + 2));
    assert_ne!(d.mode, Mode::FailSafe, "{}", d.reason);
    Ok(())
}

#[test]
fn enters_the_coolest_mode_at_the_hard_ceiling() -> Result<(), ConfigError> {
    let (mut g, _, k) = regulating()?;
    let d = g.decide(obs_with(TempReading::fresh(78.5, tick(k))), tick(k));
    assert_coolest(&d);
    assert!(d.reason.contains("ceiling"), "{}", d.reason);
    Ok(())
}

#[test]
fn rejects_invalid_setpoints_and_keeps_the_old_one() -> Result<(), ConfigError> {
    let mut g = governor(70.0)?;
    assert!(matches!(
        g.set_setpoint_c(f32::NAN),
        Err(ConfigError::SetpointNotFinite(_))
    ));
    assert!(matches!(
        g.set_setpoint_c(79.0),
        Err(ConfigError::SetpointAboveCeiling { .. })
    ));
    assert!(matches!(
        g.set_setpoint_c(f32::INFINITY),
        Err(ConfigError::SetpointNotFinite(_))
    ));
    assert_eq!(g.config().setpoint_c(), 70.0);
    g.set_setpoint_c(65.0)?;
    assert_eq!(g.config().setpoint_c(), 65.0);
    Ok(())
}

#[test]
fn starts_in_the_coolest_mode_before_any_reading() -> Result<(), ConfigError> {
    let mut g = governor(70.0)?;
    let d = g.decide(
        obs_with(TempReading::missing(Duration::ZERO)),
        Duration::ZERO,
    );
    assert_coolest(&d);
    Ok(())
}

#[test]
fn runs_the_fan_flat_out_before_limiting_any_work() -> Result<(), ConfigError> {
    let p = platform()?.with_fan(Some(4));
    let cfg = GovernorConfig::builder(p.clone(), 80.0)
        .with_setpoint_c(70.0)
        .build()?;
    let mut cl = ClosedLoop::new(Governor::new(cfg), p);
    // The fan lowers the plant's gain; the plant is still too hot for full speed.
    let mut plant = FirstOrder {
        t_c: 40.0,
        ambient_c: 25.0,
        gain_k_per_w: 11.0,
        tau_s: 15.0,
    };
    let demand = Demand::busy(&[Priority::Interactive]);
    let mut limited = 0;
    for k in 0..2400 {
        let d = cl.decide(k, plant.t_c, demand);
        if d.mode == Mode::Regulating {
            limited += 1;
            assert_eq!(
                d.fan_level,
                Some(4),
                "tick {k}: work limited with the fan at {:?}",
                d.fan_level
            );
        }
        plant.gain_k_per_w = if d.fan_level == Some(4) { 9.0 } else { 11.0 };
        let power_w = cl.run(&d, &demand);
        plant.step(power_w, PERIOD.as_secs_f32());
    }
    assert!(
        limited > 1000,
        "the plant never needed limiting ({limited} ticks)"
    );
    Ok(())
}

#[test]
fn hands_the_fan_back_to_the_firmware_when_the_chip_is_cool() -> Result<(), ConfigError> {
    let p = platform()?.with_fan(Some(4));
    let cfg = GovernorConfig::builder(p.clone(), 80.0).build()?;
    let mut g = Governor::new(cfg);
    let mut last = (p.idle_w(), 0.0, p.khz(p.top_level()));
    let mut fan = Some(4);
    for k in 0..400 {
        // Idle at 45 °C: plenty of headroom.
        let d = g.decide(
            observation(45.0, tick(k), last, 4, Demand::default()),
            tick(k),
        );
        last = pool_response(&p, &d, &Demand::default());
        fan = d.fan_level;
    }
    assert_eq!(fan, None);
    Ok(())
}

#[test]
fn deciding_costs_far_less_than_one_percent_of_a_core_at_the_default_period()
-> Result<(), ConfigError> {
    let mut g = governor(70.0)?;
    let p = platform()?;
    let mut plant = FirstOrder {
        t_c: 60.0,
        ambient_c: 25.0,
        gain_k_per_w: 9.0,
        tau_s: 20.0,
    };
    let demand = Demand::busy(&[Priority::Interactive, Priority::Training]);
    let mut last = (p.idle_w(), 0.0, p.khz(p.top_level()));
    let mut threads = 4;
    let mut spent = Duration::ZERO;
    let n = 4000;
    for k in 0..n {
        let o = observation(plant.t_c, tick(k), last, threads, demand);
        let t = std::time::Instant::now();
        let d = g.decide(o, tick(k));
        spent += t.elapsed();
        last = pool_response(&p, &d, &demand);
        threads = d.threads;
        plant.step(last.0, PERIOD.as_secs_f32());
    }
    // 1 % of one core at a 250 ms period is 2.5 ms per call.
    let per_call = spent / n;
    assert!(
        per_call < Duration::from_micros(250),
        "{per_call:?} per decide"
    );
    Ok(())
}

/// Chats that come and go on a cool board: with energy-aware pacing on, a chat runs slower
/// than flat out, at fewer joules per unit of work, and the reason says so; without it, flat
/// out.
#[test]
fn paces_work_bound_chats_for_the_fewest_joules_per_token() -> Result<(), ConfigError> {
    let run = |pacing: bool| -> Result<(f32, f32, String), ConfigError> {
        let mut b = GovernorConfig::builder(platform()?, 80.0).with_setpoint_c(70.0);
        if pacing {
            b = b.with_efficient_pacing(super::config::EfficientPacing::default());
        }
        let mut cl = ClosedLoop::new(Governor::new(b.build()?), platform()?);
        let mut plant = FirstOrder {
            t_c: 30.0,
            ambient_c: 25.0,
            gain_k_per_w: 3.0,
            tau_s: 20.0,
        };
        // 20 s of chat in every 80 s, for an hour.
        let (mut dyn_j, mut work, mut reason) = (0.0f32, 0.0f32, String::new());
        for k in 0..14_400u32 {
            let chatting = k % 320 < 80;
            let demand = if chatting {
                Demand::busy(&[Priority::Interactive])
            } else {
                Demand::default()
            };
            let (d, power_w) = cl.period(k, plant.t_c, demand);
            plant.step(power_w, PERIOD.as_secs_f32());
            if chatting && k > 7_200 {
                let (_, util, khz) = cl.last;
                let speed = cl.p.speed(cl.p.level_at_or_below(khz), d.threads);
                dyn_j += power_w - cl.p.idle_w();
                work += speed * util;
                reason = d.reason.clone();
            }
        }
        Ok((dyn_j / work, work, reason))
    };
    let (paced_j, paced_work, reason) = run(true)?;
    let (flat_j, flat_work, _) = run(false)?;
    assert!(
        paced_j < 0.95 * flat_j,
        "paced {paced_j:.3} vs flat out {flat_j:.3} J per unit of work"
    );
    assert!(
        paced_work >= flat_work / 1.5 - 1e-3,
        "{paced_work} vs {flat_work}"
    );
    assert!(reason.contains("fewest J/token"), "{reason}");
    assert!(reason.contains("work-bound"), "{reason}");
    Ok(())
}

#[test]
fn headroom_shrinks_as_the_chip_warms_and_is_gone_at_the_setpoint()
-> Result<(), Box<dyn std::error::Error>> {
    let p = platform()?;
    let headroom_at = |temp_c: f32| -> Result<Option<f64>, ConfigError> {
        let mut g = governor(70.0)?;
        let mut last = (p.idle_w(), 0.0, p.khz(p.top_level()));
        for k in 0..200 {
            let d = g.decide(
                observation(temp_c, tick(k), last, 4, Demand::default()),
                tick(k),
            );
            last = pool_response(&p, &d, &Demand::default());
        }
        Ok(g.headroom_s())
    };
    assert_eq!(governor(70.0)?.headroom_s(), None, "no reading yet");
    let cool = headroom_at(40.0)?.ok_or("no headroom at 40 °C")?;
    let warm = headroom_at(60.0)?.unwrap_or(f64::NAN);
    let hot = headroom_at(75.0)?;
    assert!(
        cool > warm && warm > 0.0,
        "{cool} s at 40 °C, {warm} s at 60 °C"
    );
    assert_eq!(hot, Some(0.0));
    Ok(())
}
