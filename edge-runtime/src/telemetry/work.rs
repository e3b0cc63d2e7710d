//! The fleet's work queue on the broker: MQTT 5 shared subscriptions as the queue,
//! request/response with a response topic and correlation data, answers streamed back as
//! chunks.
//!
//! | topic | direction | payload |
//! | --- | --- | --- |
//! | `thermo/requests/<model>` | front → boards (one of them) | [`WorkRequest`] |
//! | `$share/thermo/requests/<model>` | the filter a board subscribes with while it has headroom | — |
//! | the request's response topic | board → front | [`AnswerChunk`], correlated by the request's correlation data |
//! | `thermo/fleet/boards/<board>` | board → fronts, retained | [`Presence`]; the board's Last Will says it went offline |
//! | `thermo/fleet/boards/<board>/cancel` | front → board | the request's response topic, with its correlation data: its client is gone, stop generating |
//!
//! A board answers a request it has queued with chunk 0, empty: the acceptance, which tells
//! the front which board has the request. Chunks 1 on carry the text; the last one has
//! `done`, the finish reason, the prompt's token count and the footprint.
//!
//! Payloads are JSON, parsed from at most [`MAX_REQUEST_BYTES`] / [`MAX_CHUNK_BYTES`]; a
//! payload that is too large or malformed is an error value, never a panic. Topic levels are
//! checked like device ids (no wildcards, no `/`), so a model name cannot reach another
//! topic.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::topics::validate_device_id;

/// Shared-subscription group every board joins.
pub const SHARE_GROUP: &str = "thermo";
/// Largest request payload a board parses, bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest answer chunk a front parses, bytes.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;
/// Largest correlation data accepted, bytes.
pub const MAX_CORRELATION_BYTES: usize = 64;
/// Largest presence payload a front parses, bytes.
pub const MAX_PRESENCE_BYTES: usize = 4096;
/// The filter a front follows every board's presence with.
pub const PRESENCE_FILTER: &str = "thermo/fleet/boards/+";
/// The OpenAI request fields a queued request carries to the board besides the prompt and
/// length; the board checks them as it checks an HTTP request's.
pub const SAMPLING_FIELDS: [&str; 9] = [
    "temperature",
    "top_p",
    "top_k",
    "repeat_penalty",
    "seed",
    "stop",
    "user",
    "frequency_penalty",
    "presence_penalty",
];

/// Why a work-queue payload or name was refused.
#[derive(Debug, Error, PartialEq)]
pub enum WorkError {
    /// The model name cannot be a topic level.
    #[error("model name {0:?} is not a valid topic level")]
    BadModel(String),
    /// The payload is larger than its cap.
    #[error("payload of {len} bytes is larger than {max}")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The payload is not the expected JSON.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The request asks for nothing or for more than a board would generate.
    #[error("max_tokens must be 1 to {max}, got {got}")]
    BadTokens {
        /// Requested tokens.
        got: u32,
        /// The limit.
        max: u32,
    },
}

/// Largest `max_tokens` a queued request may ask for.
pub const MAX_REQUEST_TOKENS: u32 = 8192;

/// The topic a front publishes requests for `model` to.
pub fn request_topic(model: &str) -> Result<String, WorkError> {
    check_model(model)?;
    Ok(format!("thermo/requests/{model}"))
}

/// The shared-subscription filter a board takes `model`'s requests with.
pub fn request_filter(model: &str) -> Result<String, WorkError> {
    check_model(model)?;
    Ok(format!("$share/{SHARE_GROUP}/thermo/requests/{model}"))
}

/// The retained topic of `board`'s presence.
pub fn presence_topic(board: &str) -> Result<String, WorkError> {
    validate_device_id(board).map_err(|_| WorkError::BadModel(board.to_string()))?;
    Ok(format!("thermo/fleet/boards/{board}"))
}

/// The topic a front cancels `board`'s answers on.
pub fn cancel_topic(board: &str) -> Result<String, WorkError> {
    Ok(format!("{}/cancel", presence_topic(board)?))
}

fn check_model(model: &str) -> Result<(), WorkError> {
    validate_device_id(model).map_err(|_| WorkError::BadModel(model.to_string()))
}

/// One queued chat request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkRequest {
    /// The conversation, as the OpenAI chat API's `messages` (opaque to the queue).
    #[serde(default)]
    pub messages: serde_json::Value,
    /// A completion's prompt (`/v1/completions`), instead of `messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Tokens to generate at most.
    pub max_tokens: u32,
    /// The request's [`SAMPLING_FIELDS`] as the client sent them.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub sampling: serde_json::Map<String, serde_json::Value>,
    /// Whether this is the request's second delivery (its first board went offline).
    #[serde(default)]
    pub requeued: bool,
}

impl WorkRequest {
    /// Parses a payload from the queue: at most [`MAX_REQUEST_BYTES`], JSON, `max_tokens`
    /// within 1..=[`MAX_REQUEST_TOKENS`], no sampling field outside [`SAMPLING_FIELDS`].
    pub fn parse(payload: &[u8]) -> Result<Self, WorkError> {
        check_len(payload, MAX_REQUEST_BYTES)?;
        let r: WorkRequest =
            serde_json::from_slice(payload).map_err(|e| WorkError::Malformed(e.to_string()))?;
        if r.max_tokens == 0 || r.max_tokens > MAX_REQUEST_TOKENS {
            return Err(WorkError::BadTokens {
                got: r.max_tokens,
                max: MAX_REQUEST_TOKENS,
            });
        }
        if let Some(k) = r
            .sampling
            .keys()
            .find(|k| !SAMPLING_FIELDS.contains(&k.as_str()))
        {
            return Err(WorkError::Malformed(format!(
                "sampling field {k:?} is not one a queued request carries"
            )));
        }
        Ok(r)
    }

    /// The OpenAI request body this stands for, naming `model`: what a board checks and runs.
    pub fn openai_body(&self, model: &str) -> serde_json::Value {
        let mut body = self.sampling.clone();
        body.insert("model".into(), model.into());
        body.insert("max_tokens".into(), self.max_tokens.into());
        match &self.prompt {
            Some(p) => body.insert("prompt".into(), p.as_str().into()),
            None => body.insert("messages".into(), self.messages.clone()),
        };
        serde_json::Value::Object(body)
    }

    /// The payload.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One piece of an answer, sent to the request's response topic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerChunk {
    /// The board that generates the answer.
    pub board: String,
    /// Chunk number from 0, so a front can drop a repeated chunk.
    pub seq: u32,
    /// Text of this chunk.
    #[serde(default)]
    pub text: String,
    /// Tokens generated so far.
    pub tokens: u32,
    /// Whether this is the last chunk.
    pub done: bool,
    /// Why the request could not be answered (a malformed request, no model); the last chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// OpenAI's `finish_reason`, on the last chunk of an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Tokens of the prompt, on the last chunk of an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    /// The answer's footprint (joules, g CO2e, ...), on the last chunk of an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footprint: Option<serde_json::Value>,
}

impl AnswerChunk {
    /// Parses a chunk of at most [`MAX_CHUNK_BYTES`].
    pub fn parse(payload: &[u8]) -> Result<Self, WorkError> {
        check_len(payload, MAX_CHUNK_BYTES)?;
        serde_json::from_slice(payload).map_err(|e| WorkError::Malformed(e.to_string()))
    }

    /// The payload.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What a board tells the fleet about itself, retained on [`presence_topic`]: whether it is
/// online and takes work, and its governor's view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// The board (a device id).
    pub board: String,
    /// The model it serves.
    pub model: String,
    /// `false` in the Last Will and on a clean stop.
    pub online: bool,
    /// Whether it is subscribed to the work queue.
    #[serde(default)]
    pub taking: bool,
    /// Seconds flat out before the governor's estimate reaches its target.
    #[serde(default)]
    pub headroom_s: Option<f64>,
    /// SoC temperature, °C.
    #[serde(default)]
    pub temperature_c: Option<f64>,
    /// The governor's setpoint, °C.
    #[serde(default)]
    pub setpoint_c: Option<f64>,
    /// Requests generating.
    #[serde(default)]
    pub running: u32,
    /// Requests waiting for a worker.
    #[serde(default)]
    pub waiting: u32,
}

impl Presence {
    /// What the Last Will and a clean stop say.
    pub fn offline(board: &str, model: &str) -> Self {
        Presence {
            board: board.to_string(),
            model: model.to_string(),
            online: false,
            taking: false,
            headroom_s: None,
            temperature_c: None,
            setpoint_c: None,
            running: 0,
            waiting: 0,
        }
    }

    /// Parses a presence of at most [`MAX_PRESENCE_BYTES`] whose board and model are topic
    /// levels.
    pub fn parse(payload: &[u8]) -> Result<Self, WorkError> {
        check_len(payload, MAX_PRESENCE_BYTES)?;
        let p: Presence =
            serde_json::from_slice(payload).map_err(|e| WorkError::Malformed(e.to_string()))?;
        check_model(&p.model)?;
        presence_topic(&p.board)?;
        Ok(p)
    }

    /// The payload.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Correlation data from a request id (8 bytes, big-endian).
pub fn correlation(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// The request id in correlation data made by [`correlation`]; `None` for anything else.
pub fn correlation_id(data: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(data).ok().map(u64::from_be_bytes)
}

fn check_len(payload: &[u8], max: usize) -> Result<(), WorkError> {
    if payload.len() > max {
        return Err(WorkError::TooLarge {
            len: payload.len(),
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_oversized_and_empty_requests_are_errors_not_panics() {
        let cases: [&[u8]; 5] = [
            b"",
            b"{not json",
            br#"{"max_tokens":0}"#,
            br#"{"max_tokens":99999999}"#,
            br#"{"messages":[]}"#,
        ];
        for c in cases {
            assert!(
                WorkRequest::parse(c).is_err(),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert!(matches!(
            WorkRequest::parse(&big),
            Err(WorkError::TooLarge { .. })
        ));
        let ok =
            WorkRequest::parse(br#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":16}"#);
        assert_eq!(ok.map(|r| r.max_tokens), Ok(16));
    }

    #[test]
    fn model_names_cannot_escape_their_topic_level() {
        assert_eq!(
            request_filter("llama3.2-1b").as_deref(),
            Ok("$share/thermo/thermo/requests/llama3.2-1b")
        );
        for bad in ["a/b", "#", "+", ""] {
            assert!(request_topic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sampling_fields_are_forwarded_and_others_refused() {
        let r = WorkRequest::parse(
            br#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":8,"sampling":{"seed":3,"temperature":0}}"#,
        );
        let body = r.map(|r| r.openai_body("tiny")).unwrap_or_default();
        assert_eq!(body["seed"], 3);
        assert_eq!(body["model"], "tiny");
        assert!(body.get("prompt").is_none() && body["messages"].is_array());
        let bad = WorkRequest::parse(br#"{"max_tokens":8,"sampling":{"tools":[1]}}"#);
        assert!(matches!(bad, Err(WorkError::Malformed(m)) if m.contains("tools")));
        let completion = WorkRequest::parse(br#"{"prompt":"Once","max_tokens":4}"#);
        let body = completion.map(|r| r.openai_body("tiny"));
        assert!(body.is_ok_and(|b| b["prompt"] == "Once" && b.get("messages").is_none()));
    }

    #[test]
    fn presence_round_trips_and_refuses_bad_names_and_sizes() {
        let p = Presence {
            taking: true,
            headroom_s: Some(12.5),
            ..Presence::offline("pi-1", "tiny")
        };
        assert_eq!(Presence::parse(&p.to_payload()), Ok(p));
        let bad = br#"{"board":"a/b","model":"tiny","online":true}"#;
        assert!(Presence::parse(bad).is_err());
        let bad = br##"{"board":"pi","model":"#","online":true}"##;
        assert!(Presence::parse(bad).is_err());
        assert!(Presence::parse(&vec![b' '; MAX_PRESENCE_BYTES + 1]).is_err());
        assert_eq!(
            presence_topic("pi-1").as_deref(),
            Ok("thermo/fleet/boards/pi-1")
        );
    }

    #[test]
    fn correlation_data_round_trips_and_rejects_other_lengths() {
        assert_eq!(correlation_id(&correlation(42)), Some(42));
        assert_eq!(correlation_id(b"abc"), None);
    }
}
