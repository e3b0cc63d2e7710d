//! Telemetry for the main job: the `--mqtt`/`--device-id`/TLS flags, the sink they select
//! (the broker with a disk queue, else JSON lines to a file), a thread that turns the
//! governor's status into a record every telemetry interval, a record per finished request,
//! and the fleet commands acting on the governor.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::governed::Probe;
use crate::eco::footprint::Footprint;
use crate::eco::ledger::{DayTotals, utc_date};
use crate::engine::generate::GenerationStats;
use crate::governor::Priority;
use crate::telemetry::{
    Body, BrokerConfig, BrokerUrl, CommandName, CommandTarget, DayFigures, EcoFigures, Encoding,
    Event, GovernorState, Power, PowerSource, RequestDone, Secret, SinkConfig, StatusSnapshot,
    Telemetry, TelemetryOptions, Tick, TrainingDone, ZoneTemp, topics,
};

/// Environment variable holding the broker password (when no password file is given).
pub const PASSWORD_ENV: &str = "THERMO_MQTT_PASSWORD";

/// Seconds between records when neither a flag nor the configuration says.
pub const DEFAULT_INTERVAL_S: f64 = 1.0;
/// The broker encoding when neither a flag nor the configuration says.
pub const DEFAULT_ENCODING: &str = "json";
/// The store-and-forward queue's bound when neither a flag nor the configuration says.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;

/// Telemetry flags of the main job.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Publish telemetry to this MQTT broker: mqtt://host[:port] or mqtts://host[:port].
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    /// Name this device in the fleet (topics thermo/<ID>/...; default: the host name).
    #[arg(long, value_name = "ID")]
    pub device_id: Option<String>,
    /// Without a broker, append telemetry as JSON lines to this file (default: the cache's
    /// telemetry/<device>.jsonl).
    #[arg(long, value_name = "FILE")]
    pub telemetry_file: Option<PathBuf>,
    /// Send no telemetry at all.
    #[arg(long)]
    pub no_telemetry: bool,
    /// Seconds between telemetry records (0.1 to 3600, default 1; the `interval` command
    /// changes it).
    #[arg(long, value_name = "SECONDS")]
    pub telemetry_interval: Option<f64>,
    /// Encode records on the broker as json (default) or postcard.
    #[arg(long, value_name = "ENCODING")]
    pub telemetry_encoding: Option<String>,
    /// Keep the store-and-forward queue in this directory (default: the cache's
    /// telemetry/<device>/queue).
    #[arg(long, value_name = "DIR")]
    pub telemetry_queue: Option<PathBuf>,
    /// Most records the queue keeps while the broker is away (the oldest telemetry goes first;
    /// events are kept; default 10000).
    #[arg(long, value_name = "N")]
    pub telemetry_queue_capacity: Option<usize>,
    /// Trust the CA certificates in this PEM file (mqtts; default: the system's).
    #[arg(long, value_name = "PEM")]
    pub mqtt_ca: Option<PathBuf>,
    /// Present this PEM client certificate chain (with --mqtt-key).
    #[arg(long, value_name = "PEM")]
    pub mqtt_cert: Option<PathBuf>,
    /// Use this PEM private key for the client certificate.
    #[arg(long, value_name = "PEM")]
    pub mqtt_key: Option<PathBuf>,
    /// Log in to the broker as this user (password from --mqtt-password-file or
    /// THERMO_MQTT_PASSWORD).
    #[arg(long, value_name = "USER")]
    pub mqtt_username: Option<String>,
    /// Read the broker password from this file (first line).
    #[arg(long, value_name = "FILE")]
    pub mqtt_password_file: Option<PathBuf>,
    /// Accept only these commands, comma-separated (setpoint, pause_training,
    /// resume_training, interval, status; default: all).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub mqtt_allow: Vec<String>,
    /// Do not publish Home Assistant discovery configs.
    #[arg(long)]
    pub no_discovery: bool,
}

/// The host name as a device id: characters outside `[A-Za-z0-9._-]` become `-`.
pub fn default_device_id() -> String {
    let raw = std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let id: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() {
        "thermo".to_string()
    } else {
        id
    }
}

/// The broker settings of the flags (the password from its file or the environment).
pub fn broker_config(args: &TelemetryArgs, url: &str, client_id: &str) -> Result<BrokerConfig> {
    let url: BrokerUrl = url.parse()?;
    let mut cfg = BrokerConfig::new(url, client_id);
    cfg.username = args.mqtt_username.clone();
    cfg.password = match &args.mqtt_password_file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the password file {}", p.display()))?;
            Some(Secret::new(text.lines().next().unwrap_or("").to_string()))
        }
        None => std::env::var(PASSWORD_ENV).ok().map(Secret::new),
    };
    if cfg.password.is_some() && cfg.username.is_none() {
        bail!("a broker password needs --mqtt-username");
    }
    cfg.ca_file = args.mqtt_ca.clone();
    cfg.client_cert = args.mqtt_cert.clone();
    cfg.client_key = args.mqtt_key.clone();
    // Fails early on unreadable TLS files or TLS flags on mqtt://.
    cfg.mqtt_options(None)?;
    Ok(cfg)
}

/// The telemetry options of the flags; `None` with `--no-telemetry`.
pub fn options(args: &TelemetryArgs) -> Result<Option<TelemetryOptions>> {
    if args.no_telemetry {
        return Ok(None);
    }
    let device = args.device_id.clone().unwrap_or_else(default_device_id);
    topics::validate_device_id(&device)?;
    let base = || -> Result<PathBuf> { Ok(crate::models::cache_root()?.join("telemetry")) };
    let sink = match &args.mqtt {
        Some(url) => SinkConfig::Mqtt {
            broker: broker_config(args, url, &format!("thermo-{device}"))?,
            queue_dir: match &args.telemetry_queue {
                Some(d) => d.clone(),
                None => base()?.join(&device).join("queue"),
            },
        },
        None => SinkConfig::File(match &args.telemetry_file {
            Some(f) => f.clone(),
            None => match base() {
                Ok(dir) => dir.join(format!("{device}.jsonl")),
                Err(e) => {
                    log::warn!("no telemetry: no place for its file ({e:#})");
                    return Ok(None);
                }
            },
        }),
    };
    let allowed = if args.mqtt_allow.is_empty() {
        CommandName::ALL.to_vec()
    } else {
        args.mqtt_allow
            .iter()
            .map(|n| n.parse::<CommandName>().map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()?
    };
    let interval = args.telemetry_interval.unwrap_or(DEFAULT_INTERVAL_S);
    if !(crate::telemetry::command::MIN_INTERVAL_S..=crate::telemetry::command::MAX_INTERVAL_S)
        .contains(&interval)
    {
        bail!("--telemetry-interval must be 0.1 to 3600 s");
    }
    let encoding: Encoding = args
        .telemetry_encoding
        .as_deref()
        .unwrap_or(DEFAULT_ENCODING)
        .parse()?;
    Ok(Some(
        TelemetryOptions::new(device, sink)
            .with_encoding(encoding)
            .with_interval(Duration::from_secs_f64(interval))
            .with_queue_capacity(
                args.telemetry_queue_capacity
                    .unwrap_or(DEFAULT_QUEUE_CAPACITY),
            )
            .with_allowed_commands(allowed)
            .with_discovery(!args.no_discovery),
    ))
}

/// Commands act on the governor: the setpoint through its handle, training through the
/// permits' hold switch.
impl CommandTarget for Probe {
    fn set_setpoint_c(&self, celsius: f32) -> Result<(), String> {
        self.handle
            .set_setpoint_c(celsius)
            .map_err(|e| e.to_string())
    }

    fn pause_training(&self) -> Result<(), String> {
        self.permits.hold(Priority::Training, true);
        Ok(())
    }

    fn resume_training(&self) -> Result<(), String> {
        self.permits.hold(Priority::Training, false);
        Ok(())
    }

    fn snapshot(&self) -> StatusSnapshot {
        let s = self.handle.status();
        StatusSnapshot {
            temperature_c: s.temperature_c,
            setpoint_c: s.setpoint_c,
            ceiling_c: self.ceiling_c,
            ambient_c: self.ambient_c,
            limiter: s.limiter.as_str().to_string(),
            tokens_per_s: s.tokens_per_s,
            training_paused: self.permits.is_held(Priority::Training),
            interval_s: 0.0,
            line: s.line(),
        }
    }
}

/// Running telemetry of the main job.
pub struct Session {
    telemetry: Telemetry,
    driver: Option<JoinHandle<()>>,
    poller: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    energy_mj: Arc<AtomicU64>,
}

impl Session {
    /// Starts the sink's driver and, with a governor, the per-interval records; `None` with
    /// `--no-telemetry`. A sink that cannot start is reported and the job runs without it.
    pub fn start(args: &TelemetryArgs, probe: Option<Probe>) -> Result<Option<Session>> {
        let Some(opts) = options(args)? else {
            return Ok(None);
        };
        let target = probe.clone().map(|p| Arc::new(p) as Arc<dyn CommandTarget>);
        let (telemetry, driver) = Telemetry::new(opts, target)?;
        let driver = std::thread::Builder::new()
            .name("telemetry".into())
            .spawn(move || {
                if let Err(e) = driver.run() {
                    log::error!("telemetry stopped: {e}");
                }
            })
            .context("spawning the telemetry thread")?;
        let stop = Arc::new(AtomicBool::new(false));
        let energy_mj = Arc::new(AtomicU64::new(0));
        let poller = match probe {
            None => None,
            Some(p) => {
                let (t, s, e) = (telemetry.clone(), stop.clone(), energy_mj.clone());
                Some(
                    std::thread::Builder::new()
                        .name("telemetry-ticks".into())
                        .spawn(move || poll_ticks(&p, &t, &s, &e))
                        .context("spawning the telemetry tick thread")?,
                )
            }
        };
        Ok(Some(Session {
            telemetry,
            driver: Some(driver),
            poller,
            stop,
            energy_mj,
        }))
    }

    /// The telemetry handle (counters and health).
    pub fn handle(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Energy counted so far in J (from the per-interval power figures).
    pub fn energy_j(&self) -> f64 {
        self.energy_mj.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Records a finished request; `energy_before_j` is [`Session::energy_j`] at its start.
    ///
    /// `footprint`, when the eco accounting measured the answer, supplies its energy and the
    /// eco figures; `today`, the day's totals including it.
    pub fn request_done(
        &self,
        stats: &GenerationStats,
        wall: Duration,
        energy_before_j: f64,
        footprint: Option<&Footprint>,
        today: Option<&DayTotals>,
    ) {
        let energy = footprint.map_or(self.energy_j() - energy_before_j, |f| f.energy_j);
        let measured = footprint.is_some() || self.poller.is_some();
        self.telemetry.send(Body::Request(RequestDone {
            prompt_tokens: stats.prompt_tokens as u64,
            generated_tokens: stats.generated_tokens as u64,
            prefill_tps: stats.prefill_tps() as f32,
            decode_tps: stats.decode_tps() as f32,
            stop: stats.stop.to_string(),
            wall_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
            energy_j: measured.then_some(energy.max(0.0)),
            eco: footprint.map(eco_figures),
            today: today.map(day_figures),
        }));
    }

    /// Records a one-off event (never dropped from the disk queue).
    pub fn event(&self, name: &str, detail: &str) {
        self.telemetry.send(Body::Event(Event {
            name: name.to_string(),
            detail: detail.to_string(),
            count: None,
        }));
    }

    /// Records a finished or stopped training run.
    pub fn training_done(&self, run: TrainingDone) {
        self.telemetry.send(Body::Training(run));
    }

    /// Stops the tick thread and the driver (which drains the backlog for a moment and
    /// publishes a clean `offline`).
    pub fn finish(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.poller.take() {
            let _ = p.join();
        }
        self.telemetry.stop();
        if let Some(d) = self.driver.take() {
            let _ = d.join();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The telemetry form of an answer's footprint.
pub fn eco_figures(f: &Footprint) -> EcoFigures {
    EcoFigures {
        joules: f.energy_j,
        g_co2e: f.g_co2e,
        ml_water: f.water_ml,
        mg_nox: f.nox_mg,
        mg_so2: f.so2_mg,
        mg_pm25: f.pm25_mg,
        wear_hours: f.wear_hours,
    }
}

/// The telemetry form of today's (UTC) totals.
pub fn day_figures(t: &DayTotals) -> DayFigures {
    DayFigures {
        date: utc_date(std::time::SystemTime::now()),
        eco: EcoFigures {
            joules: t.joules,
            g_co2e: t.g_co2e,
            ml_water: t.ml_water,
            mg_nox: t.mg_nox,
            mg_so2: t.mg_so2,
            mg_pm25: t.mg_pm25,
            wear_hours: t.wear_hours,
        },
        embodied_g_co2e: t.embodied_g_co2e,
        tokens: t.tokens,
        requests: t.requests,
        training_runs: t.training_runs,
        training_steps: t.training_steps,
    }
}

/// One tick record from the governor's status and the board's snapshot.
fn tick_record(p: &Probe, occupancy: f32, energy_j: f64, throttle_events: u64) -> Tick {
    let s = p.handle.status();
    let stats = p.permits.stats();
    let snapshot = p
        .last_snapshot
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let temps = snapshot
        .as_ref()
        .map(|snap| {
            snap.temps
                .iter()
                .map(|t| ZoneTemp {
                    name: t.name.clone(),
                    celsius: t.value.map(|v| v.celsius()),
                    health: t.health.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let power = match s.power_w {
        Some(w) => Power {
            watts: w,
            source: PowerSource::Measured,
        },
        None => {
            let level = p.platform.top_level();
            Power {
                watts: p.platform.power_w(level, s.threads, occupancy),
                source: PowerSource::Modelled,
            }
        }
    };
    Tick {
        uptime_ms: u64::try_from(s.at.as_millis()).unwrap_or(u64::MAX),
        governing_c: s.temperature_c.filter(|t| t.is_finite()),
        temps,
        power: Some(power),
        freq_khz: s.freq_cap_khz,
        governor: GovernorState {
            mode: s.mode.as_str().to_string(),
            limiter: s.limiter.as_str().to_string(),
            setpoint_c: s.setpoint_c,
            reason: s.reason.clone(),
            duties: s.duties,
            training_paused: p.permits.is_held(Priority::Training),
        },
        tokens_per_s: s.tokens_per_s,
        tokens_total: stats.steps[Priority::Interactive.index()],
        steps_total: stats.steps[Priority::Training.index()],
        energy_j,
        throttle_events,
        eco: None,
    }
}

/// Sends a tick record every telemetry interval until `stop`, integrating energy, and one
/// last record when stopped, so the final state (energy, steps, tokens) is always reported.
fn poll_ticks(p: &Probe, t: &Telemetry, stop: &AtomicBool, energy_mj: &AtomicU64) {
    let mut last = Instant::now();
    let mut last_stats = p.permits.stats();
    let mut energy_j = 0.0f64;
    let mut throttle_events = 0u64;
    let mut was_throttled = false;
    let mut next = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if !stopping && Instant::now() < next {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        next = Instant::now() + t.interval();
        let stats = p.permits.stats();
        let occupancy = stats.utilisation_since(&last_stats);
        last_stats = stats;
        let throttled = p
            .last_snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|s| s.throttle.as_ref().and_then(|r| r.as_ref().ok()).copied())
            .is_some_and(|f| f.any_live());
        if throttled && !was_throttled {
            throttle_events += 1;
        }
        was_throttled = throttled;
        let mut tick = tick_record(p, occupancy, energy_j, throttle_events);
        let dt = last.elapsed().as_secs_f64();
        last = Instant::now();
        if let Some(pw) = tick.power {
            energy_j += f64::from(pw.watts) * dt;
        }
        tick.energy_j = energy_j;
        energy_mj.store((energy_j * 1000.0) as u64, Ordering::Relaxed);
        t.send(Body::Tick(tick));
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        t: TelemetryArgs,
    }

    fn parse(args: &[&str]) -> TelemetryArgs {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap()
            .t
    }

    #[test]
    fn a_broker_url_selects_the_mqtt_sink_and_no_url_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q");
        let o = options(&parse(&[
            "--mqtt",
            "mqtt://127.0.0.1:1",
            "--device-id",
            "d1",
            "--telemetry-queue",
            q.to_str().unwrap(),
        ]))
        .unwrap()
        .unwrap();
        assert!(format!("{o:?}").contains("Mqtt"));
        let f = dir.path().join("t.jsonl");
        let o = options(&parse(&[
            "--device-id",
            "d1",
            "--telemetry-file",
            f.to_str().unwrap(),
        ]))
        .unwrap()
        .unwrap();
        assert!(format!("{o:?}").contains("File"));
        assert!(options(&parse(&["--no-telemetry"])).unwrap().is_none());
    }

    #[test]
    fn rejects_bad_telemetry_flags() {
        for bad in [
            &["--mqtt", "http://x", "--device-id", "d"][..],
            &["--mqtt", "mqtt://u:p@x", "--device-id", "d"],
            &["--device-id", "a/b", "--telemetry-file", "/tmp/x"],
            &[
                "--mqtt-allow",
                "reboot",
                "--device-id",
                "d",
                "--telemetry-file",
                "/tmp/x",
            ],
            &[
                "--telemetry-interval",
                "0",
                "--device-id",
                "d",
                "--telemetry-file",
                "/tmp/x",
            ],
            &[
                "--mqtt",
                "mqtt://h",
                "--device-id",
                "d",
                "--mqtt-ca",
                "/tmp/ca.pem",
            ],
        ] {
            assert!(options(&parse(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_password_from_its_file_never_shows_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret-pass\n").unwrap();
        let args = parse(&[
            "--mqtt-username",
            "alice",
            "--mqtt-password-file",
            pw.to_str().unwrap(),
        ]);
        let cfg = broker_config(&args, "mqtt://h:1883", "c").unwrap();
        assert_eq!(
            cfg.password.as_ref().map(|s| s.expose()),
            Some("s3cret-pass")
        );
        let o = TelemetryOptions::new(
            "d",
            SinkConfig::Mqtt {
                broker: cfg.clone(),
                queue_dir: dir.path().into(),
            },
        );
        let text = format!("{cfg:?} {o:?} {args:?}");
        assert!(!text.contains("s3cret-pass"), "{text}");
    }

    #[test]
    fn commands_reach_the_running_governor_and_the_training_switch() {
        use crate::cli::governed::{Governed, GovernorArgs};
        #[derive(Debug, Parser)]
        struct G {
            #[command(flatten)]
            g: GovernorArgs,
        }
        let args = G::try_parse_from(["x", "--sim", "rpi4", "--setpoint", "65"])
            .unwrap()
            .g;
        let g = Governed::start(&args, 1).unwrap();
        let p = g.probe();
        let snap = p.snapshot();
        assert_eq!(snap.setpoint_c, 65.0);
        assert!(
            snap.ambient_c
                .is_some_and(|a| a > 0.0 && a < snap.setpoint_c)
        );
        assert!(snap.ceiling_c > snap.setpoint_c);
        assert!(p.set_setpoint_c(snap.ceiling_c + 5.0).is_err());
        p.set_setpoint_c(60.0).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while p.handle.status().setpoint_c != 60.0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(p.snapshot().setpoint_c, 60.0);
        p.pause_training().unwrap();
        assert!(p.snapshot().training_paused);
        assert!(p.permits.try_acquire(Priority::Training).is_err());
        p.resume_training().unwrap();
        assert!(!p.snapshot().training_paused);
        drop(g);
    }

    #[test]
    fn the_default_device_id_is_one_plain_topic_level() {
        assert!(topics::validate_device_id(&default_device_id()).is_ok());
    }
}
