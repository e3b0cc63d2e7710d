//! Telemetry for the main job: the sink the `[telemetry]` section selects (the broker with a
//! disk queue, else JSON lines to a file), a thread that turns the governor's status into a
//! record every telemetry interval, a record per finished request, and the fleet commands
//! acting on the governor.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::governed::Probe;
use crate::config::TelemetrySection;
use crate::eco::footprint::Footprint;
use crate::eco::layers::Layers;
use crate::eco::ledger::{DayTotals, utc_date};
use crate::engine::generate::GenerationStats;
use crate::governor::Priority;
use crate::telemetry::{
    Body, BrokerConfig, BrokerUrl, CommandName, CommandTarget, DayFigures, DayLayerFigures,
    EcoFigures, Encoding, Event, GovernorState, LayerFigures, Power, PowerSource, RequestDone,
    Secret, SinkConfig, StatusSnapshot, Telemetry, TelemetryOptions, Tick, TrainingDone, ZoneTemp,
    topics,
};

/// Environment variable holding the broker password (when no password file is given).
pub const PASSWORD_ENV: &str = "THERMO_MQTT_PASSWORD";

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

/// The broker settings of `[telemetry]` (the password from its file or the environment).
pub fn broker_config(
    section: &TelemetrySection,
    url: &str,
    client_id: &str,
) -> Result<BrokerConfig> {
    let url: BrokerUrl = url.parse()?;
    let mut cfg = BrokerConfig::new(url, client_id);
    cfg.username = section.username.clone();
    cfg.password = match &section.password_file {
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
    cfg.ca_file = section.ca_file.clone();
    cfg.client_cert = section.cert_file.clone();
    cfg.client_key = section.key_file.clone();
    // Fails early on unreadable TLS files or TLS flags on mqtt://.
    cfg.mqtt_options(None)?;
    Ok(cfg)
}

/// The telemetry options of `[telemetry]`; `None` when it is switched off.
pub fn options(section: &TelemetrySection) -> Result<Option<TelemetryOptions>> {
    if !section.enabled {
        return Ok(None);
    }
    let device = section.device_id.clone().unwrap_or_else(default_device_id);
    topics::validate_device_id(&device)?;
    let base = || -> Result<PathBuf> { Ok(crate::models::cache_root()?.join("telemetry")) };
    let sink = match &section.mqtt {
        Some(url) => SinkConfig::Mqtt {
            broker: broker_config(section, url, &format!("thermo-{device}"))?,
            queue_dir: match &section.queue_dir {
                Some(d) => d.clone(),
                None => base()?.join(&device).join("queue"),
            },
        },
        None => SinkConfig::File(match &section.file {
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
    let allowed = if section.allow.is_empty() {
        CommandName::ALL.to_vec()
    } else {
        section
            .allow
            .iter()
            .map(|n| n.parse::<CommandName>().map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()?
    };
    let interval = section.interval_s;
    if !(crate::telemetry::command::MIN_INTERVAL_S..=crate::telemetry::command::MAX_INTERVAL_S)
        .contains(&interval)
    {
        bail!("--telemetry-interval must be 0.1 to 3600 s");
    }
    let encoding: Encoding = section.encoding.parse()?;
    Ok(Some(
        TelemetryOptions::new(device, sink)
            .with_encoding(encoding)
            .with_interval(Duration::from_secs_f64(interval))
            .with_queue_capacity(section.queue_capacity)
            .with_allowed_commands(allowed)
            .with_discovery(section.discovery),
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
    /// Starts the sink's driver and, with a governor, the per-interval records; `None` when
    /// `[telemetry]` is switched off. A sink that cannot start is reported and the job runs
    /// without it.
    pub fn start(section: &TelemetrySection, probe: Option<Probe>) -> Result<Option<Session>> {
        let Some(opts) = options(section)? else {
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
    /// eco figures; `today`, the day's totals including it; `layers`, its hidden layers.
    pub fn request_done(
        &self,
        stats: &GenerationStats,
        wall: Duration,
        energy_before_j: f64,
        footprint: Option<&Footprint>,
        today: Option<&DayTotals>,
        layers: Option<&Layers>,
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
            layers: layers.map(layer_figures),
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
        layers: DayLayerFigures {
            memory_j: t.memory_j,
            memory_prompt_j: t.memory_prompt_j,
            memory_storage_g_co2e: t.memory_storage_g_co2e,
            upstream_declared_j: t.upstream_declared_j,
            upstream_declared_g_co2e: t.upstream_declared_g_co2e,
            upstream_undeclared_tokens: t.upstream_undeclared_tokens,
            wasted_j: t.wasted_j,
            wasted_g_co2e: t.wasted_g_co2e,
            wasted_answers: t.wasted_answers,
            wasted_training_runs: t.wasted_training_runs,
        },
    }
}

/// The telemetry form of an answer's or a run's hidden layers.
pub fn layer_figures(l: &Layers) -> LayerFigures {
    let m = l.memory.as_ref();
    let index = m.and_then(|m| m.index.as_ref());
    let u = l.upstream.as_ref();
    LayerFigures {
        memory_j: m.map(|m| m.query_embed_j + m.search_j),
        memory_extra_prompt_tokens: m.map(|m| m.extra_prompt_tokens),
        memory_extra_prompt_j: m.map(|m| m.extra_prompt_j),
        index_indexing_j: index.map(|i| i.indexing_j),
        index_disk_bytes: index.map(|i| i.disk_bytes),
        index_resident_bytes: index.map(|i| i.resident_bytes),
        storage_embodied_g_co2e: m
            .filter(|m| m.index.is_some())
            .map(|m| m.storage_embodied_g_co2e),
        upstream_model: u.map(|u| u.model.clone()),
        upstream_declared: u.is_some_and(|u| u.declared),
        upstream_amortise_tokens: u.map(|u| u.amortise_tokens),
        upstream_j: u.and_then(|u| u.energy_j()),
        upstream_g_co2e: u.and_then(|u| u.g_co2e()),
        wasted_j: l.waste.map(|w| w.energy_j),
        waste_kind: l.waste.map(|w| w.kind.as_str().to_string()),
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

    fn section(device: &str) -> TelemetrySection {
        TelemetrySection {
            device_id: Some(device.into()),
            ..TelemetrySection::default()
        }
    }

    #[test]
    fn a_broker_url_selects_the_mqtt_sink_and_no_url_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let o = options(&TelemetrySection {
            mqtt: Some("mqtt://127.0.0.1:1".into()),
            queue_dir: Some(dir.path().join("q")),
            ..section("d1")
        })
        .unwrap()
        .unwrap();
        assert!(format!("{o:?}").contains("Mqtt"));
        let o = options(&TelemetrySection {
            file: Some(dir.path().join("t.jsonl")),
            ..section("d1")
        })
        .unwrap()
        .unwrap();
        assert!(format!("{o:?}").contains("File"));
        let off = TelemetrySection {
            enabled: false,
            ..section("d1")
        };
        assert!(options(&off).unwrap().is_none());
    }

    #[test]
    fn rejects_bad_telemetry_settings() {
        let file = || Some(std::path::PathBuf::from("/tmp/x"));
        for bad in [
            TelemetrySection {
                mqtt: Some("http://x".into()),
                ..section("d")
            },
            TelemetrySection {
                mqtt: Some("mqtt://u:p@x".into()),
                ..section("d")
            },
            TelemetrySection {
                file: file(),
                ..section("a/b")
            },
            TelemetrySection {
                allow: vec!["reboot".into()],
                file: file(),
                ..section("d")
            },
            TelemetrySection {
                interval_s: 0.0,
                file: file(),
                ..section("d")
            },
            TelemetrySection {
                mqtt: Some("mqtt://h".into()),
                ca_file: Some("/tmp/ca.pem".into()),
                ..section("d")
            },
        ] {
            assert!(options(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_password_from_its_file_never_shows_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret-pass\n").unwrap();
        let s = TelemetrySection {
            username: Some("alice".into()),
            password_file: Some(pw),
            ..TelemetrySection::default()
        };
        let cfg = broker_config(&s, "mqtt://h:1883", "c").unwrap();
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
        let text = format!("{cfg:?} {o:?} {s:?}");
        assert!(!text.contains("s3cret-pass"), "{text}");
    }

    #[test]
    fn commands_reach_the_running_governor_and_the_training_switch() {
        use crate::session::governed::{Governed, GovernorOptions};
        let args = GovernorOptions {
            sim: Some("rpi4".into()),
            setpoint_c: Some(65.0),
            ..GovernorOptions::default()
        };
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
