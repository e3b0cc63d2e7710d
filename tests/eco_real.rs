//! Eco features on the real default model, SmolLM2-135M-Instruct: perplexity against
//! llama.cpp on the same GGUF, the zombie guard on prompts that make the model loop at
//! temperature 0, and no false stops on the committed set of normal prompts.

use std::path::PathBuf;
use std::process::Command;

use e2e_tests::real_model_dir;
use edge_runtime::eco::guard::{GuardConfig, GuardStop, ZombieGuard};
use edge_runtime::eco::perplexity::{bos_if_added, perplexity, tokenize};
use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::chat::{Message, Role};
use edge_runtime::engine::generate::{Gate, GenerateOptions, generate};
use edge_runtime::engine::model::{KvState, LoadedModel};
use edge_runtime::session::model::prompt_ids;

const HELDOUT: &str = include_str!("../models/eval/heldout.txt");
const NORMAL_PROMPTS: &str = include_str!("../models/eval/normal_prompts.txt");

/// llama.cpp's figure for `models/eval/heldout.txt`, `--ctx 128`, on the default Q4_1 GGUF,
/// measured with `models/perplexity_llamacpp.py` (llama-cpp-python 0.3.36); used when that
/// binding is not installed here.
const LLAMA_CPP_PPL_CTX128: f64 = 29.2174;

fn peer_python() -> Option<PathBuf> {
    let p = std::env::var_os("THERMO_PEER_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/thermo/peer-venv/bin/python"))
        })?;
    p.is_file().then_some(p)
}

fn llama_cpp_ppl() -> f64 {
    let Some(py) = peer_python() else {
        return LLAMA_CPP_PPL_CTX128;
    };
    let gguf = edge_runtime::models::ensure_default_gguf().expect("the default GGUF");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(py)
        .arg(root.join("models/perplexity_llamacpp.py"))
        .arg(gguf)
        .arg(root.join("models/eval/heldout.txt"))
        .args(["--ctx", "128"])
        .output()
        .expect("running the llama.cpp peer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("PPL = "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no PPL from the peer: {stdout}"))
}

#[test]
fn perplexity_of_the_f32_import_agrees_with_llama_cpp_within_three_percent() {
    let model = LoadedModel::load(&real_model_dir(WeightFormat::F32)).expect("model");
    let bos = bos_if_added(&model).expect("tokenizer config");
    let tokens = tokenize(&model, HELDOUT, bos).expect("tokenize");
    let mut state = KvState::new(model).expect("state");
    let ours = perplexity(&mut state, &tokens, 128, bos, &mut |_, _| {})
        .expect("perplexity")
        .ppl;
    let peer = llama_cpp_ppl();
    let diff = (ours - peer).abs() / peer;
    eprintln!(
        "PPL ours {ours:.4}, llama.cpp {peer:.4}, {:.2} %",
        diff * 100.0
    );
    assert!(diff < 0.03, "ours {ours:.4} vs llama.cpp {peer:.4}");
}

/// Generates a greedy answer to `prompt` to the end (EOS or `max_tokens`) with a guard in
/// shadow mode: it sees every token event but never stops the answer. Returns the ids, and
/// the token count and reason at which the guard would have stopped.
fn shadow(
    state: &mut KvState,
    model: &LoadedModel,
    prompt: &str,
    max_tokens: usize,
) -> (Vec<u32>, Option<(usize, GuardStop)>) {
    let ids = prompt_ids(model, &None, &[Message::new(Role::User, prompt)], None).expect("ids");
    let opts = GenerateOptions {
        max_tokens,
        ..GenerateOptions::default()
    };
    state.reset().expect("reset");
    let mut guard = ZombieGuard::new(GuardConfig::default(), 0.0);
    let mut first_stop: Option<(usize, GuardStop)> = None;
    let stats = {
        let mut gate = |ev: edge_runtime::engine::generate::TokenEvent<'_>| {
            if first_stop.is_none()
                && let Gate::Stop(_) = guard.check(&ev, 0.0, 0.0)
            {
                first_stop = guard.stopped().cloned().map(|s| (ev.generated.len(), s));
            }
            Gate::Continue
        };
        generate(state, &ids, &opts, &mut gate, &mut |_| {}).expect("generate")
    };
    (stats.ids, first_stop)
}

/// Where the text starts repeating what it already said: the first token from which at
/// least 90 % of the 8-grams up to the end already occurred earlier in the answer (and at
/// least 16 such 8-grams follow). `None` when the answer never settles into repetition.
fn loop_start(ids: &[u32]) -> Option<usize> {
    const N: usize = 8;
    if ids.len() < N + 16 {
        return None;
    }
    let grams = ids.len() - N + 1;
    let repeated: Vec<bool> = (0..grams)
        .map(|j| (0..j).any(|k| ids[k..k + N] == ids[j..j + N]))
        .collect();
    (0..grams.saturating_sub(16)).find(|&i| {
        let tail = &repeated[i..];
        repeated[i] && tail.iter().filter(|&&r| r).count() * 10 >= tail.len() * 9
    })
}

/// Where a passage of at least 8 tokens is said three times in a row, if anywhere (the
/// third time without the separator that followed the first two): a degenerate answer even
/// when it breaks out of the repetition afterwards.
fn said_three_times(ids: &[u32]) -> Option<usize> {
    (8..=ids.len() / 3).find_map(|p| {
        let mut run = 0;
        (p..ids.len()).find_map(|i| {
            run = if ids[i] == ids[i - p] { run + 1 } else { 0 };
            (run + 1 >= 2 * p).then(|| i + 1 - run - p)
        })
    })
}

/// Prompts that make SmolLM2-135M-Instruct loop at temperature 0 (many of them, in each
/// weight format: the int8 activations of `ggml`, and the float rounding of the machine's
/// kernels, change which ones do).
const LOOP_PROMPTS: &[&str] = &[
    "Write the word \"the\" one hundred times.",
    "Tell me about the number 7.",
    "Write a poem about repetition.",
    "Write the alphabet backwards, twice.",
    "How do I boil an egg?",
    "What makes a good friend?",
    "Write a short poem about the sea.",
    "Repeat the sentence \"I like apples\" ten times.",
    "Write a song with a chorus.",
    "Say hello in as many ways as you can.",
    "What is the meaning of life?",
    "Write a long list of animals.",
];

/// Of [`LOOP_PROMPTS`], how many must loop for the test to say anything.
const MIN_LOOPS: usize = 5;

/// The guard's stop is the one generation would see: the guard runs in shadow mode over a
/// greedy (deterministic) answer, so the guarded answer is the prefix it stops at. Run on
/// the default weight format.
#[test]
fn the_guard_stops_smollm2_loops_within_64_tokens_of_their_start() {
    let model = LoadedModel::load(&real_model_dir(WeightFormat::Ggml)).expect("model");
    let mut state = KvState::new(model.clone()).expect("state");
    let mut loops = 0;
    for prompt in LOOP_PROMPTS {
        let (free, stop) = shadow(&mut state, &model, prompt, 192);
        let start = loop_start(&free);
        eprintln!("{prompt:?}: {} tokens, loop from {start:?}", free.len());
        let Some(start) = start else {
            continue;
        };
        loops += 1;
        let (at, stop) = stop.unwrap_or_else(|| panic!("{prompt:?}: the guard did not stop"));
        eprintln!("  stopped at {at}: {}", stop.reason);
        assert!(stop.kind.is_degenerate());
        assert!(
            at <= start + 64,
            "{prompt:?}: stopped at {at} for a loop from {start}"
        );
    }
    assert!(
        loops >= MIN_LOOPS,
        "only {loops} of {} prompts loop",
        LOOP_PROMPTS.len()
    );
}

/// The committed normal prompts: no answer that does not loop is stopped. An answer that
/// turns out to loop (by [`loop_start`]) or to say one passage three times in a row (by
/// [`said_three_times`]) is a true positive and is reported, not counted.
#[test]
fn the_guard_never_stops_a_normal_answer() {
    let model = LoadedModel::load(&real_model_dir(WeightFormat::Ggml)).expect("model");
    let mut state = KvState::new(model.clone()).expect("state");
    let prompts: Vec<&str> = NORMAL_PROMPTS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let (mut normal, mut loops, mut false_stops) = (0usize, vec![], vec![]);
    for prompt in &prompts {
        let (free, stop) = shadow(&mut state, &model, prompt, 128);
        if let Some(start) = loop_start(&free) {
            loops.push(format!("{prompt:?} loops from token {start}"));
            continue;
        }
        if let Some(start) = said_three_times(&free) {
            loops.push(format!(
                "{prompt:?} says one passage three times from {start}"
            ));
            continue;
        }
        normal += 1;
        if let Some((at, stop)) = stop {
            false_stops.push(format!("{prompt:?} at {at}: {}", stop.reason));
        }
    }
    eprintln!(
        "{} prompts: {normal} normal answers, {} false stops; loops: {loops:?}",
        prompts.len(),
        false_stops.len()
    );
    assert!(normal >= 20, "only {normal} normal answers");
    assert!(false_stops.is_empty(), "{false_stops:#?}");
}
