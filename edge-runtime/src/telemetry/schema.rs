//! The telemetry record schema (versioned) and its two encodings: JSON (default, readable)
//! and postcard (compact, for constrained links). One [`Record`] is one message on the wire
//! and one line of the JSON-lines file. Enums are externally tagged and no field is skipped
//! when empty, so the same types round-trip through both encodings.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Version of the record schema; bumped on any incompatible change. Version 3 added the
/// footprint's hidden layers (memory, declared upstream, waste) to requests, training runs and
/// day totals.
pub const SCHEMA_VERSION: u16 = 3;

/// One telemetry message: an envelope with the device, its sequence number and time, and
/// what happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Schema version ([`SCHEMA_VERSION`] when written by this build).
    pub v: u16,
    /// The device id (the `<device>` of the topic namespace).
    pub device: String,
    /// Per-device sequence number: strictly increasing across restarts, shared by every kind.
    pub seq: u64,
    /// Wall-clock time the record was made, in ms since the Unix epoch.
    pub ts_ms: u64,
    /// Telemetry records dropped so far by this process (disk queue at its bound, or the
    /// hand-off channel full).
    pub dropped_total: u64,
    /// What the record reports.
    pub body: Body,
}

/// The kinds of record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// One control tick (or telemetry interval) of the governor.
    Tick(Tick),
    /// A finished generation request.
    Request(RequestDone),
    /// A finished training run.
    Training(TrainingDone),
    /// Something that happened once; events are never dropped from the disk queue.
    Event(Event),
}

impl Body {
    /// Whether the record is telemetry (droppable at the queue's bound) or an event.
    pub fn kind(&self) -> RecordKind {
        match self {
            Body::Tick(_) | Body::Request(_) | Body::Training(_) => RecordKind::Telemetry,
            Body::Event(_) => RecordKind::Event,
        }
    }
}

/// Telemetry (droppable under pressure, oldest first) or an event (never dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// Periodic or per-request figures.
    Telemetry,
    /// A one-off event.
    Event,
}

/// One temperature sensor or thermal zone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZoneTemp {
    /// The sensor's name (zone type, hwmon label).
    pub name: String,
    /// Temperature in °C; `None` when the sensor gave no value.
    pub celsius: Option<f32>,
    /// Health as the sensor layer judged it (`ok`, `stale`, ...).
    pub health: String,
}

/// Where a power figure comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerSource {
    /// A power sensor measured it.
    Measured,
    /// The platform's power model estimated it from frequency, threads and utilisation.
    Modelled,
}

/// A power figure and its source.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Power {
    /// Power in W.
    pub watts: f32,
    /// Measured or modelled.
    pub source: PowerSource,
}

/// The governor's state at a tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GovernorState {
    /// Operating mode (`unlimited`, `regulating`, `failsafe`).
    pub mode: String,
    /// What is limiting work (`none`, `freq`, `pace_generation`, ...).
    pub limiter: String,
    /// Setpoint in °C in force.
    pub setpoint_c: f32,
    /// The controller's reason, for humans.
    pub reason: String,
    /// Duty per class (interactive, training, batch): 1 unpaced, 0 paused.
    pub duties: [f32; 3],
    /// Whether training is paused by an operator command.
    pub training_paused: bool,
}

/// Energy, emissions, water and wear figures; filled by the eco accounting when present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EcoFigures {
    /// Energy in J.
    pub joules: f64,
    /// Emissions in g CO2e.
    pub g_co2e: f64,
    /// Water in mL.
    pub ml_water: f64,
    /// Nitrogen oxides in mg.
    pub mg_nox: f64,
    /// Sulphur dioxide in mg.
    pub mg_so2: f64,
    /// Fine particulates (PM2.5) in mg.
    pub mg_pm25: f64,
    /// Hardware wear in equivalent hours at the reference temperature.
    pub wear_hours: f64,
}

/// One governor tick or telemetry interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// Time since the runtime started, in ms.
    pub uptime_ms: u64,
    /// The governing temperature in °C, when known.
    pub governing_c: Option<f32>,
    /// Every temperature sensor and zone.
    pub temps: Vec<ZoneTemp>,
    /// Board power, when measured or modelled.
    pub power: Option<Power>,
    /// CPU frequency (cap) in kHz, when known.
    pub freq_khz: Option<u32>,
    /// The governor's state.
    pub governor: GovernorState,
    /// Generated tokens per second, when generation has run.
    pub tokens_per_s: Option<f32>,
    /// Tokens generated since start.
    pub tokens_total: u64,
    /// Training steps done since start.
    pub steps_total: u64,
    /// Energy used since start, in J.
    pub energy_j: f64,
    /// Firmware throttle events seen since start.
    pub throttle_events: u64,
    /// Eco figures, when the accounting runs.
    pub eco: Option<EcoFigures>,
}

/// A finished generation request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestDone {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub generated_tokens: u64,
    /// Prefill speed in tokens/s.
    pub prefill_tps: f32,
    /// Decode speed in tokens/s.
    pub decode_tps: f32,
    /// Why generation stopped.
    pub stop: String,
    /// Wall time of the request in ms.
    pub wall_ms: u64,
    /// Energy the request used, in J, when known.
    pub energy_j: Option<f64>,
    /// Eco figures, when the accounting runs.
    pub eco: Option<EcoFigures>,
    /// The day's totals including this request, when the per-day ledger is kept.
    pub today: Option<DayFigures>,
    /// The request's hidden layers, apart from `eco`, when the accounting runs.
    pub layers: Option<LayerFigures>,
}

/// The hidden layers of one answer or run, kept apart from its measured figures: what
/// retrieval cost (memory), the model's declared training share (upstream: declared by its
/// publisher or the user, never measured; `None` figures are "not declared", not zero) and
/// energy that bought nothing (waste: a part of the measured figures, not added to them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerFigures {
    /// Query embedding plus search, J (outside the answer's measured energy).
    pub memory_j: Option<f64>,
    /// Prompt tokens the retrieved text added.
    pub memory_extra_prompt_tokens: Option<u64>,
    /// Their estimated prefill energy, J (a part of the answer's energy).
    pub memory_extra_prompt_j: Option<f64>,
    /// Joules spent indexing over the searched index's life.
    pub index_indexing_j: Option<f64>,
    /// The index's bytes on disk.
    pub index_disk_bytes: Option<u64>,
    /// The index's bytes resident in memory.
    pub index_resident_bytes: Option<u64>,
    /// Embodied carbon share of the index's flash storage, g CO2e.
    pub storage_embodied_g_co2e: Option<f64>,
    /// The model the upstream figures are for.
    pub upstream_model: Option<String>,
    /// Whether the model's upstream figures are declared.
    pub upstream_declared: bool,
    /// Tokens served the declared totals are spread over.
    pub upstream_amortise_tokens: Option<f64>,
    /// Declared training and teacher energy's share, J.
    pub upstream_j: Option<f64>,
    /// Declared training and teacher emissions' share, g CO2e.
    pub upstream_g_co2e: Option<f64>,
    /// Wasted energy, J.
    pub wasted_j: Option<f64>,
    /// Why it was wasted (`guard_stopped`, `training_failed`, `training_stopped_early`).
    pub waste_kind: Option<String>,
}

/// The hidden layers' totals of one UTC day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DayLayerFigures {
    /// Query embedding and search, J (outside the answers).
    pub memory_j: f64,
    /// Estimated prefill of retrieved prompt tokens, J (inside the answers).
    pub memory_prompt_j: f64,
    /// Embodied carbon share of the indexes' flash storage, g CO2e.
    pub memory_storage_g_co2e: f64,
    /// Declared upstream energy amortised over the day's tokens, J.
    pub upstream_declared_j: f64,
    /// Declared upstream emissions amortised over the day's tokens, g CO2e.
    pub upstream_declared_g_co2e: f64,
    /// Tokens of models that declare nothing.
    pub upstream_undeclared_tokens: u64,
    /// Wasted energy (a part of the day's energy), J.
    pub wasted_j: f64,
    /// Its carbon, g CO2e.
    pub wasted_g_co2e: f64,
    /// Answers the guard stopped as degenerate.
    pub wasted_answers: u64,
    /// Training runs that failed or stopped before saving a step.
    pub wasted_training_runs: u64,
}

/// A finished (or stopped) training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingDone {
    /// `finished`, `stopped` (a signal or a budget; the checkpoint resumes it), `saturated`
    /// (held-out recall saturated before the last step; the adapter is saved) or `failed`.
    pub outcome: String,
    /// Optimizer steps done, counting those before a resume.
    pub steps: u64,
    /// Steps the run was asked for.
    pub steps_planned: u64,
    /// Tokens trained on.
    pub tokens: u64,
    /// Training loss of the last step.
    pub loss: Option<f32>,
    /// Held-out loss at the end (mean NLL per scored token).
    pub eval_loss: Option<f32>,
    /// Trained tokens per second of wall time.
    pub tokens_per_s: f32,
    /// Wall time of this process's part of the run in ms.
    pub wall_ms: u64,
    /// Energy this process's part of the run used, in J, when known.
    pub energy_j: Option<f64>,
    /// Eco figures, when the accounting runs.
    pub eco: Option<EcoFigures>,
    /// The day's totals including this run, when the per-day ledger is kept.
    pub today: Option<DayFigures>,
    /// Energy of the run that bought nothing (a failed run's, or one stopped before it
    /// saved a step), J.
    pub wasted_j: Option<f64>,
}

/// One UTC day's running totals on this device (the per-day eco ledger).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DayFigures {
    /// The day, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Energy, carbon, water, pollutants and wear of the day.
    pub eco: EcoFigures,
    /// Embodied carbon amortised over the day's work, g CO2e.
    pub embodied_g_co2e: f64,
    /// Tokens generated.
    pub tokens: u64,
    /// Answers.
    pub requests: u64,
    /// Training runs.
    pub training_runs: u64,
    /// Optimizer steps of those runs.
    pub training_steps: u64,
    /// The hidden layers' totals, apart from `eco`.
    pub layers: DayLayerFigures,
}

/// A one-off event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened (`started`, `telemetry_dropped`, `command_applied`, ...).
    pub name: String,
    /// Details for humans.
    pub detail: String,
    /// A number that goes with it (the drop count for `telemetry_dropped`).
    pub count: Option<u64>,
}

/// How records are encoded for a sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// One JSON object per record (the default).
    #[default]
    Json,
    /// postcard: compact binary with the same schema.
    Postcard,
}

impl std::str::FromStr for Encoding {
    type Err = SchemaError;
    fn from_str(s: &str) -> Result<Self, SchemaError> {
        match s {
            "json" => Ok(Encoding::Json),
            "postcard" => Ok(Encoding::Postcard),
            other => Err(SchemaError::UnknownEncoding(other.to_string())),
        }
    }
}

/// Why a record could not be encoded or decoded.
#[derive(Debug, Error)]
pub enum SchemaError {
    /// JSON encoding or decoding failed.
    #[error("json: {0}")]
    Json(serde_json::Error),
    /// postcard encoding or decoding failed.
    #[error("postcard: {0}")]
    Postcard(postcard::Error),
    /// The record was written by an incompatible schema version.
    #[error("schema version {found}, this build reads {SCHEMA_VERSION}")]
    Version {
        /// The version found in the record.
        found: u16,
    },
    /// An encoding name that is neither `json` nor `postcard`.
    #[error("unknown encoding {0:?} (json, postcard)")]
    UnknownEncoding(String),
}

impl From<postcard::Error> for SchemaError {
    fn from(e: postcard::Error) -> Self {
        SchemaError::Postcard(e)
    }
}

impl From<serde_json::Error> for SchemaError {
    fn from(e: serde_json::Error) -> Self {
        SchemaError::Json(e)
    }
}

impl Record {
    /// A record of the current schema version.
    pub fn new(device: &str, seq: u64, ts_ms: u64, body: Body) -> Self {
        Self {
            v: SCHEMA_VERSION,
            device: device.to_string(),
            seq,
            ts_ms,
            dropped_total: 0,
            body,
        }
    }

    /// Encodes the record.
    pub fn encode(&self, encoding: Encoding) -> Result<Vec<u8>, SchemaError> {
        Ok(match encoding {
            Encoding::Json => serde_json::to_vec(self)?,
            Encoding::Postcard => postcard::to_stdvec(self)?,
        })
    }

    /// Decodes a record and checks its schema version.
    pub fn decode(bytes: &[u8], encoding: Encoding) -> Result<Self, SchemaError> {
        let r: Record = match encoding {
            Encoding::Json => serde_json::from_slice(bytes)?,
            Encoding::Postcard => postcard::from_bytes(bytes)?,
        };
        if r.v != SCHEMA_VERSION {
            return Err(SchemaError::Version { found: r.v });
        }
        Ok(r)
    }
}

/// Milliseconds since the Unix epoch now (0 if the clock is before it).
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sample_tick() -> Body {
        Body::Tick(Tick {
            uptime_ms: 1500,
            governing_c: Some(61.5),
            temps: vec![
                ZoneTemp {
                    name: "cpu-thermal".into(),
                    celsius: Some(61.5),
                    health: "ok".into(),
                },
                ZoneTemp {
                    name: "board".into(),
                    celsius: None,
                    health: "missing".into(),
                },
            ],
            power: Some(Power {
                watts: 5.25,
                source: PowerSource::Modelled,
            }),
            freq_khz: Some(1_500_000),
            governor: GovernorState {
                mode: "regulating".into(),
                limiter: "pace_generation".into(),
                setpoint_c: 70.0,
                reason: "holding".into(),
                duties: [0.8, 0.0, 1.0],
                training_paused: true,
            },
            tokens_per_s: Some(12.5),
            tokens_total: 640,
            steps_total: 3,
            energy_j: 12.75,
            throttle_events: 1,
            eco: Some(EcoFigures {
                joules: 12.75,
                g_co2e: 0.001,
                ..EcoFigures::default()
            }),
        })
    }

    fn samples() -> Vec<Record> {
        vec![
            Record::new("pi-1", 7, 1_700_000_000_000, sample_tick()),
            Record::new(
                "pi-1",
                8,
                1_700_000_000_500,
                Body::Request(RequestDone {
                    prompt_tokens: 12,
                    generated_tokens: 64,
                    prefill_tps: 90.0,
                    decode_tps: 14.5,
                    stop: "max_tokens".into(),
                    wall_ms: 4100,
                    energy_j: None,
                    eco: None,
                    today: Some(DayFigures {
                        date: "2023-11-14".into(),
                        eco: EcoFigures {
                            joules: 300.0,
                            ..EcoFigures::default()
                        },
                        tokens: 640,
                        requests: 10,
                        layers: DayLayerFigures {
                            wasted_j: 12.5,
                            wasted_answers: 1,
                            ..DayLayerFigures::default()
                        },
                        ..DayFigures::default()
                    }),
                    layers: Some(LayerFigures {
                        memory_j: Some(0.75),
                        index_disk_bytes: Some(4096),
                        upstream_model: Some("SmolLM2".into()),
                        waste_kind: Some("guard_stopped".into()),
                        ..LayerFigures::default()
                    }),
                }),
            ),
            Record::new(
                "pi-1",
                9,
                1_700_000_000_600,
                Body::Training(TrainingDone {
                    outcome: "finished".into(),
                    steps: 10,
                    steps_planned: 10,
                    tokens: 1280,
                    loss: Some(1.5),
                    eval_loss: Some(1.25),
                    tokens_per_s: 142.2,
                    wall_ms: 9000,
                    energy_j: Some(40.0),
                    eco: None,
                    today: None,
                    wasted_j: Some(40.0),
                }),
            ),
            Record::new(
                "pi-1",
                10,
                1_700_000_000_700,
                Body::Event(Event {
                    name: "telemetry_dropped".into(),
                    detail: "disk queue full".into(),
                    count: Some(3),
                }),
            ),
        ]
    }

    #[test]
    fn every_record_kind_round_trips_through_json_and_postcard() {
        for r in samples() {
            for enc in [Encoding::Json, Encoding::Postcard] {
                let bytes = r.encode(enc).unwrap();
                assert_eq!(Record::decode(&bytes, enc).unwrap(), r, "{enc:?}");
            }
        }
    }

    #[test]
    fn postcard_is_smaller_than_json() {
        let r = &samples()[0];
        let json = r.encode(Encoding::Json).unwrap();
        let pc = r.encode(Encoding::Postcard).unwrap();
        assert!(pc.len() * 2 < json.len(), "{} vs {}", pc.len(), json.len());
    }

    #[test]
    fn json_names_fields_for_humans() {
        let json = String::from_utf8(samples()[0].encode(Encoding::Json).unwrap()).unwrap();
        for needle in [
            "\"v\":3",
            "\"device\":\"pi-1\"",
            "\"tick\":",
            "\"source\":\"modelled\"",
            "\"setpoint_c\":70.0",
            "\"eco\":{\"joules\":12.75",
        ] {
            assert!(json.contains(needle), "{needle} not in {json}");
        }
    }

    #[test]
    fn rejects_a_record_of_another_schema_version() {
        let mut r = samples()[1].clone();
        r.v = SCHEMA_VERSION + 1;
        for enc in [Encoding::Json, Encoding::Postcard] {
            let bytes = r.encode(enc).unwrap();
            assert!(matches!(
                Record::decode(&bytes, enc),
                Err(SchemaError::Version { .. })
            ));
        }
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(Record::decode(b"{\"v\":1", Encoding::Json).is_err());
        assert!(Record::decode(&[0xff, 0xff, 0xff], Encoding::Postcard).is_err());
        assert!("cbor".parse::<Encoding>().is_err());
    }
}
