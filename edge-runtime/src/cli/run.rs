//! `thermo run` and `thermo chat`: the main job. Resolves the model (fetching and importing
//! the default one when absent), renders the prompt with the model's chat template, streams
//! the answer to stdout and prints a one-line summary to stderr.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;

use super::flags::accounting::AccountingArgs;
use super::flags::governor::GovernorArgs;
use super::flags::rag::RagArgs;
use super::flags::telemetry::TelemetryArgs;
use super::flags::{ModelArgs, SamplingArgs, main_job_config};
use edge_runtime::engine::chat::{Message, Role};
use edge_runtime::engine::generate::{GenerateOptions, GenerationStats};
use edge_runtime::engine::model::{KvState, LoadedModel};
use edge_runtime::engine::sampling::SamplingParams;
use edge_runtime::engine::set_compute_threads;
use edge_runtime::index::Retriever;
use edge_runtime::session::accounting::Accounting;
use edge_runtime::session::governed::Governed;
use edge_runtime::session::model::prompt_ids;
use edge_runtime::session::rag::{Augmented, augment, index_footprint, sources_block};
use edge_runtime::session::telemetry::Session;
use edge_runtime::shutdown::Shutdown;

/// Flags of `thermo run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    governor: GovernorArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(flatten)]
    eco: AccountingArgs,
    #[command(flatten)]
    rag: RagArgs,
    /// Send the prompt to the model verbatim, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Apply the LoRA adapter (PEFT folder) from `thermo train`.
    #[arg(long, value_name = "DIR")]
    adapter: Option<PathBuf>,
    /// The prompt.
    prompt: String,
}

/// Flags of `thermo chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    governor: GovernorArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(flatten)]
    eco: AccountingArgs,
    #[command(flatten)]
    rag: RagArgs,
    /// Apply the LoRA adapter (PEFT folder) from `thermo train`.
    #[arg(long, value_name = "DIR")]
    adapter: Option<PathBuf>,
}

fn load(args: &ModelArgs, adapter: Option<&std::path::Path>) -> Result<Arc<LoadedModel>> {
    ensure!(args.threads >= 1, "--threads must be at least 1");
    set_compute_threads(args.threads);
    let dir = args.resolve()?;
    let t = std::time::Instant::now();
    let model = match adapter {
        None => LoadedModel::load(&dir)?,
        Some(a) => {
            let (model, mode) = edge_runtime::train::serve::load_adapted(&dir, a, None)
                .with_context(|| format!("applying the adapter in {}", a.display()))?;
            log::info!("adapter {} applied ({mode:?})", a.display());
            edge_runtime::session::accounting::note_adapter_served(a);
            model
        }
    };
    log::info!(
        "loaded {} in {:.2} s",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(model)
}

fn options(s: &SamplingArgs) -> GenerateOptions {
    GenerateOptions {
        max_tokens: s.max_tokens,
        sampling: SamplingParams {
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            repeat_penalty: s.repeat_penalty,
            seed: s.seed,
            ..SamplingParams::default()
        },
        stop: s.stop.clone(),
    }
}

fn summary(stats: &GenerationStats) -> String {
    format!(
        "[{} prompt tokens ({} cached), {} generated; prefill {:.1} tok/s, decode {:.1} tok/s; stop: {}]",
        stats.prompt_tokens,
        stats.cached_tokens,
        stats.generated_tokens,
        stats.prefill_tps(),
        stats.decode_tps(),
        stats.stop
    )
}

fn energy_j(telemetry: &Option<Session>) -> f64 {
    telemetry.as_ref().map_or(0.0, Session::energy_j)
}

/// Retrieves passages for `question`, the next user turn after `history`, within the room
/// the model's context leaves once the answer's `--max-tokens` and the chat template are
/// counted.
fn retrieve_for(
    retriever: &Retriever,
    model: &LoadedModel,
    sampling: &SamplingArgs,
    history: &[Message],
    question: &str,
    eco: &mut Accounting,
) -> Result<Augmented> {
    let mut turn = history.to_vec();
    turn.push(Message::new(Role::User, question.to_string()));
    let (base, asked) = (
        prompt_ids(model, &sampling.system, &turn, None).map_or(0, |ids| ids.len()),
        model.tokenizer.encode(question)?.len(),
    );
    let room = model
        .context_length()
        .saturating_sub(sampling.max_tokens + base)
        + asked;
    let augmented = augment(retriever, question, &model.tokenizer, room, &mut || {
        eco.energy_j()
    })?;
    eco.set_memory(augmented.memory_cost(), index_footprint(retriever));
    Ok(augmented)
}

/// `thermo run PROMPT`.
pub fn run(args: RunArgs) -> Result<()> {
    if args.prompt.trim().is_empty() {
        bail!("the prompt is empty");
    }
    let opts = options(&args.sampling);
    opts.sampling.validate()?;
    let config = main_job_config(
        &args.eco.footprint,
        |eco| args.eco.merge_onto(eco),
        &args.telemetry,
    )?;
    let model = load(&args.model, args.adapter.as_deref())?;
    let retriever = args.rag.open()?;
    let shutdown = Shutdown::install()?;
    let governed = args.governor.start_for(args.model.threads, &config.eco)?;
    let telemetry = Session::start(&config.telemetry, governed.as_ref().map(Governed::probe))?;
    let (started, energy_before) = (std::time::Instant::now(), energy_j(&telemetry));
    let mut eco = Accounting::start(&config.eco, governed.as_ref())?;
    let augmented = match &retriever {
        Some(r) => Some(retrieve_for(
            r,
            &model,
            &args.sampling,
            &[],
            &args.prompt,
            &mut eco,
        )?),
        None => None,
    };
    let question = augmented.as_ref().map_or(&args.prompt, |a| &a.prompt);
    let history = [Message::new(Role::User, question.clone())];
    let ids = prompt_ids(
        &model,
        &args.sampling.system,
        &history,
        args.raw.then_some(question.as_str()),
    )?;
    let mut state = KvState::new(model)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut on_text = |text: &str| {
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    };
    let (stats, footprint, guard_stop) = eco.generate(
        &mut state,
        &ids,
        &opts,
        governed.as_ref(),
        &shutdown,
        &mut on_text,
    )?;
    let _ = writeln!(out);
    if let Some(a) = &augmented {
        let sources = sources_block(&a.used);
        if !sources.is_empty() {
            let _ = writeln!(out, "\n{sources}");
        }
        eprintln!("{}", a.line());
    }
    eprintln!("{}", summary(&stats));
    eprintln!("{}", eco.answer_line(&footprint, guard_stop.as_ref()));
    if let Some(today) = eco.today() {
        eprintln!("[today: {}]", today.line());
    }
    if let Some(t) = telemetry {
        t.request_done(
            &stats,
            started.elapsed(),
            energy_before,
            Some(&footprint),
            eco.today(),
            Some(eco.layers()),
        );
        t.finish();
    }
    eco.finish();
    if let Some(g) = governed {
        eprintln!("[governor: {}]", g.finish().line());
    }
    Ok(())
}

/// `thermo chat`: reads user turns from stdin until EOF or `/quit`.
pub fn chat(args: ChatArgs) -> Result<()> {
    let opts = options(&args.sampling);
    opts.sampling.validate()?;
    let config = main_job_config(
        &args.eco.footprint,
        |eco| args.eco.merge_onto(eco),
        &args.telemetry,
    )?;
    let model = load(&args.model, args.adapter.as_deref())?;
    let retriever = args.rag.open()?;
    let mut state = KvState::new(model.clone())?;
    let shutdown = Shutdown::install()?;
    let governed = args.governor.start_for(args.model.threads, &config.eco)?;
    let telemetry = Session::start(&config.telemetry, governed.as_ref().map(Governed::probe))?;
    let mut eco = Accounting::start(&config.eco, governed.as_ref())?;
    let mut history: Vec<Message> = vec![];
    let lines = stdin_lines();
    while let Some(text) = next_turn(&lines, &shutdown)? {
        let (started, energy_before) = (std::time::Instant::now(), energy_j(&telemetry));
        let augmented = match &retriever {
            Some(r) => match retrieve_for(r, &model, &args.sampling, &history, &text, &mut eco) {
                Ok(a) => Some(a),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    continue;
                }
            },
            None => None,
        };
        let turn = augmented.as_ref().map_or(&text, |a| &a.prompt);
        history.push(Message::new(Role::User, turn.clone()));
        let ids = match prompt_ids(&model, &args.sampling.system, &history, None) {
            Ok(ids) => ids,
            Err(e) => {
                history.pop();
                eprintln!("error: {e:#}");
                continue;
            }
        };
        // Later turns keep the question, not the passages, so the context does not fill
        // with old sources.
        if let Some(last) = history.last_mut() {
            *last = Message::new(Role::User, text);
        }
        let mut answer = String::new();
        let mut on_text = |t: &str| {
            answer.push_str(t);
            print!("{t}");
            let _ = std::io::stdout().flush();
        };
        let result = eco.generate(
            &mut state,
            &ids,
            &opts,
            governed.as_ref(),
            &shutdown,
            &mut on_text,
        );
        println!();
        match result {
            Ok((stats, footprint, guard_stop)) => {
                if let Some(a) = &augmented {
                    let sources = sources_block(&a.used);
                    if !sources.is_empty() {
                        println!("\n{sources}");
                    }
                    eprintln!("{}", a.line());
                }
                eprintln!("{}", summary(&stats));
                eprintln!("{}", eco.answer_line(&footprint, guard_stop.as_ref()));
                if let Some(t) = &telemetry {
                    t.request_done(
                        &stats,
                        started.elapsed(),
                        energy_before,
                        Some(&footprint),
                        eco.today(),
                        Some(eco.layers()),
                    );
                }
                if let Some(g) = &governed {
                    eprintln!("[governor: {}]", g.status().line());
                }
                history.push(Message::new(Role::Assistant, answer));
            }
            Err(e) => {
                history.pop();
                eprintln!("error: {e:#}");
            }
        }
        if shutdown.is_requested() {
            break;
        }
    }
    if let Some(g) = governed {
        eprintln!("[governor: {}]", g.finish().line());
    }
    eprintln!("[session footprint: {}]", eco.session().line());
    if let Some(today) = eco.today() {
        eprintln!("[today: {}]", today.line());
    }
    eco.finish();
    Ok(())
}

/// The next user turn: `None` at the end of stdin, a stop request, `/quit` or `/exit`;
/// empty lines are skipped.
fn next_turn(
    lines: &mpsc::Receiver<std::io::Result<String>>,
    shutdown: &Shutdown,
) -> Result<Option<String>> {
    loop {
        eprint!("> ");
        let line = match next_line(lines, shutdown) {
            Some(Ok(line)) => line,
            Some(Err(e)) => return Err(e).context("reading stdin"),
            None => {
                // End the prompt's line.
                eprintln!();
                return Ok(None);
            }
        };
        let text = line.trim();
        if text == "/quit" || text == "/exit" {
            return Ok(None);
        }
        if !text.is_empty() {
            return Ok(Some(text.to_string()));
        }
    }
}

/// Stdin read line by line on a thread of its own, so the chat loop can wait for a line and
/// still notice a stop request.
fn stdin_lines() -> mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        loop {
            let mut line = String::new();
            let result = stdin.lock().read_line(&mut line);
            let done = !matches!(result, Ok(n) if n > 0);
            let item = result.map(|_| line);
            if done {
                // End of input: say so by dropping the sender (an error is passed on first).
                if let Err(e) = item {
                    let _ = tx.send(Err(e));
                }
                return;
            }
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line, or `None` at end of input or once a stop was requested.
fn next_line(
    lines: &mpsc::Receiver<std::io::Result<String>>,
    shutdown: &Shutdown,
) -> Option<std::io::Result<String>> {
    loop {
        if shutdown.is_requested() {
            return None;
        }
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(item) => return Some(item),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}
