//! The governor around the main job: opens the board (real sensors when present, else the
//! simulated SoC, heated live by this process's CPU time), starts the governor's control loop
//! on its own thread, and hands the token loop a gate that takes a permit before each token.
//! In the run path the governor acts through pacing alone (no sysfs writes), which is what an
//! unprivileged process has on any board.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use sensor_drivers::linux::board::BoardKind;
use sensor_drivers::sim::Profile;

use crate::engine::generate::{Gate, TokenEvent};
use crate::governor::platform::{Opp, Platform};
use crate::governor::runner::{
    GovernorHandle, GovernorRunner, GovernorStatus, reading_from_snapshot,
};
use crate::governor::{Governor, GovernorConfig, Permit, Permits, Priority};
use crate::sensing::{Board, SensingConfig, Source, open_board};

/// Governor flags of the main job.
#[derive(Debug, Clone, Args)]
pub struct GovernorArgs {
    /// Temperature to hold the SoC at, °C (default: 10 °C below the board's first firmware
    /// throttle point).
    #[arg(long, value_name = "CELSIUS")]
    pub setpoint: Option<f32>,
    /// Use the simulated SoC with this profile (rpi4, rpi5, rpi5-active, jetson-orin-nano, or
    /// a TOML file) even when real sensors are present.
    #[arg(long, value_name = "PROFILE")]
    pub sim: Option<String>,
    /// Simulated seconds per wall second for the simulated SoC.
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR")]
    pub sim_time_scale: f64,
    /// Run without the governor (no sensors, no pacing).
    #[arg(long)]
    pub no_governor: bool,
}

/// A running governor: its handle, the permits it publishes, and its thread.
pub struct Governed {
    handle: GovernorHandle,
    permits: Permits,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The board's first firmware throttle point in °C and the governor's view of the board
/// (pacing only: no frequency or fan actuator in the run path).
fn platform_for(board: &Board) -> Result<(Platform, f32)> {
    let (platform, firmware_c) = match board.source() {
        Source::Simulated { profile } => {
            let p = Profile::builtin(profile)
                .or_else(|_| Profile::from_file(std::path::Path::new(profile)))
                .map_err(|e| anyhow!("simulated SoC profile {profile:?}: {e}"))?;
            let platform = Platform::from_profile(&p)?;
            (platform, p.firmware.soft_limit_mc as f32 / 1000.0)
        }
        Source::Real { board, .. } => {
            // Published first throttle points: Pi firmware 80 °C; Orin passive trip 95 °C.
            let (firmware_c, khz, idle_w, core_w) = match board {
                BoardKind::RaspberryPi4 => (80.0, 1_500_000, 2.5, 0.9),
                BoardKind::RaspberryPi5 => (80.0, 2_400_000, 2.8, 1.8),
                BoardKind::JetsonOrinNano => (95.0, 1_510_000, 5.0, 1.2),
                BoardKind::Unknown => (80.0, 2_000_000, 3.0, 1.5),
            };
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(4);
            let cores = u16::try_from(cores).unwrap_or(u16::MAX);
            let platform = Platform::new(
                vec![Opp {
                    khz,
                    millivolts: 900,
                }],
                cores,
                idle_w,
                core_w,
            )?;
            (platform, firmware_c)
        }
    };
    let platform = platform
        .with_freq_writable(false)
        .with_threads_adjustable(false)
        .with_fan(None);
    Ok((platform, firmware_c))
}

impl Governed {
    /// Opens the board and starts the control loop.
    pub fn start(args: &GovernorArgs, threads: usize) -> Result<Self> {
        let sensing = SensingConfig {
            sim: args.sim.clone(),
            time_scale: args.sim_time_scale,
            ..SensingConfig::default()
        };
        let mut board = open_board(&sensing)?;
        let threads = u16::try_from(threads.max(1)).unwrap_or(u16::MAX);
        let (platform, firmware_c) = platform_for(&board)?;
        let mut cfg = GovernorConfig::builder(platform, firmware_c);
        if let Some(sp) = args.setpoint {
            cfg = cfg.with_setpoint_c(sp);
        }
        let cfg = cfg.build().context("governor configuration")?;
        let permits = Permits::new(threads);
        let mut warned = false;
        let source = move |now: Duration| {
            if let Err(e) = board.advance()
                && !warned
            {
                log::warn!("{e:#}");
                warned = true;
            }
            let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
            reading_from_snapshot(&board.snapshot(now_ms), now)
        };
        let (handle, driver) = GovernorRunner::new(
            Box::new(Governor::new(cfg)),
            permits.clone(),
            Box::new(source),
        )
        .build()
        .context("starting the governor")?;
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
        Ok(Governed {
            handle,
            permits,
            stop,
            thread: Some(thread),
        })
    }

    /// The governor's current status.
    pub fn status(&self) -> GovernorStatus {
        self.handle.status()
    }

    /// The permits the governor paces (e.g. for a training loop at `Priority::Training`).
    pub fn permits(&self) -> &Permits {
        &self.permits
    }

    /// A gate for the token loop: waits for an interactive permit before each token and
    /// holds it until the next call, so the permit spans the token's work.
    pub fn gate(&self) -> impl FnMut(TokenEvent<'_>) -> Gate + '_ {
        let mut held: Option<Permit<'_>> = None;
        move |_| {
            drop(held.take());
            let _ = held.insert(self.permits.acquire(Priority::Interactive));
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
