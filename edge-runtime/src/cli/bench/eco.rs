//! `thermo bench eco`: rates SmolLM2-135M (f32 and q4) and the tiny test model by what they
//! cost as well as what they score. Per entry: perplexity on the committed held-out text
//! (llama.cpp's method), exact match on the committed question set at temperature 0,
//! prefill/decode speed, board energy per generated token under the governor on the
//! simulated SoC (the twin's supply sensor, heated live by this process), footprint per 1000
//! tokens, peak die temperature and time above the setpoint, and peak RSS. Writes
//! `eco.md`, `eco.json` and `eco.svg` into the output folder and prints the table.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::process::{peak_rss_bytes, reset_peak_rss};
use edge_runtime::bench::eco::{EcoEntry, Rating, markdown, rate, svg};
use edge_runtime::eco::Factors;
use edge_runtime::eco::perplexity::{bos_if_added, perplexity, tokenize};
use edge_runtime::engine::chat::{Message, Role};
use edge_runtime::engine::generate::{GenerateOptions, generate};
use edge_runtime::engine::import::write_tiny_model;
use edge_runtime::engine::model::{KvState, LoadedModel};
use edge_runtime::engine::sampling::SamplingParams;
use edge_runtime::engine::{WeightFormat, set_compute_threads};
use edge_runtime::session::governed::{Governed, GovernorOptions};
use edge_runtime::session::model::{prompt_ids, resolve_model};

/// The held-out text perplexity is measured on (committed under `models/eval/`).
pub const HELDOUT_TEXT: &str = include_str!("../../../../models/eval/heldout.txt");
/// The question set, `question<TAB>answer[|answer...]` per line.
pub const QUESTIONS_TSV: &str = include_str!("../../../../models/eval/questions.tsv");

/// Flags of `thermo bench eco`.
#[derive(Debug, Args)]
pub struct EcoBenchArgs {
    /// Write eco.md, eco.json and eco.svg into this folder.
    #[arg(long, value_name = "DIR", default_value = "eco-bench")]
    pub out: PathBuf,
    /// Perplexity chunk size (tokens).
    #[arg(long, default_value_t = 128)]
    pub ctx: usize,
    /// Most tokens per answer to the questions.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: usize,
    /// Compute threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Simulated SoC profile the governor runs on.
    #[arg(long, default_value = "rpi5")]
    pub sim: String,
    /// Simulated seconds per wall second (heats the twin faster than real time).
    #[arg(long, default_value_t = 10.0, value_parser = edge_runtime::sensing::parse_time_scale)]
    pub sim_time_scale: f64,
    /// Leave out SmolLM2 (only the tiny model: a quick smoke run).
    #[arg(long)]
    pub tiny_only: bool,
}

/// One question and its accepted answers (lower case).
#[derive(Debug, Clone)]
pub struct Question {
    /// The question.
    pub text: String,
    /// Accepted answers.
    pub answers: Vec<String>,
}

/// Parses `question<TAB>a|b` lines.
pub fn parse_questions(tsv: &str) -> Vec<Question> {
    tsv.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(q, a)| Question {
            text: q.trim().to_string(),
            answers: a.split('|').map(|s| s.trim().to_lowercase()).collect(),
        })
        .collect()
}

fn normalise(s: &str) -> String {
    s.trim()
        .to_lowercase()
        .trim_end_matches(['.', '!', ',', ';'])
        .trim()
        .to_string()
}

/// Exact match: the answer's first line, normalised (case, surrounding space, trailing
/// punctuation), equals an accepted answer, or begins or ends with it as a whole word (a
/// chat model answers "Paris." or "The capital of France is Paris.").
pub fn is_exact_match(answer: &str, accepted: &[String]) -> bool {
    let first = normalise(answer.lines().find(|l| !l.trim().is_empty()).unwrap_or(""));
    let boundary = |s: &str, at_end: bool| {
        let c = if at_end {
            s.chars().next_back()
        } else {
            s.chars().next()
        };
        c.is_none_or(|c| !c.is_alphanumeric())
    };
    accepted.iter().any(|a| {
        first == *a
            || first
                .strip_prefix(a.as_str())
                .is_some_and(|rest| boundary(rest, false))
            || first
                .strip_suffix(a.as_str())
                .is_some_and(|rest| boundary(rest, true))
    })
}

struct Measured {
    entry: EcoEntry,
}

fn measure(
    name: &str,
    dir: &Path,
    args: &EcoBenchArgs,
    factors: &Factors,
    questions: &[Question],
) -> Result<Measured> {
    let _ = reset_peak_rss();
    log::info!("eco bench: {name}");
    let model = LoadedModel::load(dir)?;
    let bos = bos_if_added(&model)?;
    let tokens = tokenize(&model, HELDOUT_TEXT, bos)?;
    let ctx = args.ctx.min(model.context_length());
    let mut state = KvState::new(model.clone())?;
    let ppl = perplexity(&mut state, &tokens, ctx, bos, &mut |_, _| {})?;

    let governed = Governed::start(
        &GovernorOptions {
            sim: Some(args.sim.clone()),
            sim_time_scale: args.sim_time_scale,
            ..GovernorOptions::default()
        },
        args.threads,
    )?;
    let setpoint_c = f64::from(governed.status().setpoint_c);
    governed.meter().set_alarm_c(setpoint_c);
    // Let the control loop take its first samples before the clock starts.
    std::thread::sleep(Duration::from_millis(300));
    let start = governed.meter().mark();
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling: SamplingParams::default(),
        stop: vec![],
    };
    let (mut correct, mut generated, mut prompt_tokens) = (0usize, 0usize, 0usize);
    let (mut prefill_s, mut decode_s, mut decode_tokens) = (0.0f64, 0.0f64, 0usize);
    for q in questions {
        let history = [Message::new(
            Role::User,
            format!("{} Answer with one word.", q.text),
        )];
        let raw = model.chat_template.is_none().then_some(q.text.as_str());
        let ids = prompt_ids(&model, &None, &history, raw)?;
        let mut answer = String::new();
        let stats = generate(&mut state, &ids, &opts, &mut governed.gate(), &mut |t| {
            answer.push_str(t)
        })?;
        if is_exact_match(&answer, &q.answers) {
            correct += 1;
        }
        generated += stats.generated_tokens;
        prompt_tokens += stats.prompt_tokens;
        prefill_s += stats.prefill_time.as_secs_f64();
        decode_s += stats.decode_time.as_secs_f64();
        decode_tokens += stats.generated_tokens.saturating_sub(1);
    }
    let span = governed.meter().since(&start);
    let peak_c = governed.meter().peak_c().unwrap_or(f64::NAN);
    let above_s = governed.meter().above_s();
    let _ = governed.finish();
    let j_per_token = span.energy_j / generated.max(1) as f64;
    let per_1k = factors
        .footprint(span.energy_j, "", span.duration_s, generated as u64, 0.0)
        .per_tokens(1000.0);
    let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    Ok(Measured {
        entry: EcoEntry {
            name: name.to_string(),
            perplexity: ppl.ppl,
            ppl_ctx: ctx,
            exact_match: correct as f64 / questions.len().max(1) as f64,
            questions: questions.len(),
            prefill_tps: rate(prompt_tokens, prefill_s),
            decode_tps: rate(decode_tokens, decode_s),
            j_per_token,
            energy_source: span.source.to_string(),
            g_co2e_per_1k: per_1k.g_co2e,
            water_ml_per_1k: per_1k.water_ml,
            nox_mg_per_1k: per_1k.nox_mg,
            peak_c,
            above_setpoint_s: above_s,
            setpoint_c,
            peak_rss_mb: peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / 1e6),
            rating: Rating::Pareto,
        },
    })
}

/// Runs `thermo bench eco`.
pub fn bench(args: &EcoBenchArgs) -> Result<()> {
    set_compute_threads(args.threads.max(1));
    let factors = Factors::default();
    let questions = parse_questions(QUESTIONS_TSV);
    let tiny_root = args.out.join("tiny-model");
    let mut plan: Vec<(String, PathBuf)> = vec![];
    if !args.tiny_only {
        for format in ["f32", "q4", "ggml"] {
            let dir = resolve_model(None, format)?;
            plan.push((format!("SmolLM2-135M {format}"), dir));
        }
    }
    for (label, format) in [
        ("f32", WeightFormat::F32),
        ("q4", WeightFormat::Q4),
        ("ggml", WeightFormat::Ggml),
    ] {
        let dir = tiny_root.join(label);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("cleaning {}", dir.display()))?;
        }
        write_tiny_model(&dir, 7, format)?;
        plan.push((format!("tiny (random) {label}"), dir));
    }
    let mut entries = vec![];
    for (name, dir) in &plan {
        entries.push(measure(name, dir, args, &factors, &questions)?.entry);
    }
    rate(&mut entries);
    let notes = format!(
        "Perplexity: llama.cpp's method on models/eval/heldout.txt, chunks of {} tokens \
         (the tiny model's byte-level vocabulary makes its figure incomparable with SmolLM2's). \
         Exact match: {} questions from models/eval/questions.tsv at temperature 0, at most {} \
         tokens each. Energy: board energy per generated token (prefill included) under the \
         governor on the simulated `{}` at {}x time, from the twin's supply sensor. Footprint \
         per 1000 tokens with the default factors (world grid {} g CO2e/kWh, board site). \
         Peak RSS is the process's VmHWM after each entry; the kernel's peak is reset between \
         entries (clear_refs 5) where it allows, else it includes the entries before.\n",
        args.ctx,
        questions.len(),
        args.max_tokens,
        args.sim,
        args.sim_time_scale,
        factors.grid_g_co2e_per_kwh[0]
    );
    let md = markdown(&entries, &notes);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let write = |name: &str, text: &str| {
        let p = args.out.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    write("eco.md", &md)?;
    write("eco.json", &serde_json::to_string_pretty(&entries)?)?;
    write("eco.svg", &svg(&entries))?;
    println!("{md}");
    eprintln!("wrote {}/eco.md, eco.json, eco.svg", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_match_takes_the_first_line_as_a_whole_word() {
        let a = vec!["paris".to_string()];
        assert!(is_exact_match("Paris.", &a));
        assert!(is_exact_match("\nParis, of course.\nMore", &a));
        assert!(is_exact_match("The capital of France is Paris.", &a));
        assert!(!is_exact_match("Parisian", &a));
        assert!(!is_exact_match(
            "Paris is not the capital of Italy? No: Rome",
            &a[..0]
        ));
        assert!(!is_exact_match("The capital is Parisville", &a));
        assert!(!is_exact_match("I do not know", &a));
    }

    #[test]
    fn the_committed_question_set_parses() {
        let q = parse_questions(QUESTIONS_TSV);
        assert_eq!(q.len(), 12);
        assert!(
            q.iter()
                .all(|q| !q.answers.is_empty() && q.text.ends_with('?'))
        );
    }
}
