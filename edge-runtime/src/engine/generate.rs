//! The token loop: prefill a prompt (reusing whatever prefix the KV cache already holds),
//! then decode token by token, streaming text to a callback, until EOS, a stop string, the
//! token budget, the context end, or the caller's gate says stop. The gate is where the
//! governor's permit and the zombie-compute guard plug in; it is called before every token.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use super::model::KvState;
use super::sampling::{Sampler, SamplingParams};
use super::tokenizer::StreamDecoder;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampling parameters.
    pub sampling: SamplingParams,
    /// Strings that end the answer (not included in the output).
    pub stop: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop: vec![],
        }
    }
}

/// Why generation ended.
#[derive(Clone, Debug, PartialEq)]
pub enum StopReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// A stop string appeared.
    StopString(String),
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context window is full.
    ContextFull,
    /// The gate stopped it, with its reason.
    Stopped(String),
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Eos => write!(f, "eos"),
            StopReason::StopString(s) => write!(f, "stop string {s:?}"),
            StopReason::MaxTokens => write!(f, "max tokens"),
            StopReason::ContextFull => write!(f, "context full"),
            StopReason::Stopped(why) => write!(f, "stopped: {why}"),
        }
    }
}

/// What the gate tells the loop before each token.
#[derive(Clone, Debug, PartialEq)]
pub enum Gate {
    /// Go on.
    Continue,
    /// Stop now, for this reason.
    Stop(String),
}

/// Everything the gate may look at before a token.
#[derive(Clone, Copy, Debug)]
pub struct TokenEvent<'a> {
    /// Tokens generated so far in this answer.
    pub generated: &'a [u32],
    /// The logits the next token will be sampled from (None before the first).
    pub logits: Option<&'a [f32]>,
}

/// Figures of one generation.
#[derive(Clone, Debug)]
pub struct GenerationStats {
    /// Tokens of the prompt that had to be run (the cached prefix excluded).
    pub prompt_tokens: usize,
    /// Tokens of the prompt found already in the cache.
    pub cached_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Wall time of the prefill pass.
    pub prefill_time: Duration,
    /// Wall time of all decode passes.
    pub decode_time: Duration,
    /// Why it ended.
    pub stop: StopReason,
    /// The generated ids.
    pub ids: Vec<u32>,
}

impl GenerationStats {
    /// Prompt tokens per second of prefill.
    pub fn prefill_tps(&self) -> f64 {
        rate(self.prompt_tokens, self.prefill_time)
    }
    /// Generated tokens per second of decode (the first token comes from prefill).
    pub fn decode_tps(&self) -> f64 {
        rate(self.generated_tokens.saturating_sub(1), self.decode_time)
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    let s = t.as_secs_f64();
    if s > 0.0 { n as f64 / s } else { 0.0 }
}

/// Makes the cache hold a prefix of `prompt` and returns how many leading tokens it kept:
/// at least one prompt token is always left to run so there are logits to sample from.
pub fn reuse_prefix(state: &mut KvState, prompt: &[u32]) -> Result<usize> {
    let common = state
        .tokens()
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count();
    let keep = common.min(prompt.len().saturating_sub(1));
    state.truncate(keep)?;
    Ok(keep)
}

/// Most prompt tokens run through the model in one pass: a longer prompt is prefilled in
/// chunks, which bounds the memory of one pass and lets the gate stop it between chunks.
pub const PREFILL_CHUNK: usize = 256;

/// Runs `tokens` through the model in chunks of at most `chunk`, asking `gate` before every
/// chunk but the first; the last position's logits, or why the gate stopped it.
fn prefill(
    state: &mut KvState,
    tokens: &[u32],
    chunk: usize,
    gate: &mut dyn FnMut(TokenEvent<'_>) -> Gate,
) -> Result<std::result::Result<Vec<f32>, String>> {
    let mut logits = vec![];
    for (i, part) in tokens.chunks(chunk.max(1)).enumerate() {
        if i > 0
            && let Gate::Stop(why) = gate(TokenEvent {
                generated: &[],
                logits: None,
            })
        {
            return Ok(Err(why));
        }
        logits = state.forward(part)?;
    }
    Ok(Ok(logits))
}

/// Generates an answer to `prompt` (token ids, already templated) into `state`, calling
/// `gate` before each token and before each prefill chunk after the first, and `on_text`
/// with each new piece of text.
pub fn generate(
    state: &mut KvState,
    prompt: &[u32],
    opts: &GenerateOptions,
    gate: &mut dyn FnMut(TokenEvent<'_>) -> Gate,
    on_text: &mut dyn FnMut(&str),
) -> Result<GenerationStats> {
    ensure!(!prompt.is_empty(), "the prompt is empty");
    let model = state.model().clone();
    let limit = model.context_length();
    ensure!(
        prompt.len() < limit,
        "the prompt has {} tokens; the model's context holds {limit} (prompt plus answer)",
        prompt.len()
    );
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    let cached = reuse_prefix(state, prompt)?;
    let mut stats = GenerationStats {
        prompt_tokens: prompt.len() - cached,
        cached_tokens: cached,
        generated_tokens: 0,
        prefill_time: Duration::ZERO,
        decode_time: Duration::ZERO,
        stop: StopReason::MaxTokens,
        ids: vec![],
    };
    if let Gate::Stop(why) = gate(TokenEvent {
        generated: &[],
        logits: None,
    }) {
        stats.stop = StopReason::Stopped(why);
        return Ok(stats);
    }
    let t0 = Instant::now();
    let prefilled = prefill(state, &prompt[cached..], PREFILL_CHUNK, gate)?;
    stats.prefill_time = t0.elapsed();
    let mut logits = match prefilled {
        Ok(logits) => logits,
        Err(why) => {
            stats.stop = StopReason::Stopped(why);
            return Ok(stats);
        }
    };

    let mut decoder = StreamDecoder::new();
    let mut text = String::new();
    let mut emitted = 0usize; // bytes of `text` already passed to on_text
    let hold = opts.stop.iter().map(|s| s.len()).max().unwrap_or(0);
    let decode_start = Instant::now();
    while stats.generated_tokens < opts.max_tokens {
        if let Gate::Stop(why) = gate(TokenEvent {
            generated: &stats.ids,
            logits: Some(&logits),
        }) {
            stats.stop = StopReason::Stopped(why);
            break;
        }
        let history = state.tokens();
        let id = sampler.sample(&mut logits, history)?;
        if model.eos_ids.contains(&id) {
            stats.stop = StopReason::Eos;
            break;
        }
        stats.ids.push(id);
        stats.generated_tokens += 1;
        text.push_str(&decoder.push(&model.tokenizer, id)?);
        if let Some((pos, s)) = find_stop(&text, &opts.stop) {
            text.truncate(pos);
            stats.stop = StopReason::StopString(s);
            break;
        }
        // Hold back a tail that could still become a stop string.
        let safe = floor_char_boundary(&text, text.len().saturating_sub(hold));
        if safe > emitted {
            on_text(&text[emitted..safe]);
            emitted = safe;
        }
        if stats.generated_tokens >= opts.max_tokens {
            break;
        }
        if state.tokens().len() >= limit {
            stats.stop = StopReason::ContextFull;
            break;
        }
        logits = state.forward(&[id])?;
    }
    if !matches!(stats.stop, StopReason::StopString(_)) {
        text.push_str(&decoder.finish(&model.tokenizer)?);
    }
    if text.len() > emitted {
        on_text(&text[emitted..]);
    }
    stats.decode_time = decode_start.elapsed();
    Ok(stats)
}

fn find_stop(text: &str, stops: &[String]) -> Option<(usize, String)> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|p| (p, s.clone())))
        .min_by_key(|(p, _)| *p)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_earliest_stop_string() {
        let stops = vec!["END".to_string(), "\n\n".to_string()];
        assert_eq!(
            find_stop("abc\n\nxEND", &stops),
            Some((3, "\n\n".to_string()))
        );
        assert_eq!(find_stop("abc", &stops), None);
    }

    #[test]
    fn a_long_prompt_is_prefilled_in_chunks_and_stops_between_them() {
        use crate::engine::WeightFormat;
        use crate::engine::import::write_tiny_model;
        use crate::engine::model::LoadedModel;
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("tiny");
        write_tiny_model(&dir, 7, WeightFormat::F32).expect("tiny model");
        let model = LoadedModel::load(&dir).expect("load");
        let prompt: Vec<u32> = (0..100u32).map(|i| 65 + i % 26).collect();
        // In one pass and in chunks of 16: the same last logits.
        let mut whole = KvState::new(model.clone()).expect("state");
        let one = whole.forward(&prompt).expect("one pass");
        let mut chunked = KvState::new(model.clone()).expect("state");
        let mut asked = 0;
        let mut go = |_: TokenEvent<'_>| {
            asked += 1;
            Gate::Continue
        };
        let many = prefill(&mut chunked, &prompt, 16, &mut go)
            .expect("prefill")
            .expect("not stopped");
        assert_eq!(
            asked, 6,
            "asked before each of the 6 chunks after the first"
        );
        assert_eq!(chunked.tokens(), prompt.as_slice());
        let worst = one
            .iter()
            .zip(&many)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "logits differ by {worst}");
        // A hang-up seen at the third chunk: two chunks ran, nothing more.
        let mut state = KvState::new(model).expect("state");
        let mut calls = 0;
        let mut hang_up = |_: TokenEvent<'_>| {
            calls += 1;
            if calls == 2 {
                Gate::Stop("client disconnected".into())
            } else {
                Gate::Continue
            }
        };
        let stopped = prefill(&mut state, &prompt, 16, &mut hang_up).expect("prefill");
        assert_eq!(stopped, Err("client disconnected".to_string()));
        assert_eq!(state.tokens().len(), 32);
    }

    #[test]
    fn char_boundary_never_splits_a_character() {
        let s = "aé"; // 'é' is 2 bytes at 1..3
        assert_eq!(floor_char_boundary(s, 2), 1);
        assert_eq!(floor_char_boundary(s, 3), 3);
    }
}
