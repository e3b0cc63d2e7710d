//! The document index and the sentence encoder in the service: retrieval for chat requests
//! (`[rag]`, or `"rag"` in the request) and `POST /v1/embeddings`. The encoder and the index
//! are opened on the first request that needs them, so a service without an index starts as
//! before; an index that `thermo index watch` changes is read again on the next request.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::ApiError;
use crate::config::RagSection;
use crate::eco::IndexFootprint;
use crate::eco::energy::MeterHandle;
use crate::engine::tokenizer::TextTokenizer;
use crate::index::{Hit, Mode, NamedEncoder, RetrievalOptions, Retriever};
use crate::session::rag::{
    Augmented, augment_embedded, encoder_name, index_footprint, index_path, load_encoder,
};

/// Most texts one `/v1/embeddings` request may send.
pub const MAX_EMBED_INPUTS: usize = 2048;

/// The index and encoder of the service, opened when first needed.
pub struct Knowledge {
    config: RagSection,
    meter: MeterHandle,
    encoder: Mutex<Option<Arc<NamedEncoder>>>,
    retriever: Mutex<Option<Retriever>>,
    /// One embedding batch at a time, so requests do not oversubscribe the cores the
    /// generations use.
    embedding: Mutex<()>,
}

impl std::fmt::Debug for Knowledge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knowledge")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError {
        status: 503,
        ..ApiError::internal(format!("{what} is not available: {e}"))
    }
    .with_code("rag_unavailable")
}

impl Knowledge {
    /// Retrieval and embeddings as `config` says, their joules read off `meter`.
    pub fn new(config: RagSection, meter: MeterHandle) -> Self {
        Knowledge {
            config,
            meter,
            encoder: Mutex::new(None),
            retriever: Mutex::new(None),
            embedding: Mutex::new(()),
        }
    }

    /// Whether chat requests retrieve unless they say otherwise.
    pub fn chat_default(&self) -> bool {
        self.config.chat_default
    }

    /// Whether `/v1/embeddings` is served.
    pub fn embeddings_enabled(&self) -> bool {
        self.config.embeddings
    }

    /// The encoder's model id: its folder's name, or the default encoder's.
    pub fn encoder_id(&self) -> String {
        encoder_name(self.config.encoder.as_deref())
    }

    fn encoder(&self) -> Result<Arc<NamedEncoder>, ApiError> {
        let mut slot = lock(&self.encoder);
        if let Some(e) = slot.as_ref() {
            return Ok(e.clone());
        }
        let loaded = Arc::new(
            load_encoder(self.config.encoder.as_deref())
                .map_err(|e| unavailable("the sentence encoder", format!("{e:#}")))?,
        );
        *slot = Some(loaded.clone());
        Ok(loaded)
    }

    /// The encoder's vector width (loading it when needed).
    pub fn dim(&self) -> Result<usize, ApiError> {
        Ok(self.encoder()?.embedder.dim())
    }

    fn energy_j(&self) -> f64 {
        self.meter.poll();
        self.meter.mark().energy_j
    }

    /// Retrieves for `question` and builds its prompt within `room` tokens (see
    /// [`augment`](crate::session::rag::augment)), with the index's own footprint; blocking.
    /// The question is embedded with the retriever unlocked ([`augment_in`]).
    pub fn augment(
        &self,
        question: &str,
        tokenizer: &TextTokenizer,
        room: usize,
    ) -> Result<(Augmented, Option<IndexFootprint>), ApiError> {
        augment_in(
            &self.retriever,
            || self.open_retriever(),
            question,
            tokenizer,
            room,
            &mut || self.energy_j(),
        )
    }

    fn open_retriever(&self) -> Result<Retriever, ApiError> {
        let path = index_path(self.config.index.as_deref())
            .map_err(|e| unavailable("the document index", format!("{e:#}")))?;
        let mode: Mode = self
            .config
            .mode
            .parse()
            .map_err(|e| ApiError::internal(format!("rag.mode: {e}")))?;
        let options = RetrievalOptions {
            mode,
            k: self.config.passages,
            budget_tokens: self.config.budget_tokens,
        };
        Retriever::open(&path, options, || {
            self.encoder().map_err(|e| anyhow::anyhow!("{}", e.message))
        })
        .map_err(|e| unavailable("the document index", e))
    }

    /// Unit vectors of `texts` and the tokens they took; blocking.
    pub fn embed(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
        let encoder = self.encoder()?;
        let _one = lock(&self.embedding);
        let mut tokens = 0;
        for (i, t) in texts.iter().enumerate() {
            tokens += encoder
                .embedder
                .token_ids(t)
                .map_err(|e| ApiError::invalid(Some(&format!("input[{i}]")), format!("{e:#}")))?
                .len();
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = crate::index::Encoder::embed_batch(&*encoder, &refs)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok((vectors, tokens))
    }
}

/// Retrieves for `question` from the retriever in `slot` (`open` fills an empty slot) and
/// builds its prompt within `room` tokens, with the index's footprint. The slot is locked to
/// refresh the index and take its encoder, and again to search, but not while the question
/// is embedded: other requests search meanwhile.
fn augment_in(
    slot: &Mutex<Option<Retriever>>,
    open: impl FnOnce() -> Result<Retriever, ApiError>,
    question: &str,
    tokenizer: &TextTokenizer,
    room: usize,
    energy_j: &mut dyn FnMut() -> f64,
) -> Result<(Augmented, Option<IndexFootprint>), ApiError> {
    let not_open = || ApiError::internal("the index was not opened");
    let failed = |e: &dyn std::fmt::Display| ApiError::internal(format!("retrieval failed: {e:#}"));
    let encoder = {
        let mut guard = lock(slot);
        if guard.is_none() {
            *guard = Some(open()?);
        }
        let retriever = guard.as_mut().ok_or_else(not_open)?;
        retriever
            .refresh()
            .map_err(|e| unavailable("the document index", e))?;
        retriever.question_encoder()
    };
    let embedded = encoder.embed(question, energy_j).map_err(|e| failed(&e))?;
    let guard = lock(slot);
    let retriever = guard.as_ref().ok_or_else(not_open)?;
    let augmented = augment_embedded(retriever, question, embedded, tokenizer, room, energy_j)
        .map_err(|e| failed(&e))?;
    Ok((augmented, index_footprint(retriever)))
}

/// A checked `/v1/embeddings` request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    /// The texts, in order.
    pub input: Vec<String>,
    /// `base64` (little-endian f32) instead of JSON numbers.
    pub base64: bool,
    /// The width the client expects, when it says.
    pub dimensions: Option<u64>,
}

impl EmbeddingsRequest {
    /// Refuses a request for another width than the encoder's `dim`.
    pub fn check_dimensions(&self, dim: usize) -> Result<(), ApiError> {
        match self.dimensions {
            Some(d) if d != dim as u64 => Err(ApiError::invalid(
                Some("dimensions"),
                format!("this encoder gives {dim} dimensions, got a request for {d}"),
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<Value>),
}

#[derive(Debug, Deserialize)]
struct EmbeddingsBody {
    model: String,
    input: Input,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u64>,
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// Parses and checks a `/v1/embeddings` body for the encoder `model` (the width is checked
/// once the encoder is loaded: [`EmbeddingsRequest::check_dimensions`]).
pub fn parse_embeddings(body: &[u8], model: &str) -> Result<EmbeddingsRequest, ApiError> {
    let req: EmbeddingsBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            None,
            format!("The request body is not an embeddings request: {e}"),
        )
    })?;
    if req.model != model {
        return Err(ApiError::unknown_model(&req.model, model));
    }
    let input = match req.input {
        Input::One(s) => vec![s],
        Input::Many(items) => {
            if items.len() > MAX_EMBED_INPUTS {
                return Err(ApiError::invalid(
                    Some("input"),
                    format!(
                        "at most {MAX_EMBED_INPUTS} texts per request, got {}",
                        items.len()
                    ),
                ));
            }
            let mut texts = Vec::with_capacity(items.len());
            for (i, v) in items.into_iter().enumerate() {
                match v {
                    Value::String(s) => texts.push(s),
                    _ => {
                        return Err(ApiError::invalid(
                            Some(&format!("input[{i}]")),
                            "only text input is served (no token ids)",
                        ));
                    }
                }
            }
            texts
        }
    };
    if input.is_empty() {
        return Err(ApiError::invalid(
            Some("input"),
            "input must hold at least one text",
        ));
    }
    if let Some(i) = input.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::invalid(
            Some(&format!("input[{i}]")),
            "an input text must not be empty",
        ));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                Some("encoding_format"),
                format!("encoding_format must be \"float\" or \"base64\", got {other:?}"),
            ));
        }
    };
    Ok(EmbeddingsRequest {
        input,
        base64,
        dimensions: req.dimensions,
    })
}

/// The response body, in the layout of OpenAI's.
pub fn embeddings_response(
    model: &str,
    vectors: &[Vec<f32>],
    tokens: usize,
    base64: bool,
) -> Value {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
}

/// The `citations` of a response: one object per passage in the prompt, numbered as the
/// answer cites them.
pub fn citations(used: &[Hit]) -> Value {
    Value::Array(
        used.iter()
            .enumerate()
            .map(|(i, h)| {
                json!({
                    "index": i + 1,
                    "path": h.path,
                    "line_start": h.line_start,
                    "line_end": h.line_end,
                    "citation": h.citation(),
                    "score": h.score,
                })
            })
            .collect(),
    )
}

/// Whether the index file exists where `[rag]` points, for logs at start.
pub fn index_exists(config: &RagSection) -> bool {
    index_path(config.index.as_deref()).is_ok_and(|p| Path::new(&p).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::build::tests::words_vector;
    use crate::index::{AddOptions, Encoder, EncoderId, IndexError, RetrievalOptions, Store, add};
    use std::sync::mpsc;
    use std::time::Duration;

    /// A bag-of-words encoder whose questions wait for a go-ahead: it reports each one it
    /// starts on `started`, then embeds once `go` says so (or after a few seconds).
    struct Gated {
        started: Mutex<mpsc::Sender<()>>,
        go: Mutex<mpsc::Receiver<()>>,
    }

    /// The name and width both test encoders give.
    fn words_id() -> EncoderId {
        EncoderId {
            name: "words".into(),
            dim: 64,
        }
    }

    impl Encoder for Gated {
        fn id(&self) -> EncoderId {
            words_id()
        }
        fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, IndexError> {
            let _ = lock(&self.started).send(());
            let _ = lock(&self.go).recv_timeout(Duration::from_secs(5));
            Ok(texts.iter().map(|t| words_vector(t)).collect())
        }
    }

    /// Ungated bag-of-words, to build the index with.
    struct Words;

    impl Encoder for Words {
        fn id(&self) -> EncoderId {
            words_id()
        }
        fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, IndexError> {
            Ok(texts.iter().map(|t| words_vector(t)).collect())
        }
    }

    #[test]
    fn the_retriever_is_not_held_while_a_question_is_embedded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let doc = dir.path().join("valve.txt");
        std::fs::write(&doc, "The valve opens at 2 bar of pressure.").expect("write");
        let path = dir.path().join("index.sqlite");
        let mut store = Store::open(&path, &Words.id()).expect("open");
        let mut gate = |work: &mut dyn FnMut()| {
            work();
            true
        };
        add(
            &mut store,
            &Words,
            &[doc],
            &AddOptions::default(),
            &mut gate,
            &|| 0.0,
            &mut |_| {},
        )
        .expect("add");
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let encoder = Gated {
            started: Mutex::new(started_tx),
            go: Mutex::new(go_rx),
        };
        let options = RetrievalOptions {
            mode: Mode::Dense,
            k: 1,
            ..RetrievalOptions::default()
        };
        let retriever = Retriever::open(&path, options, || Ok(encoder)).expect("opens");
        let slot = Mutex::new(Some(retriever));
        let tokenizer = TextTokenizer::from_bytes(
            crate::engine::hf_files::byte_level_tokenizer_json(&[]).as_bytes(),
        )
        .expect("tokenizer");
        std::thread::scope(|s| {
            let asking = s.spawn(|| {
                augment_in(
                    &slot,
                    || Err(ApiError::internal("already open")),
                    "At what pressure does the valve open?",
                    &tokenizer,
                    4096,
                    &mut || 0.0,
                )
            });
            started
                .recv_timeout(Duration::from_secs(5))
                .expect("the question is being embedded");
            let free = slot.try_lock().is_ok();
            go.send(()).expect("the encoder waits");
            let (augmented, _) = asking.join().expect("no panic").expect("retrieves");
            assert!(
                free,
                "the retriever was locked while the question was embedded"
            );
            assert!(
                augmented.used[0].path.ends_with("valve.txt"),
                "{:?}",
                augmented.used
            );
        });
    }

    #[test]
    fn an_embeddings_body_is_checked_field_by_field() {
        let ok = parse_embeddings(br#"{"model":"m","input":"hi"}"#, "m").expect("one");
        assert_eq!(ok.input, vec!["hi".to_string()]);
        assert!(!ok.base64);
        let many = parse_embeddings(
            br#"{"model":"m","input":["a","b"],"encoding_format":"base64"}"#,
            "m",
        )
        .expect("many");
        assert_eq!(many.input.len(), 2);
        assert!(many.base64);
        for (body, param) in [
            (&br#"{"model":"x","input":"hi"}"#[..], "model"),
            (br#"{"model":"m","input":[1,2,3]}"#, "input[0]"),
            (br#"{"model":"m","input":[]}"#, "input"),
            (br#"{"model":"m","input":["ok",""]}"#, "input[1]"),
            (
                br#"{"model":"m","input":"a","encoding_format":"int8"}"#,
                "encoding_format",
            ),
            (br#"{"model":"m","input":"a","dimensions":3}"#, "dimensions"),
        ] {
            let e = parse_embeddings(body, "m")
                .and_then(|r| r.check_dimensions(4).map(|()| r))
                .expect_err(param);
            let got = e.body();
            assert!(
                got.to_string().contains(param) || e.status == 404,
                "{param}: {got}"
            );
        }
        let big = format!(
            r#"{{"model":"m","input":[{}]}}"#,
            vec!["\"a\""; MAX_EMBED_INPUTS + 1].join(",")
        );
        assert!(parse_embeddings(big.as_bytes(), "m").is_err());
        assert!(parse_embeddings(b"{", "m").is_err());
    }

    #[test]
    fn base64_vectors_are_little_endian_f32() {
        let v = vec![vec![1.0f32, -0.5]];
        let r = embeddings_response("m", &v, 3, true);
        let text = r["data"][0]["embedding"].as_str().expect("a string");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("base64");
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-0.5f32).to_le_bytes()].concat()
        );
        assert_eq!(r["usage"]["prompt_tokens"], 3);
        let f = embeddings_response("m", &v, 3, false);
        assert_eq!(f["data"][0]["embedding"], json!([1.0, -0.5]));
    }
}
