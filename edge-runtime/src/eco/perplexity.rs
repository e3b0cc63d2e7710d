//! Perplexity computed the way llama.cpp's `llama-perplexity` does, so figures compare
//! directly: tokenize the whole text once (with BOS in front when the tokenizer adds one),
//! cut it into non-overlapping chunks of `ctx` tokens (a partial last chunk is dropped),
//! replace the first token of each chunk by BOS when the tokenizer adds one, run each chunk
//! from an empty cache, and score only the second half: the logits at positions
//! `ctx/2 .. ctx-2` predict the tokens at `ctx/2+1 .. ctx-1`. PPL = exp(mean NLL).

use anyhow::{Result, ensure};

use crate::engine::model::{KvState, LoadedModel};

/// The result of a perplexity run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood) over the scored tokens.
    pub ppl: f64,
    /// Tokens in the text (BOS included when added).
    pub tokens: usize,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens scored.
    pub scored: usize,
    /// Running estimate after each chunk.
    pub per_chunk: Vec<f64>,
}

/// Whether the model folder's tokenizer adds BOS (`add_bos_token` in
/// `tokenizer_config.json`), and BOS's id.
pub fn bos_if_added(model: &LoadedModel) -> Result<Option<u32>> {
    let path = model.dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    if v.get("add_bos_token").and_then(|b| b.as_bool()) != Some(true) {
        return Ok(None);
    }
    let bos = v
        .get("bos_token")
        .and_then(|b| {
            b.as_str()
                .or_else(|| b.get("content").and_then(|c| c.as_str()))
        })
        .and_then(|s| model.tokenizer.token_id(s));
    Ok(bos)
}

/// log-sum-exp(row) - row[target], in f64.
fn nll(row: &[f32], target: u32) -> Option<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&x| f64::from(x - max).exp()).sum();
    let t = row.get(target as usize)?;
    Some(f64::from(max) + sum.ln() - f64::from(*t))
}

/// Tokenizes `text` as llama.cpp does for perplexity: BOS in front when `bos` is given.
pub fn tokenize(model: &LoadedModel, text: &str, bos: Option<u32>) -> Result<Vec<u32>> {
    let mut tokens = vec![];
    tokens.extend(bos);
    tokens.extend(model.tokenizer.encode(text)?);
    Ok(tokens)
}

/// Perplexity of `tokens` with chunks of `ctx` tokens; `bos` replaces each chunk's first
/// token when given. `progress` sees the running estimate after each chunk.
pub fn perplexity(
    state: &mut KvState,
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<Perplexity> {
    ensure!(ctx >= 4, "--ctx must be at least 4 tokens, got {ctx}");
    let limit = state.model().context_length();
    ensure!(
        ctx <= limit,
        "--ctx {ctx} exceeds the model's context of {limit} tokens"
    );
    ensure!(
        tokens.len() >= 2 * ctx,
        "the text has {} tokens; at least {} (2 x ctx) are needed",
        tokens.len(),
        2 * ctx
    );
    let vocab = state.model().vocab_size();
    let chunks = tokens.len() / ctx;
    let first = ctx / 2;
    let mut total = 0.0f64;
    let mut scored = 0usize;
    let mut per_chunk = vec![];
    for c in 0..chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        state.reset()?;
        let logits = state.forward_all(&chunk)?;
        for i in first..ctx - 1 {
            let row = &logits[i * vocab..(i + 1) * vocab];
            let target = chunk[i + 1];
            total += nll(row, target).ok_or_else(|| {
                anyhow::anyhow!("token {target} is outside the logits of {vocab}")
            })?;
            scored += 1;
        }
        let ppl = (total / scored as f64).exp();
        per_chunk.push(ppl);
        progress(c + 1, ppl);
    }
    Ok(Perplexity {
        ppl: (total / scored as f64).exp(),
        tokens: tokens.len(),
        chunks,
        scored,
        per_chunk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::WeightFormat;
    use crate::engine::import::write_tiny_model;

    #[test]
    fn nll_of_a_uniform_row_is_log_vocab() {
        let row = [0.5f32; 8];
        assert!((nll(&row, 3).unwrap_or(f64::NAN) - 8f64.ln()).abs() < 1e-9);
        assert!(nll(&row, 8).is_none());
    }

    #[test]
    fn scores_the_second_half_of_each_whole_chunk() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tiny");
        write_tiny_model(&path, 5, WeightFormat::F32)?;
        let model = LoadedModel::load(&path)?;
        let tokens: Vec<u32> = (0..70u32).map(|i| (i * 37 + 11) % 256).collect();
        let mut state = KvState::new(model.clone())?;
        let mut seen = vec![];
        let p = perplexity(&mut state, &tokens, 16, None, &mut |c, ppl| {
            seen.push((c, ppl))
        })?;
        // 70 tokens -> 4 chunks of 16 (6 dropped); 7 scored per chunk (positions 8..14).
        assert_eq!((p.chunks, p.scored), (4, 28));
        assert_eq!(seen.len(), 4);
        assert!(p.ppl.is_finite() && p.ppl > 1.0);

        // By hand for the first chunk: the same sum from forward_all.
        let mut s = KvState::new(model.clone())?;
        let logits = s.forward_all(&tokens[..16])?;
        let v = model.vocab_size();
        let mut total = 0.0;
        for i in 8..15 {
            total += nll(&logits[i * v..(i + 1) * v], tokens[i + 1]).unwrap_or(f64::NAN);
        }
        assert!(((total / 7.0).exp() - p.per_chunk[0]).abs() < 1e-6);

        assert!(perplexity(&mut state, &tokens[..20], 16, None, &mut |_, _| {}).is_err());
        Ok(())
    }
}
