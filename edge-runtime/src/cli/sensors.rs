//! `thermo sensors`: lists what the board offers (thermal zones, hwmon chips, power rails,
//! cooling devices, cpufreq policies, throttle flags, configured I2C sensors, CPU load and
//! memory), then prints live readings every interval until interrupted, or once with `--once`.
//! On a machine without thermal hardware it says so and points at the simulated SoC; with
//! `--sim` it shows the twin, heated by this process's own CPU time. It only reads: no fan,
//! frequency or zone mode is written.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use sensor_drivers::linux::SysRoot;
use sensor_drivers::linux::discover;
use sensor_drivers::linux::system::{LoadSample, SystemLoad};
use sensor_drivers::sensor_set::{PowerSample, Snapshot, TempSample};
use sensor_drivers::sim::{BUILTIN_PROFILES, LiveTick};
use sensor_drivers::{Health, MilliCelsius};

use edge_runtime::sensing::{
    Board, DEFAULT_TWIN_PROFILE, Selection, SensingConfig, Source, TwinReason, open_board, select,
};

/// The shortest interval over which CPU usage is meaningful (sysinfo's minimum update interval
/// on Linux is 200 ms).
const FIRST_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// Flags of `thermo sensors`.
#[derive(Debug, Args)]
pub struct SensorsArgs {
    /// Show the simulated SoC instead of this machine: rpi4, rpi5, rpi5-active,
    /// jetson-orin-nano, or the path of a TOML profile.
    #[arg(long, value_name = "PROFILE")]
    pub sim: Option<String>,
    /// Print the listing and one snapshot, then exit.
    #[arg(long)]
    pub once: bool,
    /// Read sysfs and procfs under DIR instead of `/` (e.g. a fake board tree).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Govern on the thermal zone of this type instead of the board's default.
    #[arg(long, value_name = "TYPE")]
    pub zone: Option<String>,
    /// Refresh the live readings every N milliseconds.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub interval_ms: u64,
    /// Run the simulated SoC this many times faster than real time.
    #[arg(long, value_name = "FACTOR", value_parser = edge_runtime::sensing::parse_time_scale)]
    pub time_scale: Option<f64>,
    /// Read the `[sensors]` table (root, zone, sim, time_scale, I2C sensors) of this TOML file;
    /// flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Runs `thermo sensors`. A closed stdout (e.g. piped into `head`) ends it quietly.
pub fn sensors(args: SensorsArgs) -> Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match show(&args, &mut out) {
        Err(error)
            if error
                .downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// The sensing config from `--config` (or the defaults), overridden by the flags.
fn config_from(args: &SensorsArgs) -> Result<SensingConfig> {
    let mut cfg = match &args.config {
        Some(path) => SensingConfig::from_file(path)?,
        None => SensingConfig::default(),
    };
    if let Some(root) = &args.root {
        cfg.root.clone_from(root);
    }
    if args.zone.is_some() {
        cfg.zone.clone_from(&args.zone);
    }
    if args.sim.is_some() {
        cfg.sim.clone_from(&args.sim);
    }
    if let Some(scale) = args.time_scale {
        cfg.time_scale = scale;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn show(args: &SensorsArgs, out: &mut impl Write) -> Result<()> {
    let cfg = config_from(args)?;
    let selection = select(&cfg)?;
    let mut load = SystemLoad::new();
    match &selection {
        Selection::Twin {
            reason: TwinReason::Configured,
            ..
        } => {}
        Selection::Twin { reason, .. } => {
            write!(out, "{}", discover(&SysRoot::new(&cfg.root)))?;
            offer_twin(out, &cfg, reason)?;
            write_load(out, &load.sample())?;
            return Ok(());
        }
        Selection::Real { .. } => {
            write!(out, "{}", discover(&SysRoot::new(&cfg.root)))?;
        }
    }
    let mut board = open_board(&cfg)?;
    // The first tick only takes the twin's CPU-time baseline.
    board.advance()?;
    describe(out, &mut board, &cfg)?;
    write_load(out, &load.sample())?;
    let load_baseline = Instant::now();
    out.flush()?;
    // CPU usage is a difference between two samples; give the first reading a real interval.
    let since_baseline = load_baseline.elapsed();
    if since_baseline < FIRST_SAMPLE_INTERVAL {
        std::thread::sleep(FIRST_SAMPLE_INTERVAL - since_baseline);
    }
    if args.once {
        writeln!(out, "readings:")?;
    } else {
        writeln!(
            out,
            "live readings every {} ms (Ctrl-C to stop):",
            args.interval_ms
        )?;
    }
    let start = Instant::now();
    loop {
        let tick = board.advance()?;
        let now_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let snapshot = board.snapshot(now_ms);
        write_readings(out, &mut board, &snapshot, tick, &load.sample())?;
        out.flush()?;
        if args.once {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(args.interval_ms));
    }
}

/// Says plainly that there is nothing to read here and how to see the twin instead.
fn offer_twin(out: &mut impl Write, cfg: &SensingConfig, reason: &TwinReason) -> Result<()> {
    match reason {
        TwinReason::NoUsableZone { zones } => writeln!(
            out,
            "no thermal hardware found under {}: its thermal zones ({}) cannot be read",
            cfg.root.display(),
            zones.join(", ")
        )?,
        _ => writeln!(
            out,
            "no thermal hardware found under {}: no thermal zone and no configured I2C sensor",
            cfg.root.display()
        )?,
    }
    writeln!(
        out,
        "the simulated SoC can stand in, heated by this process's CPU time:\n  \
         thermo sensors --sim {DEFAULT_TWIN_PROFILE}\n(profiles: {}, or the path of a TOML \
         profile)",
        BUILTIN_PROFILES.join(", ")
    )?;
    Ok(())
}

/// The source, governing sensor, I2C sensors and actuators of an opened board.
fn describe(out: &mut impl Write, board: &mut Board, cfg: &SensingConfig) -> Result<()> {
    match board.source().clone() {
        Source::Real { .. } => {
            writeln!(
                out,
                "source: {} under {}",
                board.source(),
                cfg.root.display()
            )?;
        }
        Source::Simulated { .. } => {
            writeln!(
                out,
                "source: {}, heated by this process's CPU time at {}x real time",
                board.source(),
                cfg.time_scale
            )?;
            if let Some(profile) = board
                .sim_board()
                .and_then(|b| b.with(|s| s.profile().clone()))
            {
                let fan = match &profile.fan {
                    Some(fan) => format!("fan curve with {} steps", fan.points.len()),
                    None => "no fan".to_owned(),
                };
                writeln!(
                    out,
                    "  {}: {} cores, {}-{} MHz over {} levels, idle {:.2} W, ambient {}, {fan}",
                    profile.description,
                    profile.cores,
                    profile.min_khz().0 / 1000,
                    profile.max_khz().0 / 1000,
                    profile.power.dvfs.len(),
                    profile.power.idle_mw / 1000.0,
                    celsius(profile.ambient())
                )?;
            }
        }
    }
    writeln!(
        out,
        "governing: {}",
        board
            .governing_zone()
            .unwrap_or("none (no SoC temperature source)")
    )?;
    if !board.i2c_devices().is_empty() {
        writeln!(
            out,
            "I2C sensors (from config): {}",
            board.i2c_devices().len()
        )?;
        for device in board.i2c_devices() {
            let c = &device.config;
            let state = device.error.as_deref().unwrap_or("opened");
            writeln!(
                out,
                "  {} {:?} at {:#04x} on {} ({}): {state}",
                c.name,
                c.chip,
                c.address,
                c.bus.display(),
                c.role
            )?;
        }
    }
    let cap = match board.freq_cap() {
        Some(cap) => {
            let levels = cap.levels();
            format!(
                "{}-{} MHz over {} levels, now {} MHz",
                levels.first().map_or(0, |l| l.0 / 1000),
                levels.last().map_or(0, |l| l.0 / 1000),
                levels.len(),
                cap.cap().0 / 1000
            )
        }
        None => "none".to_owned(),
    };
    writeln!(out, "actuators: frequency ceiling {cap}")?;
    let fan = if board.fan().is_some() {
        "present (left on its automatic control: this command writes nothing)"
    } else {
        "none"
    };
    writeln!(out, "           fan {fan}")?;
    Ok(())
}

/// CPU count and memory; CPU usage waits for the readings, where it spans a real interval.
fn write_load(out: &mut impl Write, load: &LoadSample) -> Result<()> {
    writeln!(out, "system: {} CPUs, {}", load.cpus, memory_text(load))?;
    Ok(())
}

fn memory_text(load: &LoadSample) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    format!(
        "memory {:.2} of {:.2} GiB available",
        load.memory_available_bytes as f64 / GIB,
        load.memory_total_bytes as f64 / GIB
    )
}

fn load_text(load: &LoadSample) -> String {
    format!(
        "CPU {:.1} % of {} CPUs, {}",
        load.cpu_usage_pct,
        load.cpus,
        memory_text(load)
    )
}

fn celsius(t: MilliCelsius) -> String {
    format!("{:.1} °C", f64::from(t.0) / 1000.0)
}

/// `ok`, or the health with the read error behind it.
fn health_text(health: Health, error: Option<&sensor_drivers::SensorError>) -> String {
    match (health, error) {
        (Health::Ok, _) => "ok".to_owned(),
        (health, Some(error)) => format!("{health} ({error})"),
        (health, None) => health.to_string(),
    }
}

fn temp_line(sample: &TempSample) -> String {
    let value = sample.value.map_or("-".to_owned(), celsius);
    format!(
        "  {:<22} {:<14} {:>10}  {}",
        sample.name,
        sample.role.to_string(),
        value,
        health_text(sample.health, sample.error.as_ref())
    )
}

fn power_line(sample: &PowerSample) -> String {
    let value = sample.value.map_or("-".to_owned(), |p| {
        let mut text = format!("{:.2} W", p.power.watts());
        if let (Some(v), Some(a)) = (p.voltage, p.current) {
            text.push_str(&format!(" ({v}, {a})"));
        }
        text
    });
    format!(
        "  {:<22} {:<14} {:>10}  {}",
        sample.name,
        sample.role.to_string(),
        value,
        health_text(sample.health, sample.error.as_ref())
    )
}

/// One tick's block: time and load, every sample, throttle flags, fan, ceiling and, for the
/// twin, what drove it.
fn write_readings(
    out: &mut impl Write,
    board: &mut Board,
    snapshot: &Snapshot,
    tick: Option<LiveTick>,
    load: &LoadSample,
) -> Result<()> {
    writeln!(
        out,
        "t = {:.1} s  {}",
        snapshot.at_ms as f64 / 1000.0,
        load_text(load)
    )?;
    for sample in &snapshot.temps {
        writeln!(out, "{}", temp_line(sample))?;
    }
    for sample in &snapshot.powers {
        writeln!(out, "{}", power_line(sample))?;
    }
    if let Some(flags) = &snapshot.throttle {
        let now = match flags {
            Ok(flags) => format!("{:#x}", flags.0),
            Err(error) => format!("<{error}>"),
        };
        writeln!(
            out,
            "  throttle flags {now} (seen since start {:#x})",
            snapshot.throttle_seen.0
        )?;
    }
    if let Some(fan) = board.fan() {
        let duty = fan
            .duty()
            .map_or_else(|e| format!("<{e}>"), |d| d.to_string());
        let speed = match fan.speed() {
            Ok(Some(rpm)) => format!(", {rpm}"),
            Ok(None) => String::new(),
            Err(e) => format!(", <{e}>"),
        };
        writeln!(out, "  fan {duty}{speed}")?;
    }
    if let Some(cap) = board.freq_cap() {
        writeln!(out, "  frequency ceiling {} MHz", cap.cap().0 / 1000)?;
    }
    if let Some(truth) = board.sim_board().and_then(|b| b.with(|soc| soc.truth())) {
        let busy = tick.map_or(0.0, |t| t.busy_cores);
        writeln!(
            out,
            "  twin: {busy:.2} busy cores from this process, clock {:.0} MHz, {:.1} s simulated{}",
            truth.effective_khz / 1000.0,
            truth.time.as_secs_f64(),
            if truth.shut_down {
                ", SHUT DOWN (critical temperature)"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sensor_drivers::SensorError;
    use sensor_drivers::sensor_set::Role;

    use super::*;

    #[test]
    fn an_unhealthy_sample_shows_no_value_and_says_why() {
        let sample = TempSample {
            name: "cpu-thermal".to_owned(),
            role: Role::SocTemp,
            value: None,
            health: Health::Error,
            error: Some(SensorError::Malformed),
        };
        let line = temp_line(&sample);
        assert!(line.contains("cpu-thermal"), "{line}");
        assert!(line.contains(" - "), "{line}");
        assert!(
            line.contains("error (sensor returned malformed data)"),
            "{line}"
        );
        assert!(!line.contains("°C"), "{line}");
    }

    #[test]
    fn a_healthy_sample_shows_degrees_with_one_decimal() {
        let sample = TempSample {
            name: "tj-thermal".to_owned(),
            role: Role::SocTemp,
            value: Some(MilliCelsius(47_218)),
            health: Health::Ok,
            error: None,
        };
        let line = temp_line(&sample);
        assert!(line.contains("47.2 °C"), "{line}");
        assert!(line.ends_with("ok"), "{line}");
    }
}
