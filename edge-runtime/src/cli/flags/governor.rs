//! The governor flags of the main job (`run`, `chat`, `train`, the benchmarks) and the
//! governed session they start.

use anyhow::{Context, Result};
use clap::Args;

use edge_runtime::eco::EcoConfig;
use edge_runtime::session::governed::{EcoSetpointOptions, Governed, GovernorOptions};

/// `--setpoint`: a temperature, or `auto` for the eco setpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SetpointArg {
    /// The governor chooses the setpoint with the fewest g CO2e per token.
    Auto,
    /// Hold this temperature, °C.
    Celsius(f32),
}

/// Parses `auto` or a temperature in °C.
pub fn parse_setpoint(text: &str) -> Result<SetpointArg, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("auto") {
        return Ok(SetpointArg::Auto);
    }
    match t.parse::<f32>() {
        Ok(c) if c.is_finite() => Ok(SetpointArg::Celsius(c)),
        _ => Err(format!(
            "expected a temperature in °C or \"auto\", got {text:?}"
        )),
    }
}

impl SetpointArg {
    /// The fixed temperature, if one was given.
    pub fn celsius(self) -> Option<f32> {
        match self {
            SetpointArg::Celsius(c) => Some(c),
            SetpointArg::Auto => None,
        }
    }
}

/// Governor flags of the main job.
#[derive(Debug, Clone, Args)]
pub struct GovernorArgs {
    /// Temperature to hold the SoC at, °C (default: 10 °C below the board's first firmware
    /// throttle point), or `auto`: the governor chooses, and keeps re-choosing, the setpoint
    /// with the fewest g CO2e per token (grid carbon plus the embodied carbon wear spends) and
    /// says why in the status line.
    #[arg(long, value_name = "CELSIUS|auto", value_parser = parse_setpoint)]
    pub setpoint: Option<SetpointArg>,
    /// The longest mean inter-token latency in ms that energy-aware pacing (busy generation
    /// run at the setting with the fewest joules per token rather than flat out) and, with
    /// `--setpoint auto`, the chosen setpoint may cause. Turns that pacing on at a fixed
    /// setpoint; with `auto` it is on anyway, bounded by 1.5x the flat-out latency.
    #[arg(long, value_name = "MS")]
    pub eco_max_itl_ms: Option<f64>,
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
    /// The governed session's options these flags ask for; the eco setpoint weighs carbon
    /// with the factors of `eco`.
    pub fn options(&self, eco: &EcoConfig) -> Result<GovernorOptions> {
        let eco_setpoint = match self.setpoint {
            Some(SetpointArg::Auto) => Some(EcoSetpointOptions {
                weights: eco.factors().context("[eco] factors")?.eco_weights(),
                max_itl_ms: self.eco_max_itl_ms,
            }),
            _ => None,
        };
        if let Some(ms) = self.eco_max_itl_ms
            && !(ms.is_finite() && (1.0..=60_000.0).contains(&ms))
        {
            anyhow::bail!("--eco-max-itl-ms must be in 1..=60000, got {ms}");
        }
        Ok(GovernorOptions {
            setpoint_c: self.setpoint.and_then(SetpointArg::celsius),
            sim: self.sim.clone(),
            sim_time_scale: self.sim_time_scale,
            pacing_only: self.pacing_only,
            drive_fan: self.drive_fan,
            eco_setpoint,
            eco_max_itl_ms: self.eco_max_itl_ms,
        })
    }

    /// Starts the governor on `threads` compute threads, the eco setpoint weighing carbon
    /// with the default `[eco]` factors; `None` with `--no-governor`.
    pub fn start(&self, threads: usize) -> Result<Option<Governed>> {
        self.start_for(threads, &EcoConfig::default())
    }

    /// Starts the governor on `threads` compute threads, the eco setpoint weighing carbon
    /// with the factors of `eco`; `None` with `--no-governor`.
    pub fn start_for(&self, threads: usize, eco: &EcoConfig) -> Result<Option<Governed>> {
        if self.no_governor {
            return Ok(None);
        }
        Governed::start(&self.options(eco)?, threads).map(Some)
    }
}
