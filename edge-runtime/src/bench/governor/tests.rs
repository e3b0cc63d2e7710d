//! Runner tests on a two-node board written here (the simulated SoC's own profiles are
//! exercised by the end-to-end bench test in `sim_boards`).

use super::limit::{Condition, physical_limit};
use super::*;
use crate::governor::platform::Opp;

/// A die over a heatsink to ambient; the fan lowers the heatsink's resistance; firmware
/// drops to the lowest operating point at the throttle point until 2 K below it.
struct TestBoard {
    spec: BoardSpec,
}

struct TestTwin {
    platform: Platform,
    die_c: f64,
    sink_c: f64,
    ambient_c: f64,
    fan_ok: bool,
    throttled: bool,
    throttle_events: u64,
    throttle_c: f64,
    noise: (f64, f64),
    rng: u64,
}

const R_DIE: f64 = 1.0;
const C_DIE: f64 = 3.0;
const R_SINK: f64 = 7.0;
const R_SINK_FAN: f64 = 5.0;
const C_SINK: f64 = 60.0;

fn r_sink(fan_ok: bool) -> f64 {
    if fan_ok { R_SINK_FAN } else { R_SINK }
}

fn power_w(p: &Platform, khz: u32, busy_cores: f64) -> f64 {
    let level = p.level_at_or_below(khz);
    f64::from(p.idle_w()) + f64::from(p.pool_dyn_w(level, 1)) * busy_cores
}

impl TestBoard {
    fn new() -> Result<Self, ConfigError> {
        let opps = (0..10)
            .map(|i| Opp {
                khz: 1_500_000 + 100_000 * i,
                millivolts: 800 + 20 * i,
            })
            .collect();
        let platform = Platform::new(opps, 4, 2.7, 2.1)?;
        Ok(Self {
            spec: BoardSpec {
                name: "test-board".to_string(),
                platform,
                firmware_throttle_c: 80.0,
                tokens_per_s_max: 5.0,
                fan_max_level: None,
                power_sensor: false,
                steady_k_per_w: R_DIE + R_SINK_FAN,
                weights: sim_boards::board_weights("rpi5", 5.0),
            },
        })
    }
}

impl TwinBoard for TestBoard {
    fn spec(&self) -> &BoardSpec {
        &self.spec
    }

    fn twin(&self, noise: (f64, f64), seed: u64) -> Result<Box<dyn Twin>, BenchError> {
        let idle = AMBIENT_C + f64::from(self.spec.platform.idle_w()) * (R_DIE + R_SINK_FAN);
        Ok(Box::new(TestTwin {
            platform: self.spec.platform.clone(),
            die_c: idle,
            sink_c: idle - f64::from(self.spec.platform.idle_w()) * R_DIE,
            ambient_c: AMBIENT_C,
            fan_ok: true,
            throttled: false,
            throttle_events: 0,
            throttle_c: f64::from(self.spec.firmware_throttle_c),
            noise,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }))
    }

    fn steady_die_c(&self, khz: u32, busy_cores: f64, ambient_c: f64, fan_ok: bool) -> f64 {
        ambient_c + power_w(&self.spec.platform, khz, busy_cores) * (R_DIE + r_sink(fan_ok))
    }

    fn net(&self) -> bound::ThermalNet {
        let idle_w = f64::from(self.spec.platform.idle_w());
        let die = AMBIENT_C + idle_w * (R_DIE + R_SINK_FAN);
        bound::ThermalNet {
            die_capacity_j_per_k: C_DIE,
            board_capacity_j_per_k: C_SINK,
            die_to_board_k_per_w: R_DIE,
            board_to_ambient_k_per_w: R_SINK_FAN,
            board_to_ambient_fan_off_k_per_w: R_SINK,
            idle_die_w: idle_w,
            idle_board_w: 0.0,
            start_c: [die, die - idle_w * R_DIE],
        }
    }
}

impl TestTwin {
    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Twin for TestTwin {
    fn step(&mut self, dt_s: f64, load: Load) -> TwinSample {
        let busy_cores = f64::from(load.threads) * load.duty.clamp(0.0, 1.0);
        let power = power_w(&self.platform, self.effective_khz(load.cap_khz), busy_cores);
        let sub = 10;
        let h = dt_s / f64::from(sub);
        for _ in 0..sub {
            let q_ds = (self.die_c - self.sink_c) / R_DIE;
            let q_sa = (self.sink_c - self.ambient_c) / r_sink(self.fan_ok);
            self.die_c += h * (power - q_ds) / C_DIE;
            self.sink_c += h * (q_ds - q_sa) / C_SINK;
        }
        if self.die_c >= self.throttle_c {
            if !self.throttled {
                self.throttle_events += 1;
            }
            self.throttled = true;
        } else if self.die_c < self.throttle_c - 2.0 {
            self.throttled = false;
        }
        TwinSample {
            die_c: self.die_c,
            board_c: self.sink_c,
            power_w: power,
            throttle_events: self.throttle_events,
        }
    }

    fn effective_khz(&self, cap_khz: u32) -> u32 {
        if self.throttled {
            self.platform.khz(0)
        } else {
            cap_khz
        }
    }

    fn read_temp_c(&mut self) -> Option<f32> {
        let (stddev_c, dropout) = self.noise;
        if self.uniform() < dropout {
            return None;
        }
        // Uniform noise with the requested standard deviation.
        let noise = (self.uniform() * 2.0 - 1.0) * stddev_c * 3f64.sqrt();
        Some((self.die_c + noise) as f32)
    }

    fn read_power_w(&mut self) -> Option<f32> {
        None
    }

    fn set_ambient_c(&mut self, ambient_c: f64) {
        self.ambient_c = ambient_c;
    }

    fn fail_fan(&mut self) {
        self.fan_ok = false;
    }
}

fn boards() -> Result<Vec<Box<dyn TwinBoard>>, ConfigError> {
    Ok(vec![Box::new(TestBoard::new()?)])
}

#[test]
fn physical_limit_sits_exactly_at_the_setpoint() -> Result<(), ConfigError> {
    let board = TestBoard::new()?;
    let cond = Condition::nominal();
    let l = physical_limit(&board, 70.0, cond);
    assert!(l.speed > 0.2 && l.speed < 1.0, "{l:?}");
    let khz = board.spec.platform.khz(l.level);
    let t = board.steady_die_c(khz, f64::from(l.threads) * l.duty, cond.ambient_c, true);
    assert!((t - 70.0).abs() < 1e-3, "steady state {t}");
    // A hotter room lowers the limit.
    let hot = physical_limit(
        &board,
        70.0,
        Condition {
            ambient_c: 40.0,
            fan_ok: true,
        },
    );
    assert!(hot.speed < l.speed);
    Ok(())
}

#[test]
fn writes_csv_markdown_and_one_plot_per_run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let opts = BenchOptions {
        duration: Duration::from_secs(300),
        scenarios: vec![Scenario::Sustained, Scenario::TrainingChat],
        ..BenchOptions::default()
    };
    let report = run_bench_on(dir.path(), &opts, &boards()?)?;
    assert_eq!(report.rows.len(), 2 * 5);
    let csv = std::fs::read_to_string(dir.path().join("governor.csv"))?;
    let header = csv.lines().next().unwrap_or_default();
    for col in [
        "board",
        "scenario",
        "controller",
        "overshoot_c",
        "fraction_of_limit",
    ] {
        assert!(header.split(',').any(|c| c == col), "missing column {col}");
    }
    assert_eq!(csv.lines().count(), 1 + 10);
    assert!(csv.contains("test-board,training_chat,step_wise,"));
    let md = std::fs::read_to_string(dir.path().join("governor.md"))?;
    assert!(md.contains("| test-board | sustained | ours |"));
    assert!(md.contains("## Goals"));
    let plots = std::fs::read_dir(dir.path().join("plots"))?.count();
    assert_eq!(plots, 10 + 1, "a plot per run and the setpoint sweep");
    let sweep = std::fs::read_to_string(dir.path().join("plots/eco_setpoint_test-board.svg"))?;
    assert_eq!(sweep.matches("<polyline").count(), 3);
    assert!(sweep.contains("auto "), "the eco setpoint's run is marked");
    let svg = std::fs::read_to_string(dir.path().join("plots/test-board_sustained_ours.svg"))?;
    assert_eq!(svg.matches("<polyline").count(), 3);
    Ok(())
}

#[test]
fn ours_holds_the_setpoint_where_firmware_alone_throttles() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let opts = BenchOptions {
        duration: Duration::from_secs(900),
        scenarios: vec![Scenario::Sustained],
        controllers: vec![ControllerKind::Ours, ControllerKind::Firmware],
        plots: false,
        sweep: false,
        ..BenchOptions::default()
    };
    let report = run_bench_on(dir.path(), &opts, &boards()?)?;
    let ours = report
        .row("test-board", Scenario::Sustained, ControllerKind::Ours)
        .ok_or("no row")?;
    let firmware = report
        .row("test-board", Scenario::Sustained, ControllerKind::Firmware)
        .ok_or("no row")?;
    assert!(ours.summary.overshoot_c <= 0.5, "{:?}", ours.summary);
    assert_eq!(ours.summary.throttle_events, 0);
    assert!(
        ours.steady_fraction_of_limit >= 0.97,
        "{}",
        ours.steady_fraction_of_limit
    );
    assert!(
        firmware.summary.throttle_events > 0,
        "{:?}",
        firmware.summary
    );
    assert!(ours.summary.p99_itl_ms <= 1.5 * ours.summary.p50_itl_ms);
    Ok(())
}
