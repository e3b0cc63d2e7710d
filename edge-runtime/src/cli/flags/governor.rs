//! The governor flags of the main job (`run`, `chat`, `train`, the benchmarks) and the
//! governed session they start.

use anyhow::Result;
use clap::Args;

use edge_runtime::session::governed::{Governed, GovernorOptions};

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
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR",
          value_parser = edge_runtime::sensing::parse_time_scale)]
    pub sim_time_scale: f64,
    /// Act through pacing and the thread count alone: leave the CPU frequency ceiling and the
    /// fan to the kernel even where they are writable.
    #[arg(long)]
    pub pacing_only: bool,
    /// Let the governor drive the fan too (the `pwm-fan` cooling device): while it runs, the
    /// governing zone's kernel thermal governor is switched off, and switched back on at exit.
    #[arg(long, conflicts_with = "pacing_only")]
    pub drive_fan: bool,
    /// Run without the governor (no sensors, no pacing).
    #[arg(long)]
    pub no_governor: bool,
}

impl GovernorArgs {
    /// The governed session's options these flags ask for.
    pub fn options(&self) -> GovernorOptions {
        GovernorOptions {
            setpoint_c: self.setpoint,
            sim: self.sim.clone(),
            sim_time_scale: self.sim_time_scale,
            pacing_only: self.pacing_only,
            drive_fan: self.drive_fan,
        }
    }

    /// Starts the governor on `threads` compute threads; `None` with `--no-governor`.
    pub fn start(&self, threads: usize) -> Result<Option<Governed>> {
        if self.no_governor {
            return Ok(None);
        }
        Governed::start(&self.options(), threads).map(Some)
    }
}
