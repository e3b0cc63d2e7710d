//! Commands from the fleet on `thermo/<device>/cmd/<name>` and their replies on
//! `.../cmd/<name>/reply`. Every payload is parsed and validated completely before anything
//! is applied: an unknown or disallowed command, malformed JSON, a wrong type, an unknown
//! field or an out-of-range value gets an error reply that says why and changes nothing.
//!
//! | command | payload | effect |
//! | --- | --- | --- |
//! | `setpoint` | `{"celsius": 65.0}` | new setpoint, between the ambient and the hard ceiling |
//! | `pause_training` | `{}` | training takes no more steps until resumed |
//! | `resume_training` | `{}` | training runs again (still under the governor) |
//! | `interval` | `{"seconds": 0.5}` | telemetry interval, 0.1 s to 3600 s |
//! | `status` | `{}` | replies with a status snapshot |
//!
//! Every payload may carry `"id"` (a string up to 64 characters), echoed in the reply. An
//! empty payload reads as `{}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Shortest telemetry interval a command may set, in seconds.
pub const MIN_INTERVAL_S: f64 = 0.1;
/// Longest telemetry interval a command may set, in seconds.
pub const MAX_INTERVAL_S: f64 = 3600.0;

/// The command names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandName {
    /// `setpoint`.
    Setpoint,
    /// `pause_training`.
    PauseTraining,
    /// `resume_training`.
    ResumeTraining,
    /// `interval`.
    Interval,
    /// `status`.
    Status,
}

/// Command names under `thermo/<device>/cmd/` that another process on the device takes
/// (`grid`: `thermo agent`'s grid intensity): the runtime leaves them alone, with no reply.
pub const OTHER_PROCESS_COMMANDS: [&str; 1] = ["grid"];

impl CommandName {
    /// Every command.
    pub const ALL: [CommandName; 5] = [
        CommandName::Setpoint,
        CommandName::PauseTraining,
        CommandName::ResumeTraining,
        CommandName::Interval,
        CommandName::Status,
    ];

    /// The topic level of the command.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Setpoint => "setpoint",
            CommandName::PauseTraining => "pause_training",
            CommandName::ResumeTraining => "resume_training",
            CommandName::Interval => "interval",
            CommandName::Status => "status",
        }
    }
}

impl std::str::FromStr for CommandName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        CommandName::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown command {s:?} (known: {})",
                    CommandName::ALL.map(|c| c.as_str()).join(", ")
                )
            })
    }
}

/// A validated command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Set the setpoint to this many °C.
    Setpoint(f32),
    /// Pause training.
    PauseTraining,
    /// Resume training.
    ResumeTraining,
    /// Set the telemetry interval to this many seconds.
    Interval(f64),
    /// Reply with a status snapshot.
    Status,
}

/// A status snapshot, as the runtime sees itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// Governing temperature in °C, when known.
    pub temperature_c: Option<f32>,
    /// Setpoint in °C in force.
    pub setpoint_c: f32,
    /// Hard ceiling in °C: no setpoint above it is accepted.
    pub ceiling_c: f32,
    /// Ambient temperature in °C, when known: no setpoint below it is accepted.
    pub ambient_c: Option<f32>,
    /// What is limiting work.
    pub limiter: String,
    /// Generated tokens per second, when known.
    pub tokens_per_s: Option<f32>,
    /// Whether training is paused by command.
    pub training_paused: bool,
    /// Telemetry interval in seconds.
    pub interval_s: f64,
    /// The status line, for humans.
    pub line: String,
}

/// What commands act on. The runtime implements it over the governor's handle; each method
/// either applies the change completely or returns why not and changes nothing.
pub trait CommandTarget: Send + Sync {
    /// Sets the setpoint in °C (already checked against the ceiling and the ambient).
    fn set_setpoint_c(&self, celsius: f32) -> Result<(), String>;
    /// Pauses training.
    fn pause_training(&self) -> Result<(), String>;
    /// Resumes training.
    fn resume_training(&self) -> Result<(), String>;
    /// The current status (also the source of the setpoint bounds).
    fn snapshot(&self) -> StatusSnapshot;
}

/// The reply to one command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The command name as received.
    pub command: String,
    /// The request's `id`, when it had a valid one.
    pub id: Option<String>,
    /// Whether the command was applied.
    pub ok: bool,
    /// Why not, when it was not.
    pub error: Option<String>,
    /// The status after the command (for `status`, and after every applied change).
    pub status: Option<StatusSnapshot>,
}

impl Reply {
    /// An error reply.
    pub fn error(command: &str, id: Option<String>, why: impl Into<String>) -> Self {
        Self {
            command: command.to_string(),
            id,
            ok: false,
            error: Some(why.into()),
            status: None,
        }
    }
}

/// Largest command payload acted on (bytes); a larger one is refused unread and counted.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// Parses and validates a command against the allow-list and the target's current bounds
/// (`snapshot`). Returns the command and the request id, or the error reply.
pub fn parse(
    name: &str,
    payload: &[u8],
    allowed: &[CommandName],
    snapshot: &StatusSnapshot,
) -> Result<(Command, Option<String>), Box<Reply>> {
    let fail = |id: Option<String>, why: String| Box::new(Reply::error(name, id, why));
    let text =
        std::str::from_utf8(payload).map_err(|_| fail(None, "payload is not UTF-8".into()))?;
    let value: Value = if text.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str(text).map_err(|e| fail(None, format!("malformed JSON: {e}")))?
    };
    let Value::Object(mut map) = value else {
        return Err(fail(None, "the payload must be a JSON object".into()));
    };
    let id = match map.remove("id") {
        None => None,
        Some(Value::String(s)) if s.len() <= 64 => Some(s),
        Some(_) => {
            return Err(fail(
                None,
                "\"id\" must be a string of at most 64 characters".into(),
            ));
        }
    };
    let cmd: CommandName = name.parse().map_err(|e: String| fail(id.clone(), e))?;
    if !allowed.contains(&cmd) {
        return Err(fail(
            id,
            format!("command {name:?} is not allowed on this device"),
        ));
    }
    let mut take_number = |field: &str| -> Result<f64, String> {
        match map.remove(field) {
            None => Err(format!("missing field {field:?}")),
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{field:?} must be a finite number")),
            Some(other) => Err(format!(
                "{field:?} must be a number, not {}",
                json_type(&other)
            )),
        }
    };
    let parsed = match cmd {
        CommandName::Setpoint => {
            let c = take_number("celsius").map_err(|e| fail(id.clone(), e))?;
            if c > f64::from(snapshot.ceiling_c) {
                return Err(fail(
                    id,
                    format!(
                        "setpoint {c} °C is above the hard ceiling {} °C",
                        snapshot.ceiling_c
                    ),
                ));
            }
            if let Some(amb) = snapshot.ambient_c
                && c < f64::from(amb)
            {
                return Err(fail(
                    id,
                    format!("setpoint {c} °C is below the ambient {amb} °C"),
                ));
            }
            Command::Setpoint(c as f32)
        }
        CommandName::Interval => {
            let s = take_number("seconds").map_err(|e| fail(id.clone(), e))?;
            if !(MIN_INTERVAL_S..=MAX_INTERVAL_S).contains(&s) {
                return Err(fail(
                    id,
                    format!("interval {s} s is outside {MIN_INTERVAL_S} to {MAX_INTERVAL_S} s"),
                ));
            }
            Command::Interval(s)
        }
        CommandName::PauseTraining => Command::PauseTraining,
        CommandName::ResumeTraining => Command::ResumeTraining,
        CommandName::Status => Command::Status,
    };
    if let Some(extra) = map.keys().next() {
        return Err(fail(id, format!("unknown field {extra:?}")));
    }
    Ok((parsed, id))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn snap() -> StatusSnapshot {
        StatusSnapshot {
            setpoint_c: 70.0,
            ceiling_c: 85.0,
            ambient_c: Some(25.0),
            interval_s: 0.5,
            ..StatusSnapshot::default()
        }
    }

    fn ok(name: &str, payload: &str) -> (Command, Option<String>) {
        parse(name, payload.as_bytes(), &CommandName::ALL, &snap()).unwrap()
    }

    fn err(name: &str, payload: &str) -> String {
        parse(name, payload.as_bytes(), &CommandName::ALL, &snap())
            .unwrap_err()
            .error
            .unwrap()
    }

    #[test]
    fn accepts_each_well_formed_command() {
        assert_eq!(
            ok("setpoint", r#"{"celsius": 65, "id": "r1"}"#),
            (Command::Setpoint(65.0), Some("r1".into()))
        );
        assert_eq!(ok("pause_training", "").0, Command::PauseTraining);
        assert_eq!(ok("resume_training", "{}").0, Command::ResumeTraining);
        assert_eq!(
            ok("interval", r#"{"seconds": 0.25}"#).0,
            Command::Interval(0.25)
        );
        assert_eq!(ok("status", "{}").0, Command::Status);
    }

    #[test]
    fn rejects_each_bad_payload_with_a_reason() {
        let cases = [
            ("reboot", "{}", "unknown command"),
            ("setpoint", "{celsius: 60", "malformed JSON"),
            ("setpoint", "[60]", "must be a JSON object"),
            (
                "setpoint",
                r#"{"celsius": "60"}"#,
                "must be a number, not a string",
            ),
            (
                "setpoint",
                r#"{"celsius": true}"#,
                "must be a number, not a boolean",
            ),
            ("setpoint", "{}", "missing field \"celsius\""),
            ("setpoint", r#"{"celsius": 90}"#, "above the hard ceiling"),
            ("setpoint", r#"{"celsius": 20}"#, "below the ambient"),
            (
                "setpoint",
                r#"{"celsius": 60, "force": 1}"#,
                "unknown field",
            ),
            ("interval", r#"{"seconds": 0.01}"#, "outside"),
            ("interval", r#"{"seconds": 1e9}"#, "outside"),
            ("status", r#"{"id": 5}"#, "\"id\" must be a string"),
        ];
        for (name, payload, want) in cases {
            let why = err(name, payload);
            assert!(why.contains(want), "{name} {payload}: {why}");
        }
    }

    #[test]
    fn a_command_missing_from_the_allow_list_is_refused() {
        let r = parse(
            "setpoint",
            br#"{"celsius": 60, "id": "x"}"#,
            &[CommandName::Status],
            &snap(),
        )
        .unwrap_err();
        assert!(!r.ok);
        assert_eq!(r.id.as_deref(), Some("x"));
        assert!(r.error.unwrap().contains("not allowed"));
    }

    #[test]
    fn without_a_known_ambient_only_the_ceiling_bounds_the_setpoint() {
        let mut s = snap();
        s.ambient_c = None;
        assert!(parse("setpoint", br#"{"celsius": 20}"#, &CommandName::ALL, &s).is_ok());
    }
}
