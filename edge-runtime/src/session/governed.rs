//! The governor around the main job: opens the board (real sensors when present, else the
//! simulated SoC, heated live by this process's CPU time), hands the governor every actuator
//! the board lends (the cpufreq ceiling and the fan where they are writable, the engine's
//! thread count always, pacing always), starts its control loop on its own thread, and hands
//! the token loop a gate that takes a permit before each token and switches the engine's
//! thread count when the governor changes it. Whatever the governor changed is restored when
//! the job ends, on SIGTERM/SIGINT (through [`crate::shutdown`]) and while a panic unwinds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use sensor_drivers::linux::board::BoardKind;
use sensor_drivers::sensor_set::Snapshot;

use crate::eco::energy::{EnergyMeter, Fallback, MeterHandle, PowerModel};
use crate::engine::ComputeThreads;
use crate::engine::generate::{Gate, TokenEvent};
use crate::governor::platform::{Opp, Platform};
use crate::governor::{
    AutoSetpoint, EcoWeights, EfficientPacing, Governor, GovernorConfig, Priority,
};
use crate::pacing::{
    GovernorHandle, GovernorRunner, GovernorStatus, Permit, Permits, SourceReading,
    reading_from_snapshot,
};
use crate::sensing::{Board, BoardActuators, SensingConfig, Source, open_board};

/// How the governor around the main job runs: the setpoint, the board it reads and the
/// actuators it may drive. The binary maps its flags (or the configuration) onto this.
#[derive(Debug, Clone, PartialEq)]
pub struct GovernorOptions {
    /// Temperature to hold the SoC at, °C; `None`: 10 °C below the board's first firmware
    /// throttle point.
    pub setpoint_c: Option<f32>,
    /// Use the simulated SoC with this profile (a built-in name or a TOML file) even when
    /// real sensors are present.
    pub sim: Option<String>,
    /// Simulated seconds per wall second for the simulated SoC.
    pub sim_time_scale: f64,
    /// Act through pacing and the thread count alone: leave the CPU frequency ceiling and the
    /// fan to the kernel even where they are writable.
    pub pacing_only: bool,
    /// Let the governor drive the fan too (the `pwm-fan` cooling device).
    pub drive_fan: bool,
    /// Let the governor choose the setpoint with the fewest g CO2e per token
    /// (`--setpoint auto`); `setpoint_c` is where it starts and what it is compared with.
    pub eco_setpoint: Option<EcoSetpointOptions>,
    /// Pace busy generation for the fewest joules per token within this inter-token latency
    /// in ms (on by default with the eco setpoint, bounded there by 1.5x flat out).
    pub eco_max_itl_ms: Option<f64>,
}

/// The eco setpoint's inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EcoSetpointOptions {
    /// The footprint's factors (`Factors::eco_weights`).
    pub weights: EcoWeights,
    /// The longest mean inter-token latency in ms the choice may cause; `None`: no bound.
    pub max_itl_ms: Option<f64>,
}

impl Default for GovernorOptions {
    /// The board's own setpoint, real sensors when present, real time, no fan.
    fn default() -> Self {
        Self {
            setpoint_c: None,
            sim: None,
            sim_time_scale: 1.0,
            pacing_only: false,
            drive_fan: false,
            eco_setpoint: None,
            eco_max_itl_ms: None,
        }
    }
}

/// A running governor: its handle, the permits it publishes, the engine's thread pools and
/// the control thread.
pub struct Governed {
    handle: GovernorHandle,
    permits: Permits,
    threads: Mutex<ComputeThreads>,
    actuators: &'static str,
    probe: Probe,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    meter: MeterHandle,
    source: Source,
    latest: Arc<Mutex<Option<Snapshot>>>,
}

pub use crate::pacing::GOVERNOR_STOPPED;

/// Voltage assumed for every operating point of a real board, whose cpufreq does not publish
/// voltages: the power model then scales with frequency alone, which the online
/// identification corrects.
const UNKNOWN_OPP_MILLIVOLTS: u32 = 900;

/// Fan levels the governor plans with; level `l` becomes duty `l/4`, the four cooling states
/// of the Raspberry Pi 5 active cooler.
const FAN_LEVELS: u8 = 4;

/// The board's first firmware throttle point in °C and the governor's view of the board: its
/// operating points, `threads` compute cores (the most the engine will use), and which of the
/// actuators in `actuators` it drives.
fn platform_for(
    board: &Board,
    threads: u16,
    actuators: &BoardActuators,
) -> Result<(Platform, f32)> {
    let (opps, idle_w, core_w, firmware_c) = match board.source() {
        Source::Simulated { profile } => {
            let p = board
                .sim_profile()
                .ok_or_else(|| anyhow!("the simulated SoC {profile:?} is unavailable"))?;
            let platform = Platform::from_profile(&p)?;
            (
                platform.opps().to_vec(),
                platform.idle_w(),
                platform.core_dyn_w(),
                p.firmware.soft_limit_mc as f32 / 1000.0,
            )
        }
        Source::Real { board, .. } => {
            // Published first throttle points: Pi firmware 80 °C; Orin passive trip 95 °C.
            let (firmware_c, khz, idle_w, core_w) = match board {
                BoardKind::RaspberryPi4 => (80.0, 1_500_000, 2.5, 0.9),
                BoardKind::RaspberryPi5 => (80.0, 2_400_000, 2.8, 1.8),
                BoardKind::JetsonOrinNano => (95.0, 1_510_000, 5.0, 1.2),
                BoardKind::Unknown => (80.0, 2_000_000, 3.0, 1.5),
            };
            let levels: Vec<u32> = actuators
                .freq_cap
                .as_ref()
                .map(|cap| cap.levels().iter().map(|l| l.0).collect())
                .filter(|l: &Vec<u32>| !l.is_empty())
                .unwrap_or_else(|| vec![khz]);
            let opps = levels
                .into_iter()
                .map(|khz| Opp {
                    khz,
                    millivolts: UNKNOWN_OPP_MILLIVOLTS,
                })
                .collect();
            (opps, idle_w, core_w, firmware_c)
        }
    };
    let platform = Platform::new(opps, threads, idle_w, core_w)?
        .with_freq_writable(actuators.freq_cap.is_some())
        .with_threads_adjustable(threads > 1)
        .with_fan(actuators.fan.is_some().then_some(FAN_LEVELS));
    Ok((platform, firmware_c))
}

/// The actuators the governor drives, in words.
fn describe(actuators: &BoardActuators) -> &'static str {
    match (actuators.freq_cap.is_some(), actuators.fan.is_some()) {
        (true, true) => "clock cap, threads, pacing, fan",
        (true, false) => "clock cap, threads, pacing",
        (false, true) => "threads, pacing, fan",
        (false, false) => "threads, pacing",
    }
}

/// The board's energy meter: RAPL or the platform's power model at its top level, fed the
/// board's power sensors by the control loop.
fn board_meter(platform: &Platform) -> MeterHandle {
    let model = PowerModel::from_platform(platform, platform.top_level());
    MeterHandle::new(EnergyMeter::new(
        Some(Fallback::detect(
            std::path::Path::new("/sys/class/powercap"),
            model,
        )),
        crate::eco::factors::DEFAULT_WEAR_REFERENCE_C,
        crate::eco::factors::DEFAULT_ACTIVATION_EV,
    ))
}

/// The governor's source of readings: advances the board (the simulated SoC's time), takes
/// a snapshot, feeds the meter and keeps the snapshot in `latest`.
fn observe_board(
    mut board: Board,
    meter: MeterHandle,
    latest: Arc<Mutex<Option<Snapshot>>>,
) -> impl FnMut(Duration) -> SourceReading + Send {
    let mut warned = false;
    move |now: Duration| {
        if let Err(e) = board.advance()
            && !warned
        {
            log::warn!("{e:#}");
            warned = true;
        }
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let snapshot = board.snapshot(now_ms);
        let truth_j = board
            .sim_board()
            .and_then(|twin| twin.with(|soc| soc.truth().energy_j));
        meter.observe_snapshot(&snapshot, truth_j);
        meter.poll();
        let reading = reading_from_snapshot(&snapshot, now);
        *latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
        reading
    }
}

/// What telemetry reads and steers: the governor's handle and permits, the board's last
/// snapshot, the hard ceiling, the ambient temperature (simulated boards) and the platform's
/// power model.
#[derive(Clone)]
pub struct Probe {
    /// The governor's handle (status, run-time setpoint).
    pub handle: GovernorHandle,
    /// The permits the token loop and the trainer take.
    pub permits: Permits,
    /// The board's last snapshot, refreshed every governor tick.
    pub last_snapshot: Arc<std::sync::Mutex<Option<sensor_drivers::sensor_set::Snapshot>>>,
    /// The hard ceiling in °C.
    pub ceiling_c: f32,
    /// The ambient temperature in °C, where known.
    pub ambient_c: Option<f32>,
    /// The governor's platform (for modelled power).
    pub platform: Platform,
}

impl Governed {
    /// Opens the board and starts the control loop; the engine may use up to `threads`
    /// compute threads, fewer when the governor says so.
    pub fn start(args: &GovernorOptions, threads: usize) -> Result<Self> {
        let sensing = SensingConfig {
            sim: args.sim.clone(),
            time_scale: args.sim_time_scale,
            ..SensingConfig::default()
        };
        Self::start_with(&sensing, args, threads)
    }

    /// Opens the board `sensing` selects and starts the control loop with the setpoint and
    /// actuator choices of `args` (its `sim` fields are ignored: `sensing` says where to read).
    pub fn start_with(
        sensing: &SensingConfig,
        args: &GovernorOptions,
        threads: usize,
    ) -> Result<Self> {
        let mut board = open_board(sensing)?;
        let board_source = board.source().clone();
        let latest = Arc::new(Mutex::new(None));
        let threads = u16::try_from(threads.max(1)).unwrap_or(u16::MAX);
        let mut actuators = board.take_actuators();
        if args.pacing_only {
            actuators.freq_cap = None;
        }
        if !args.drive_fan {
            actuators.fan = None;
        }
        let (platform, firmware_c) = platform_for(&board, threads, &actuators)?;
        let described = describe(&actuators);
        let meter = board_meter(&platform);
        let steady = steady_k_per_w(board.sim_profile().as_ref(), &platform, firmware_c);
        let mut cfg = GovernorConfig::builder(platform, firmware_c);
        if let Some(sp) = args.setpoint_c {
            cfg = cfg.with_setpoint_c(sp);
        }
        if let Some(ms) = args.eco_max_itl_ms {
            cfg = cfg.with_efficient_pacing(EfficientPacing {
                max_itl_ms: Some(ms),
            });
        }
        if let Some(eco) = &args.eco_setpoint {
            let mut auto = AutoSetpoint::new(eco.weights, steady);
            auto.max_itl_ms = eco.max_itl_ms;
            cfg = cfg.with_auto_setpoint(auto);
        }
        let cfg = cfg.build().context("governor configuration")?;
        let ambient_c = board.sim_profile().map(|p| p.ambient().celsius());
        let (ceiling_c, platform) = (cfg.ceiling_c(), cfg.platform().clone());
        let permits = Permits::new(threads);
        let time_scale = if board.is_simulated() {
            sensing.time_scale
        } else {
            1.0
        };
        let source = observe_board(board, meter.clone(), latest.clone());
        let mut runner = GovernorRunner::new(
            Box::new(Governor::new(cfg)),
            permits.clone(),
            Box::new(source),
        )
        .with_time_scale(time_scale);
        if let Some(cap) = actuators.freq_cap {
            runner = runner.with_freq_cap(cap);
        }
        if let Some(fan) = actuators.fan {
            runner = runner.with_fan(fan);
        }
        let (handle, driver) = runner.build().context("starting the governor")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = stop.clone();
        let thread = std::thread::Builder::new()
            .name("governor".into())
            .spawn(move || {
                if let Err(e) = driver.run(&stop_thread) {
                    log::error!("governor: {e}");
                }
            })
            .context("spawning the governor thread")?;
        log::info!("governor acting through: {described}");
        let probe = Probe {
            handle: handle.clone(),
            permits: permits.clone(),
            last_snapshot: latest.clone(),
            ceiling_c,
            ambient_c,
            platform,
        };
        Ok(Governed {
            handle,
            permits,
            threads: Mutex::new(ComputeThreads::new(
                usize::from(threads),
                usize::from(threads),
            )),
            actuators: described,
            probe,
            stop,
            thread: Some(thread),
            meter,
            source: board_source,
            latest,
        })
    }

    /// The actuators the governor drives, in words (e.g. `clock cap, threads, pacing`).
    pub fn actuators(&self) -> &'static str {
        self.actuators
    }

    /// Where the governor's readings come from (a real board or the simulated SoC).
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Every sensor's reading at the governor's last tick; `None` before the first.
    pub fn latest_snapshot(&self) -> Option<Snapshot> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The governor's handle (status, run-time setpoint, stop).
    pub fn handle(&self) -> &GovernorHandle {
        &self.handle
    }

    /// The permits the governor paces; the trainer takes its steps through these.
    pub fn permits(&self) -> &Permits {
        &self.permits
    }

    /// The board's energy meter, fed by the control loop every period.
    pub fn meter(&self) -> &MeterHandle {
        &self.meter
    }

    /// The governor's current status.
    pub fn status(&self) -> GovernorStatus {
        self.handle.status()
    }

    /// What telemetry reads and steers.
    pub fn probe(&self) -> Probe {
        self.probe.clone()
    }

    /// True while the control loop's thread runs.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// A gate for the token loop: waits for an interactive permit before each token and
    /// holds it until the next call, so the permit spans the token's work, and applies the
    /// governor's thread count to the engine. Once the control loop has ended (stopped or
    /// died), it stops the loop with [`GOVERNOR_STOPPED`].
    pub fn gate(&self) -> impl FnMut(TokenEvent<'_>) -> Gate + '_ {
        let mut held: Option<Permit<'_>> = None;
        move |_| {
            drop(held.take());
            if !self.is_running() {
                return Gate::Stop(GOVERNOR_STOPPED.to_owned());
            }
            let _ = held.insert(self.permits.acquire(Priority::Interactive));
            let threads = usize::from(self.permits.threads());
            let mut pools = self.threads.lock().unwrap_or_else(|e| e.into_inner());
            pools.set(threads);
            Gate::Continue
        }
    }

    /// Stops the control loop (restoring anything it changed) and returns the last status.
    pub fn finish(mut self) -> GovernorStatus {
        self.shutdown();
        self.handle.status()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Governed {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The steady die temperature rise per watt of dynamic power the eco setpoint plans with: the
/// simulated profile's die-to-board plus board-to-ambient resistance, or on a real board the
/// governor's own prior (full load taking the die from 25 °C to the first firmware throttle
/// point).
fn steady_k_per_w(
    profile: Option<&sensor_drivers::sim::Profile>,
    platform: &Platform,
    firmware_c: f32,
) -> f64 {
    match profile {
        Some(p) => p.thermal.die_to_board_k_per_w + p.thermal.board_to_ambient_k_per_w,
        None => {
            (f64::from(firmware_c) - 25.0).max(10.0) / f64::from(platform.max_power_w()).max(0.1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_tokens_yet() -> TokenEvent<'static> {
        TokenEvent {
            generated: &[],
            logits: None,
        }
    }

    #[test]
    fn the_gate_stops_the_token_loop_once_the_governor_has_stopped() {
        let args = GovernorOptions {
            sim: Some("rpi5".into()),
            ..GovernorOptions::default()
        };
        let governed = Governed::start(&args, 1).expect("starting on the simulated SoC");
        assert_eq!((governed.gate())(no_tokens_yet()), Gate::Continue);
        governed.handle().stop();
        let started = std::time::Instant::now();
        while governed.is_running() && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!governed.is_running());
        assert_eq!(
            (governed.gate())(no_tokens_yet()),
            Gate::Stop(GOVERNOR_STOPPED.to_owned())
        );
    }

    #[test]
    fn a_toml_profile_file_drives_the_simulated_soc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("board.toml");
        let toml = sensor_drivers::sim::Profile::builtin_toml("rpi4").expect("rpi4 template");
        // A name that is neither built in nor a file: the profile must be used as loaded.
        let toml = toml.replacen("name = \"rpi4\"", "name = \"my-board\"", 1);
        std::fs::write(&path, toml).expect("writing the profile");
        let args = GovernorOptions {
            sim: Some(path.display().to_string()),
            ..GovernorOptions::default()
        };
        let governed = Governed::start(&args, 1).expect("a TOML profile file is accepted");
        assert!(
            matches!(governed.source(), Source::Simulated { profile } if profile == "my-board")
        );
        assert!(governed.probe().ambient_c.is_some());
    }
}
