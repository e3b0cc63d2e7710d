//! The OpenAI-compatible wire format: request bodies of `/v1/chat/completions` and
//! `/v1/completions` parsed and checked into a [`GenRequest`], response and stream-chunk
//! bodies built from a finished generation, and the OpenAI-style error object. Pure: no
//! model, no network; every way a body can be wrong maps to a 4xx [`ApiError`].

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::accounting::ResponseFootprint;
use crate::engine::chat::{Message, Role};
use crate::engine::generate::{GenerateOptions, StopReason};
use crate::engine::sampling::SamplingParams;

/// Most stop strings a request may give (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 256;

/// An error the API answers with: HTTP status plus OpenAI's `{"error": {...}}` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status (4xx for the client's mistakes, 5xx for the server's).
    pub status: u16,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, ...
    pub kind: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, `rate_limit_exceeded`, ...).
    pub code: Option<&'static str>,
    /// Seconds the client should wait before retrying (sent as `Retry-After`).
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
            param: param.map(str::to_string),
            code: None,
            retry_after_s: None,
        }
    }

    /// The same error with `code` set.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// 404: the model named is not served here.
    pub fn unknown_model(asked: &str, served: &str) -> Self {
        ApiError {
            status: 404,
            ..ApiError::invalid(
                Some("model"),
                format!("The model `{asked}` does not exist; this server serves `{served}`."),
            )
        }
        .with_code("model_not_found")
    }

    /// 401: missing or wrong bearer token.
    pub fn unauthorized() -> Self {
        ApiError {
            status: 401,
            kind: "authentication_error",
            message: "Missing or invalid bearer token (Authorization: Bearer ...).".into(),
            param: None,
            code: Some("invalid_api_key"),
            retry_after_s: None,
        }
    }

    /// 429: the queue is full; retry after `retry_after_s`.
    pub fn queue_full(retry_after_s: u64) -> Self {
        ApiError {
            status: 429,
            kind: "requests",
            message: format!(
                "The request queue is full; retry after {retry_after_s} s (Retry-After)."
            ),
            param: None,
            code: Some("rate_limit_exceeded"),
            retry_after_s: Some(retry_after_s),
        }
    }

    /// 429: the client resubmitted the same request (or kept earning the same error) in a
    /// loop; `why` says which and how often, and the client may retry after the window.
    pub fn agent_loop(why: &str, retry_after_s: u64) -> Self {
        ApiError {
            status: 429,
            kind: "requests",
            message: format!("Refused as an agent loop: {why}."),
            param: None,
            code: Some("agent_loop_detected"),
            retry_after_s: Some(retry_after_s.max(1)),
        }
    }

    /// 413: the body is larger than the configured limit.
    pub fn too_large(limit_bytes: usize) -> Self {
        ApiError {
            status: 413,
            ..ApiError::invalid(
                None,
                format!("The request body exceeds the limit of {limit_bytes} bytes."),
            )
        }
        .with_code("request_too_large")
    }

    /// 503: the server is shutting down.
    pub fn shutting_down() -> Self {
        ApiError {
            status: 503,
            kind: "server_error",
            message: "The server is shutting down.".into(),
            param: None,
            code: Some("shutting_down"),
            retry_after_s: Some(5),
        }
    }

    /// 503: the governor's control loop has stopped, so nothing is generated ungoverned.
    pub fn governor_stopped() -> Self {
        ApiError {
            status: 503,
            kind: "server_error",
            message: "The thermal governor has stopped; generation is refused.".into(),
            param: None,
            code: Some("governor_stopped"),
            retry_after_s: Some(5),
        }
    }

    /// 500 for a failure inside the engine (never for a client's input).
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: 500,
            kind: "server_error",
            message: message.into(),
            param: None,
            code: None,
            retry_after_s: None,
        }
    }

    /// The `{"error": {...}}` body.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

/// `content` of a chat message: a string, or a list of parts of which only text is served.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct ChatMessageIn {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum StopField {
    One(String),
    Many(Vec<String>),
}

/// `prompt` of a completion: one string or a list holding one.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PromptField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Fields both endpoints share. Numbers are read as f64 so that an error reports the value
/// as given; they are narrowed once checked.
#[derive(Debug, Clone, Default, Deserialize)]
struct Common {
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    /// llama.cpp's extension.
    #[serde(default)]
    top_k: Option<u32>,
    /// llama.cpp's extension.
    #[serde(default)]
    repeat_penalty: Option<f64>,
    #[serde(default)]
    n: Option<i64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    stop: Option<StopField>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    logprobs: Option<Value>,
    /// Retrieval from the document index: `true`, `false`, or `null` for the `[rag]` default.
    #[serde(default)]
    rag: Option<Value>,
    /// OpenAI fields the service does not implement: refused unless they ask for nothing.
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<Value>,
    #[serde(default)]
    functions: Option<Value>,
    #[serde(default)]
    function_call: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    logit_bias: Option<Value>,
    #[serde(default)]
    top_logprobs: Option<Value>,
    #[serde(default)]
    modalities: Option<Value>,
    #[serde(default)]
    audio: Option<Value>,
    #[serde(default)]
    best_of: Option<Value>,
}

impl Common {
    /// The unimplemented OpenAI fields, by name.
    fn unimplemented(&self) -> [(&'static str, &Option<Value>); 11] {
        [
            ("tools", &self.tools),
            ("tool_choice", &self.tool_choice),
            ("parallel_tool_calls", &self.parallel_tool_calls),
            ("functions", &self.functions),
            ("function_call", &self.function_call),
            ("response_format", &self.response_format),
            ("logit_bias", &self.logit_bias),
            ("top_logprobs", &self.top_logprobs),
            ("modalities", &self.modalities),
            ("audio", &self.audio),
            ("best_of", &self.best_of),
        ]
    }
}

/// Whether `value` of the unimplemented field `field` asks for nothing the service skips
/// (absent, null, empty, `{"type": "text"}`, `"none"`, a single text modality, one try).
fn asks_for_nothing(field: &str, value: &Value) -> bool {
    match (field, value) {
        (_, Value::Null) => true,
        ("tools" | "functions", Value::Array(a)) => a.is_empty(),
        ("tool_choice" | "function_call", Value::String(s)) => s == "none",
        ("parallel_tool_calls", Value::Bool(_)) => true,
        ("response_format", Value::Object(o)) => {
            o.len() == 1 && o.get("type").and_then(Value::as_str) == Some("text")
        }
        ("logit_bias", Value::Object(o)) => o.is_empty(),
        ("top_logprobs", v) => v.as_u64() == Some(0),
        ("best_of", v) => v.as_u64() == Some(1),
        ("modalities", Value::Array(a)) => a.iter().all(|m| m.as_str() == Some("text")),
        _ => false,
    }
}

/// Refuses the first unimplemented field that asks for something, naming it.
fn refuse_unimplemented(c: &Common) -> Result<(), ApiError> {
    for (field, value) in c.unimplemented() {
        if let Some(v) = value
            && !asks_for_nothing(field, v)
        {
            return Err(ApiError::invalid(
                Some(field),
                format!("{field} is not supported by this server; remove it from the request"),
            )
            .with_code("unsupported_parameter"));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessageIn>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Debug, Clone, Deserialize)]
struct CompletionRequest {
    model: String,
    prompt: PromptField,
    #[serde(default)]
    echo: Option<bool>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(flatten)]
    common: Common,
}

/// What to feed the model.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptSpec {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<Message>),
    /// Text sent verbatim.
    Raw(String),
}

/// Which endpoint a request came through (it decides the response's shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
}

/// A checked generation request.
#[derive(Debug, Clone)]
pub struct GenRequest {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The model id the client named (already checked against the served one).
    pub model: String,
    /// The prompt.
    pub prompt: PromptSpec,
    /// Length, sampling and stop strings.
    pub options: GenerateOptions,
    /// Server-sent events instead of one JSON body.
    pub stream: bool,
    /// In a stream, send a last chunk with `usage` (OpenAI's `stream_options.include_usage`).
    pub include_usage: bool,
    /// Who asked (`user`), the fair queue's key; `None`: anonymous.
    pub user: Option<String>,
    /// Retrieval asked for (`rag`): `None` leaves it to `[rag] chat_default`.
    pub rag: Option<bool>,
}

/// The limits a request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest `max_tokens`.
    pub max_tokens_limit: usize,
    /// `max_tokens` of a request that names none (chat and completions alike).
    pub default_max_tokens: usize,
    /// Most prompt tokens, after the chat template.
    pub max_prompt_tokens: usize,
}

fn parse_error(e: &serde_json::Error) -> ApiError {
    let what = match e.classify() {
        serde_json::error::Category::Data => "has a field of the wrong type or a missing field",
        serde_json::error::Category::Eof => "is truncated",
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
            "is not valid JSON (UTF-8)"
        }
    };
    ApiError::invalid(None, format!("The request body {what}: {e}")).with_code(if e.is_data() {
        "invalid_type"
    } else {
        "invalid_json"
    })
}

fn common_options(c: &Common, limits: &Limits) -> Result<(GenerateOptions, bool, bool), ApiError> {
    refuse_unimplemented(c)?;
    let max_tokens = max_tokens(c, limits)?;
    let (temperature, top_p, repeat_penalty) = sampling_values(c)?;
    refuse_unsupported(c)?;
    let stop = stop_strings(c)?;
    let seed = match c.seed {
        None => 42,
        Some(s) => s as u64,
    };
    let options = GenerateOptions {
        max_tokens,
        sampling: SamplingParams {
            temperature: temperature as f32,
            top_k: c.top_k.unwrap_or(0) as usize,
            top_p: top_p as f32,
            repeat_penalty: repeat_penalty as f32,
            seed,
            ..SamplingParams::default()
        },
        stop,
    };
    let stream = c.stream.unwrap_or(false);
    let include_usage = c
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    Ok((options, stream, include_usage))
}

/// `max_completion_tokens` (or the older `max_tokens`), within the service's limit.
fn max_tokens(c: &Common, limits: &Limits) -> Result<usize, ApiError> {
    match c.max_completion_tokens.or(c.max_tokens) {
        None => Ok(limits.default_max_tokens.min(limits.max_tokens_limit)),
        Some(n) if n >= 1 && (n as u64) <= limits.max_tokens_limit as u64 => Ok(n as usize),
        Some(n) => {
            let param = if c.max_completion_tokens.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            Err(ApiError::invalid(
                Some(param),
                format!(
                    "{param} must be in 1..={}, got {n}",
                    limits.max_tokens_limit
                ),
            ))
        }
    }
}

/// The temperature, top-p and repeat penalty asked for (or their defaults), each in range.
fn sampling_values(c: &Common) -> Result<(f64, f64, f64), ApiError> {
    let temperature = c.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::invalid(
            Some("temperature"),
            format!("temperature must be in 0..=2, got {temperature:?}"),
        ));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(top_p.is_finite() && top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            Some("top_p"),
            format!("top_p must be in (0, 1], got {top_p:?}"),
        ));
    }
    let repeat_penalty = c.repeat_penalty.unwrap_or(1.0);
    if !(repeat_penalty.is_finite() && repeat_penalty > 0.0 && repeat_penalty <= 10.0) {
        return Err(ApiError::invalid(
            Some("repeat_penalty"),
            format!("repeat_penalty must be in (0, 10], got {repeat_penalty:?}"),
        ));
    }
    Ok((temperature, top_p, repeat_penalty))
}

/// Refuses the parameters this service does not implement beyond their neutral value: `n`
/// other than 1, frequency and presence penalties, logprobs.
fn refuse_unsupported(c: &Common) -> Result<(), ApiError> {
    if let Some(n) = c.n
        && n != 1
    {
        return Err(ApiError::invalid(
            Some("n"),
            format!("only n = 1 is served, got {n}"),
        ));
    }
    for (name, v) in [
        ("frequency_penalty", c.frequency_penalty),
        ("presence_penalty", c.presence_penalty),
    ] {
        if let Some(v) = v
            && v != 0.0
        {
            return Err(ApiError::invalid(
                Some(name),
                format!("{name} is not supported (only 0), got {v:?}; use repeat_penalty"),
            ));
        }
    }
    if c.logprobs
        .as_ref()
        .is_some_and(|v| !v.is_null() && v != &json!(false))
    {
        return Err(ApiError::invalid(
            Some("logprobs"),
            "logprobs are not supported",
        ));
    }
    Ok(())
}

/// The stop strings, at most [`MAX_STOP_STRINGS`] of 1 to [`MAX_STOP_BYTES`] bytes each.
fn stop_strings(c: &Common) -> Result<Vec<String>, ApiError> {
    let stop = match &c.stop {
        None => vec![],
        Some(StopField::One(s)) => vec![s.clone()],
        Some(StopField::Many(v)) => v.clone(),
    };
    if stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid(
            Some("stop"),
            format!(
                "at most {MAX_STOP_STRINGS} stop strings, got {}",
                stop.len()
            ),
        ));
    }
    if let Some(s) = stop
        .iter()
        .find(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
    {
        return Err(ApiError::invalid(
            Some("stop"),
            format!(
                "a stop string must have 1..={MAX_STOP_BYTES} bytes, got {}",
                s.len()
            ),
        ));
    }
    Ok(stop)
}

/// The `rag` field: a boolean or null.
fn rag_field(c: &Common) -> Result<Option<bool>, ApiError> {
    match &c.rag {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ApiError::invalid(
            Some("rag"),
            format!("rag must be true, false or null, got {other}"),
        )),
    }
}

fn check_model(asked: &str, served: &str) -> Result<(), ApiError> {
    if asked == served {
        Ok(())
    } else {
        Err(ApiError::unknown_model(asked, served))
    }
}

fn check_user(user: &Option<String>) -> Result<Option<String>, ApiError> {
    match user {
        Some(u) if u.len() > 256 => Err(ApiError::invalid(
            Some("user"),
            "user must have at most 256 bytes",
        )),
        Some(u) if !u.is_empty() => Ok(Some(u.clone())),
        _ => Ok(None),
    }
}

/// Parses and checks a `/v1/chat/completions` body.
pub fn parse_chat(
    body: &[u8],
    served_model: &str,
    limits: &Limits,
) -> Result<GenRequest, ApiError> {
    let req: ChatRequest = serde_json::from_slice(body).map_err(|e| parse_error(&e))?;
    check_model(&req.model, served_model)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            Some("messages"),
            "messages must hold at least one message",
        ));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(ApiError::invalid(
                    Some(&format!("messages[{i}].role")),
                    format!("role {other:?} is not served (system, developer, user, assistant)"),
                ));
            }
        };
        let text = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        _ => {
                            return Err(ApiError::invalid(
                                Some(&format!("messages[{i}].content[{j}]")),
                                format!(
                                    "only text content parts are served, got type {:?}",
                                    p.kind
                                ),
                            ));
                        }
                    }
                }
                text
            }
        };
        messages.push(Message::new(role, text));
    }
    let (options, stream, include_usage) = common_options(&req.common, limits)?;
    Ok(GenRequest {
        endpoint: Endpoint::Chat,
        model: req.model,
        prompt: PromptSpec::Chat(messages),
        options,
        stream,
        include_usage,
        user: check_user(&req.common.user)?,
        rag: rag_field(&req.common)?,
    })
}

/// Parses and checks a `/v1/completions` body.
pub fn parse_completion(
    body: &[u8],
    served_model: &str,
    limits: &Limits,
) -> Result<GenRequest, ApiError> {
    let req: CompletionRequest = serde_json::from_slice(body).map_err(|e| parse_error(&e))?;
    check_model(&req.model, served_model)?;
    let prompt = match req.prompt {
        PromptField::One(p) => p,
        PromptField::Many(mut v) if v.len() == 1 => v.remove(0),
        PromptField::Many(v) => {
            return Err(ApiError::invalid(
                Some("prompt"),
                format!("exactly one prompt is served per request, got {}", v.len()),
            ));
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::invalid(
            Some("prompt"),
            "prompt must not be empty",
        ));
    }
    if req.echo == Some(true) {
        return Err(ApiError::invalid(Some("echo"), "echo is not supported"));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid(Some("suffix"), "suffix is not supported"));
    }
    // The configured default, not OpenAI's 16: the service documents one default for both.
    let (options, stream, include_usage) = common_options(&req.common, limits)?;
    Ok(GenRequest {
        endpoint: Endpoint::Completions,
        model: req.model,
        prompt: PromptSpec::Raw(prompt),
        options,
        stream,
        include_usage,
        user: check_user(&req.common.user)?,
        rag: match rag_field(&req.common)? {
            Some(true) => {
                return Err(ApiError::invalid(
                    Some("rag"),
                    "retrieval is served on /v1/chat/completions",
                ));
            }
            _ => None,
        },
    })
}

/// OpenAI's `finish_reason` for how a generation ended.
pub fn finish_reason(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::Eos | StopReason::StopString(_) | StopReason::Stopped(_) => "stop",
        StopReason::MaxTokens | StopReason::ContextFull => "length",
    }
}

/// Token counts of one request, OpenAI's `usage` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
}

impl Usage {
    /// Usage from the two counts.
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// Identity of one response: the id, creation time and model every chunk repeats.
#[derive(Debug, Clone)]
pub struct ResponseId {
    /// `chatcmpl-...` or `cmpl-...`.
    pub id: String,
    /// Unix time in seconds.
    pub created: u64,
    /// The model id.
    pub model: String,
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The LoRA adapter the answer runs with (`None`: the base model), as `adapter`.
    pub adapter: Option<String>,
}

impl ResponseId {
    /// An id for request number `serial`.
    pub fn new(endpoint: Endpoint, serial: u64, created: u64, model: &str) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
        };
        ResponseId {
            id: format!("{prefix}-{created:x}{serial:08x}"),
            created,
            model: model.to_string(),
            endpoint,
            adapter: None,
        }
    }

    /// The same identity naming the LoRA adapter the answer runs with.
    pub fn with_adapter(mut self, adapter: Option<&str>) -> Self {
        self.adapter = adapter.map(str::to_string);
        self
    }

    fn tag_adapter(&self, mut v: Value) -> Value {
        if let Some(a) = &self.adapter {
            v["adapter"] = json!(a);
        }
        v
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completions, _) => "text_completion",
        }
    }

    /// The whole (non-streamed) response.
    pub fn response(
        &self,
        text: &str,
        finish: &str,
        usage: Usage,
        footprint: &ResponseFootprint,
    ) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish,
            }),
            Endpoint::Completions => json!({
                "index": 0,
                "text": text,
                "logprobs": null,
                "finish_reason": finish,
            }),
        };
        self.tag_adapter(json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage,
            "footprint": footprint,
        }))
    }

    /// A stream chunk carrying `text` (the first chat chunk also names the role).
    pub fn text_chunk(&self, text: &str, first: bool) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat if first => json!({
                "index": 0, "delta": {"role": "assistant", "content": text},
                "logprobs": null, "finish_reason": null,
            }),
            Endpoint::Chat => json!({
                "index": 0, "delta": {"content": text},
                "logprobs": null, "finish_reason": null,
            }),
            Endpoint::Completions => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": null,
            }),
        };
        self.chunk(vec![choice])
    }

    /// The chunk that ends the choice, carrying the footprint.
    pub fn final_chunk(&self, finish: &str, footprint: &ResponseFootprint) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0, "delta": {}, "logprobs": null, "finish_reason": finish,
            }),
            Endpoint::Completions => json!({
                "index": 0, "text": "", "logprobs": null, "finish_reason": finish,
            }),
        };
        let mut chunk = self.chunk(vec![choice]);
        chunk["footprint"] = json!(footprint);
        chunk
    }

    /// OpenAI's trailing usage chunk (`stream_options.include_usage`): no choices.
    pub fn usage_chunk(&self, usage: Usage, footprint: &ResponseFootprint) -> Value {
        let mut chunk = self.chunk(vec![]);
        chunk["usage"] = json!(usage);
        chunk["footprint"] = json!(footprint);
        chunk
    }

    fn chunk(&self, choices: Vec<Value>) -> Value {
        self.tag_adapter(json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }))
    }
}

/// The `/v1/models` body for the one served model.
pub fn models_list(model: &str, created: u64) -> Value {
    json!({
        "object": "list",
        "data": [{"id": model, "object": "model", "created": created, "owned_by": "thermo"}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_and_chunks_name_the_adapter_only_when_one_is_served() {
        let fp = ResponseFootprint::default();
        let base = ResponseId::new(Endpoint::Chat, 1, 2, "tiny");
        let tagged = base.clone().with_adapter(Some("pump"));
        let usage = Usage::new(1, 1);
        assert!(
            base.response("x", "stop", usage, &fp)
                .get("adapter")
                .is_none()
        );
        assert!(base.text_chunk("x", true).get("adapter").is_none());
        assert_eq!(tagged.response("x", "stop", usage, &fp)["adapter"], "pump");
        assert_eq!(tagged.text_chunk("x", true)["adapter"], "pump");
        assert_eq!(tagged.final_chunk("stop", &fp)["adapter"], "pump");
        assert_eq!(tagged.usage_chunk(usage, &fp)["adapter"], "pump");
        assert_eq!(tagged.response("x", "stop", usage, &fp)["model"], "tiny");
    }

    const LIMITS: Limits = Limits {
        max_tokens_limit: 512,
        default_max_tokens: 100,
        max_prompt_tokens: 2048,
    };

    fn chat(body: &str) -> Result<GenRequest, ApiError> {
        parse_chat(body.as_bytes(), "tiny", &LIMITS)
    }

    #[test]
    fn parses_a_minimal_chat_request_with_openai_defaults() {
        let r =
            chat(r#"{"model":"tiny","messages":[{"role":"user","content":"hi"}]}"#).expect("valid");
        assert_eq!(
            r.prompt,
            PromptSpec::Chat(vec![Message::new(Role::User, "hi")])
        );
        assert_eq!(r.options.max_tokens, 100);
        assert_eq!(r.options.sampling.temperature, 1.0);
        assert!(!r.stream);
    }

    #[test]
    fn text_parts_join_and_developer_means_system() {
        let r = chat(
            r#"{"model":"tiny","messages":[{"role":"developer","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
            "stream":true,"stream_options":{"include_usage":true},"stop":"END","max_tokens":5,
            "temperature":0,"user":"alice","unknown_field":[1,2]}"#,
        )
        .expect("valid");
        assert_eq!(
            r.prompt,
            PromptSpec::Chat(vec![
                Message::new(Role::System, "be brief"),
                Message::new(Role::User, "ab")
            ])
        );
        assert!(r.stream && r.include_usage);
        assert_eq!(r.options.stop, vec!["END".to_string()]);
        assert_eq!(r.options.max_tokens, 5);
        assert_eq!(r.user.as_deref(), Some("alice"));
    }

    #[test]
    fn each_bad_field_is_a_4xx_naming_the_field() {
        let cases: &[(&str, u16, Option<&str>)] = &[
            (r#"{"model":"tiny","messages":[]}"#, 400, Some("messages")),
            (
                r#"{"model":"gpt-4","messages":[{"role":"user","content":"x"}]}"#,
                404,
                Some("model"),
            ),
            (
                r#"{"model":"tiny","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                400,
                Some("max_tokens"),
            ),
            (
                r#"{"model":"tiny","messages":[{"role":"user","content":"x"}],"max_tokens":513}"#,
                400,
                Some("max_tokens"),
            ),
            (
                r#"{"model":"tiny","messages":[{"role":"user","content":"x"}],"max_tokens":-3}"#,
                400,
                Some("max_tokens"),
            ),
            (
                r#"{"model":"tiny","messages":[{"role":"user","content":"x"}],"max_completion_tokens":100000}"#,
                400,
                Some("max_completion_tokens"),
            ),
            (
                r#"{"model":"tiny","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                400,
                Some("temperature"),
            ),
            (
                r#"{"model":"tiny","messages":[{"role":"user","content":"x"}],"top_p":0}"#,
                400,
                Some("top_p"),
            ),
            (
                r#"{"model":"tiny","messages":[{"role":"user","content":"x"}],"n":2}"#,
                400,
                Some("n"),
            ),
            (
                r#"{"model":"tiny","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#,
                400,
                Some("stop"),
            ),
            (
                r#"{"model":"tiny","messages":[{"role":"tool","content":"x"}]}"#,
                400,
                Some("messages[0].role"),
            ),
            (
                r#"{"model":"tiny","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
                400,
                Some("messages[0].content[0]"),
            ),
            (
                r#"{"model":"tiny","messages":[{"role":"user","content":"x"}],"presence_penalty":1}"#,
                400,
                Some("presence_penalty"),
            ),
            (r#"{"model":"tiny","messages":"hello"}"#, 400, None),
            (r#"{"model":7,"messages":[]}"#, 400, None),
            (
                r#"{"model":"tiny","messages":[{"role":"user","content":"x"}],"max_tokens":"ten"}"#,
                400,
                None,
            ),
            (
                r#"{"model":"tiny","messages":[{"role":"user","content":"x"}"#,
                400,
                None,
            ),
            ("", 400, None),
            ("null", 400, None),
        ];
        for (body, status, param) in cases {
            let e = chat(body).expect_err(body);
            assert_eq!(e.status, *status, "{body}: {e:?}");
            assert_eq!(e.param.as_deref(), *param, "{body}: {e:?}");
            assert!(e.body()["error"]["message"].is_string());
        }
    }

    #[test]
    fn an_out_of_range_number_is_reported_as_given_not_as_infinity() {
        for (field, value, shown) in [
            ("presence_penalty", "-1e308", "-1e308"),
            ("frequency_penalty", "1e300", "1e300"),
            ("temperature", "1e39", "1e39"),
            ("top_p", "-1e40", "-1e40"),
            ("repeat_penalty", "1e308", "1e308"),
        ] {
            let body = format!(
                r#"{{"model":"tiny","messages":[{{"role":"user","content":"x"}}],"{field}":{value}}}"#
            );
            let e = chat(&body).expect_err(&body);
            let message = e.body()["error"]["message"].to_string();
            assert!(message.contains(shown), "{field}: {message}");
            assert!(!message.contains("inf"), "{field}: {message}");
        }
    }

    #[test]
    fn invalid_utf8_is_a_400() {
        let mut body = br#"{"model":"tiny","messages":[{"role":"user","content":""#.to_vec();
        body.extend_from_slice(&[0xff, 0xfe]);
        body.extend_from_slice(br#""}]}"#);
        let e = parse_chat(&body, "tiny", &LIMITS).expect_err("invalid utf-8");
        assert_eq!(e.status, 400);
        assert_eq!(e.code, Some("invalid_json"));
    }

    #[test]
    fn completions_without_max_tokens_get_the_configured_default_and_take_one_prompt() {
        let r = parse_completion(br#"{"model":"tiny","prompt":["abc"]}"#, "tiny", &LIMITS)
            .expect("valid");
        assert_eq!(r.prompt, PromptSpec::Raw("abc".into()));
        assert_eq!(r.options.max_tokens, LIMITS.default_max_tokens);
        let e = parse_completion(br#"{"model":"tiny","prompt":["a","b"]}"#, "tiny", &LIMITS)
            .expect_err("two prompts");
        assert_eq!(e.param.as_deref(), Some("prompt"));
        let e = parse_completion(
            br#"{"model":"tiny","prompt":"a","echo":true}"#,
            "tiny",
            &LIMITS,
        )
        .expect_err("echo");
        assert_eq!(e.param.as_deref(), Some("echo"));
    }

    #[test]
    fn unimplemented_openai_fields_are_refused_naming_the_field() {
        const BASE: &str = r#""model":"tiny","messages":[{"role":"user","content":"x"}]"#;
        let refused = [
            ("tools", r#"[{"type":"function","function":{"name":"f"}}]"#),
            ("tool_choice", r#""auto""#),
            (
                "tool_choice",
                r#"{"type":"function","function":{"name":"f"}}"#,
            ),
            ("functions", r#"[{"name":"f"}]"#),
            ("function_call", r#""auto""#),
            ("response_format", r#"{"type":"json_object"}"#),
            (
                "response_format",
                r#"{"type":"json_schema","json_schema":{"name":"x"}}"#,
            ),
            ("logit_bias", r#"{"50256":-100}"#),
            ("top_logprobs", "3"),
            ("modalities", r#"["text","audio"]"#),
            ("audio", r#"{"voice":"alloy"}"#),
            ("n", "2"),
            ("logprobs", "true"),
        ];
        for (field, value) in refused {
            let body = format!("{{{BASE},\"{field}\":{value}}}");
            let e = chat(&body).expect_err(&body);
            assert_eq!(e.status, 400, "{body}: {e:?}");
            assert_eq!(e.param.as_deref(), Some(field), "{body}: {e:?}");
            assert!(e.message.contains(field), "{body}: {e:?}");
        }
        let no_ops = [
            ("response_format", r#"{"type":"text"}"#),
            ("tools", "[]"),
            ("tools", "null"),
            ("tool_choice", r#""none""#),
            ("logit_bias", "{}"),
            ("top_logprobs", "0"),
            ("modalities", r#"["text"]"#),
            ("n", "1"),
            ("logprobs", "false"),
            ("parallel_tool_calls", "true"),
        ];
        for (field, value) in no_ops {
            let body = format!("{{{BASE},\"{field}\":{value}}}");
            chat(&body).unwrap_or_else(|e| panic!("{body}: {e:?}"));
        }
        let e = parse_completion(
            br#"{"model":"tiny","prompt":"a","best_of":3}"#,
            "tiny",
            &LIMITS,
        )
        .expect_err("best_of");
        assert_eq!(e.param.as_deref(), Some("best_of"));
    }

    #[test]
    fn errors_have_the_openai_shape() {
        let b = ApiError::queue_full(3).body();
        assert_eq!(b["error"]["code"], "rate_limit_exceeded");
        assert_eq!(b["error"]["type"], "requests");
        assert!(b["error"]["param"].is_null());
    }

    #[test]
    fn chunks_and_responses_have_the_openai_shape() {
        let id = ResponseId::new(Endpoint::Chat, 1, 1_700_000_000, "tiny");
        let fp = ResponseFootprint::default();
        let first = id.text_chunk("He", true);
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(first["choices"][0]["delta"]["content"], "He");
        let last = id.final_chunk("stop", &fp);
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        let usage = id.usage_chunk(Usage::new(3, 4), &fp);
        assert_eq!(usage["usage"]["total_tokens"], 7);
        assert_eq!(usage["choices"].as_array().map(Vec::len), Some(0));
        let whole = id.response("Hello", "length", Usage::new(3, 2), &fp);
        assert_eq!(whole["choices"][0]["message"]["content"], "Hello");
        assert_eq!(whole["usage"]["completion_tokens"], 2);
        assert!(whole["footprint"].is_object());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|v| json!(v)),
                any::<f64>().prop_map(|v| json!(v)),
                "\\PC{0,12}".prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::vec(
                        (
                            prop_oneof![
                                Just("model".to_string()),
                                Just("messages".to_string()),
                                Just("role".to_string()),
                                Just("content".to_string()),
                                Just("max_tokens".to_string()),
                                Just("stop".to_string()),
                                Just("prompt".to_string()),
                                Just("stream".to_string()),
                                "[a-z_]{1,8}",
                            ],
                            inner
                        ),
                        0..5
                    )
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_give_a_request_or_a_4xx(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                for parsed in [parse_chat(&bytes, "tiny", &LIMITS), parse_completion(&bytes, "tiny", &LIMITS)] {
                    if let Err(e) = parsed {
                        prop_assert!((400..500).contains(&e.status));
                    }
                }
            }

            #[test]
            fn arbitrary_json_gives_a_request_or_a_4xx(v in json_value(), model in prop_oneof![Just("tiny"), Just("x")]) {
                let mut v = v;
                if let Value::Object(map) = &mut v {
                    map.insert("model".into(), json!(model));
                }
                let bytes = serde_json::to_vec(&v).unwrap_or_default();
                for parsed in [parse_chat(&bytes, "tiny", &LIMITS), parse_completion(&bytes, "tiny", &LIMITS)] {
                    match parsed {
                        Ok(r) => {
                            prop_assert!(r.options.max_tokens >= 1 && r.options.max_tokens <= LIMITS.max_tokens_limit);
                            prop_assert!(r.options.sampling.validate().is_ok());
                        }
                        Err(e) => prop_assert!((400..500).contains(&e.status)),
                    }
                }
            }
        }
    }
}
