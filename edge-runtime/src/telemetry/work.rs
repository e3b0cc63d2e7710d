//! The fleet's work queue on the broker: MQTT 5 shared subscriptions as the queue,
//! request/response with a response topic and correlation data, answers streamed back as
//! chunks.
//!
//! | topic | direction | payload |
//! | --- | --- | --- |
//! | `thermo/requests/<model>` | front → boards (one of them) | [`WorkRequest`] |
//! | `$share/thermo/requests/<model>` | the filter a board subscribes with while it has headroom | — |
//! | the request's response topic | board → front | [`AnswerChunk`], correlated by the request's correlation data |
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

fn check_model(model: &str) -> Result<(), WorkError> {
    validate_device_id(model).map_err(|_| WorkError::BadModel(model.to_string()))
}

/// One queued chat request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkRequest {
    /// The conversation, as the OpenAI chat API's `messages` (opaque to the queue).
    #[serde(default)]
    pub messages: serde_json::Value,
    /// Tokens to generate at most.
    pub max_tokens: u32,
    /// Whether this is the request's second delivery (its first board went offline).
    #[serde(default)]
    pub requeued: bool,
}

impl WorkRequest {
    /// Parses a payload from the queue: at most [`MAX_REQUEST_BYTES`], JSON, `max_tokens`
    /// within 1..=[`MAX_REQUEST_TOKENS`].
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
        Ok(r)
    }

    /// The payload.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One piece of an answer, sent to the request's response topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    fn correlation_data_round_trips_and_rejects_other_lengths() {
        assert_eq!(correlation_id(&correlation(42)), Some(42));
        assert_eq!(correlation_id(b"abc"), None);
    }
}
