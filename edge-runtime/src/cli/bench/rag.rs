//! `thermo bench rag`: does retrieval pay off? Indexes the committed document set
//! (`models/rag/docs/`, ten short manuals and notes, plus the project's own `docs/` as
//! distractors), then answers two committed question sets (`models/rag/tune.tsv` and
//! `models/rag/heldout.tsv`, each fact stated once in one document) with the default model
//! four ways: no retrieval, dense, keyword and hybrid. Per set and mode: recall@5 of the
//! search, exact match and "contains the answer", joules per answer (retrieval included) and
//! mean prompt tokens; and the right answers after which the index's build cost is repaid.
//! Writes `rag.md`, `rag.json` and `rag.svg` into the output folder and prints the table.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::eco::{Question, is_exact_match, parse_questions};
use edge_runtime::bench::rag::{ModeRow, RagReport, markdown, payback, svg};
use edge_runtime::eco::Factors;
use edge_runtime::eco::energy::MeterHandle;
use edge_runtime::engine::chat::{Message, Role};
use edge_runtime::engine::generate::{GenerateOptions, generate};
use edge_runtime::engine::model::{KvState, LoadedModel};
use edge_runtime::engine::sampling::SamplingParams;
use edge_runtime::engine::set_compute_threads;
use edge_runtime::index::build::AddOptions;
use edge_runtime::index::{Encoder, Mode, RetrievalOptions, Retriever, Store, add};
use edge_runtime::session::accounting::fallback_meter;
use edge_runtime::session::model::{prompt_ids, resolve_model};
use edge_runtime::session::rag::{augment, load_encoder};

/// The document set: (file name, text), written into a folder before indexing.
const DOCS: &[(&str, &str)] = &[
    (
        "beehives.txt",
        include_str!("../../../../models/rag/docs/beehives.txt"),
    ),
    (
        "bicycle.md",
        include_str!("../../../../models/rag/docs/bicycle.md"),
    ),
    (
        "boat-engine.txt",
        include_str!("../../../../models/rag/docs/boat-engine.txt"),
    ),
    (
        "bread.md",
        include_str!("../../../../models/rag/docs/bread.md"),
    ),
    (
        "greenhouse.md",
        include_str!("../../../../models/rag/docs/greenhouse.md"),
    ),
    (
        "library.md",
        include_str!("../../../../models/rag/docs/library.md"),
    ),
    (
        "radio.txt",
        include_str!("../../../../models/rag/docs/radio.txt"),
    ),
    (
        "solar-pump.md",
        include_str!("../../../../models/rag/docs/solar-pump.md"),
    ),
    (
        "water-filter.md",
        include_str!("../../../../models/rag/docs/water-filter.md"),
    ),
    (
        "woodstove.html",
        include_str!("../../../../models/rag/docs/woodstove.html"),
    ),
];

/// Distractors: the project's manual, which holds none of the answers.
const DISTRACTORS: &[(&str, &str)] = &[
    (
        "footprint.md",
        include_str!("../../../../docs/footprint.md"),
    ),
    ("index.md", include_str!("../../../../docs/index.md")),
    ("models.md", include_str!("../../../../docs/models.md")),
    ("service.md", include_str!("../../../../docs/service.md")),
    (
        "telemetry.md",
        include_str!("../../../../docs/telemetry.md"),
    ),
    ("training.md", include_str!("../../../../docs/training.md")),
];

/// The question sets: `question<TAB>answer|answer<TAB>source file` per line.
const SETS: &[(&str, &str)] = &[
    ("tune", include_str!("../../../../models/rag/tune.tsv")),
    (
        "held-out",
        include_str!("../../../../models/rag/heldout.tsv"),
    ),
];

/// Flags of `thermo bench rag`.
#[derive(Debug, Args)]
pub struct RagBenchArgs {
    /// Write rag.md, rag.json and rag.svg (and the index) into this folder.
    #[arg(long, value_name = "DIR", default_value = "rag-bench")]
    pub out: PathBuf,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 24)]
    pub max_tokens: usize,
    /// Passages put into the prompt.
    #[arg(long, default_value_t = 3)]
    pub passages: usize,
    /// Compute threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Weight format of the default model.
    #[arg(long, default_value = "ggml")]
    pub format: String,
    /// Only the retrieval figures (recall@5): no model is loaded.
    #[arg(long)]
    pub recall_only: bool,
}

/// A question with the file that states its answer.
struct Sourced {
    question: Question,
    source: String,
}

fn parse_set(tsv: &str) -> Result<Vec<Sourced>> {
    let mut out = vec![];
    for line in tsv.lines().filter(|l| !l.trim().is_empty()) {
        let mut cols = line.splitn(3, '\t');
        let (Some(q), Some(a), Some(src)) = (cols.next(), cols.next(), cols.next()) else {
            bail!("a question line needs three tab-separated columns: {line:?}");
        };
        let question = parse_questions(&format!("{q}\t{a}"))
            .pop()
            .context("a question line")?;
        out.push(Sourced {
            question,
            source: src.trim().to_string(),
        });
    }
    Ok(out)
}

/// Whether the first non-empty line of `answer` holds an accepted answer as whole words.
fn contains_answer(answer: &str, accepted: &[String]) -> bool {
    let first = answer
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_lowercase();
    accepted.iter().any(|a| {
        first.match_indices(a.as_str()).any(|(i, _)| {
            let before = first[..i].chars().next_back();
            let after = first[i + a.len()..].chars().next();
            before.is_none_or(|c| !c.is_alphanumeric())
                && after.is_none_or(|c| !c.is_alphanumeric())
        })
    })
}

fn energy_j(meter: &MeterHandle) -> f64 {
    meter.poll();
    meter.mark().energy_j
}

fn write_docs(dir: &Path) -> Result<()> {
    for (sub, files) in [("docs", DOCS), ("manual", DISTRACTORS)] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        for (name, text) in files {
            std::fs::write(d.join(name), text).with_context(|| format!("writing {name}"))?;
        }
    }
    Ok(())
}

/// Recall@5 of `mode` on `set`.
fn recall(retriever: &Retriever, set: &[Sourced]) -> Result<f64> {
    let mut found = 0;
    for q in set {
        let hits = retriever.retrieve(&q.question.text, &mut || 0.0)?.hits;
        let right = hits.iter().any(|h| {
            h.path.ends_with(&q.source) && {
                let text = h.text.to_lowercase();
                q.question.answers.iter().any(|a| text.contains(a.as_str()))
            }
        });
        found += usize::from(right);
    }
    Ok(found as f64 / set.len().max(1) as f64)
}

/// Answers `set` without retrieval (`retriever` `None`) or with it; the row of figures.
fn answer_set(
    model: &std::sync::Arc<LoadedModel>,
    retriever: Option<&Retriever>,
    set: &[Sourced],
    meter: &MeterHandle,
    max_tokens: usize,
) -> Result<(f64, f64, f64, f64, f64)> {
    let mut state = KvState::new(model.clone())?;
    let opts = GenerateOptions {
        max_tokens,
        sampling: SamplingParams::default(),
        stop: vec![],
    };
    let (mut em, mut contains, mut joules, mut retrieval_j, mut prompt) = (0, 0, 0.0, 0.0, 0);
    for q in set {
        let j0 = energy_j(meter);
        let question = q.question.text.clone();
        let turn = match retriever {
            Some(r) => {
                let a = augment(r, &question, &model.tokenizer, 2048, &mut || {
                    energy_j(meter)
                })?;
                retrieval_j += a.retrieved.embed_j + a.retrieved.search_j;
                a.prompt
            }
            None => question,
        };
        let ids = prompt_ids(model, &None, &[Message::new(Role::User, turn)], None)?;
        state.reset()?;
        let mut answer = String::new();
        let stats = generate(
            &mut state,
            &ids,
            &opts,
            &mut |_| edge_runtime::engine::generate::Gate::Continue,
            &mut |t| answer.push_str(t),
        )?;
        joules += energy_j(meter) - j0;
        prompt += stats.prompt_tokens;
        em += usize::from(is_exact_match(&answer, &q.question.answers));
        contains += usize::from(contains_answer(&answer, &q.question.answers));
        log::debug!("{:?} -> {:?}", q.question.text, answer);
    }
    let n = set.len().max(1) as f64;
    Ok((
        em as f64 / n,
        contains as f64 / n,
        joules / n,
        retrieval_j / n,
        prompt as f64 / n,
    ))
}

/// Runs `thermo bench rag`.
pub fn bench(args: &RagBenchArgs) -> Result<()> {
    set_compute_threads(args.threads.max(1));
    let sets: Vec<(&str, Vec<Sourced>)> = SETS
        .iter()
        .map(|(name, tsv)| Ok((*name, parse_set(tsv)?)))
        .collect::<Result<_>>()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let corpus = args.out.join("corpus");
    write_docs(&corpus)?;
    let factors = Factors::default();
    let meter = fallback_meter(&factors)?;
    let start = meter.mark();

    // The index, built anew so its cost is measured.
    let index_path = args.out.join("index.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", index_path.display()));
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    let encoder = load_encoder(None)?;
    let mut store = Store::open(&index_path, &encoder.id())?;
    let report = add(
        &mut store,
        &encoder,
        std::slice::from_ref(&corpus),
        &AddOptions::default(),
        &mut |work| {
            work();
            true
        },
        &|| energy_j(&meter),
        &mut |_| {},
    )?;
    let status = store.status()?;
    drop(store);
    let encoder = std::sync::Arc::new(encoder);
    let open = |mode: Mode| {
        Retriever::open(
            &index_path,
            RetrievalOptions {
                mode,
                k: 5,
                budget_tokens: 768,
            },
            || Ok(encoder.clone()),
        )
    };
    let modes = [Mode::Dense, Mode::Keyword, Mode::Hybrid];
    let mut recalls = vec![];
    for mode in modes {
        let r = open(mode)?;
        for (name, set) in &sets {
            recalls.push((mode, *name, recall(&r, set)?));
        }
    }
    let recall_of = |mode: Mode, set: &str| {
        recalls
            .iter()
            .find(|(m, s, _)| *m == mode && *s == set)
            .map(|x| x.2)
    };

    let mut rows = vec![];
    if args.recall_only {
        for (name, set) in &sets {
            for mode in modes {
                rows.push(ModeRow {
                    mode: mode.name().into(),
                    set: (*name).into(),
                    questions: set.len(),
                    recall_at_5: recall_of(mode, name),
                    exact_match: f64::NAN,
                    contains: f64::NAN,
                    j_per_answer: f64::NAN,
                    retrieval_j_per_answer: f64::NAN,
                    prompt_tokens: f64::NAN,
                });
            }
        }
    } else {
        let model = LoadedModel::load(&resolve_model(None, &args.format)?)?;
        let answering = |mode: Mode| {
            Retriever::open(
                &index_path,
                RetrievalOptions {
                    mode,
                    k: args.passages,
                    budget_tokens: 768,
                },
                || Ok(encoder.clone()),
            )
        };
        for (name, set) in &sets {
            let mut plan: Vec<(String, Option<Retriever>)> = vec![("none".into(), None)];
            for mode in modes {
                plan.push((mode.name().into(), Some(answering(mode)?)));
            }
            for (mode, retriever) in &plan {
                log::info!("rag bench: {name} / {mode}");
                let (em, contains, j, rj, prompt) =
                    answer_set(&model, retriever.as_ref(), set, &meter, args.max_tokens)?;
                rows.push(ModeRow {
                    mode: mode.clone(),
                    set: (*name).into(),
                    questions: set.len(),
                    recall_at_5: mode.parse::<Mode>().ok().and_then(|m| recall_of(m, name)),
                    exact_match: em,
                    contains,
                    j_per_answer: j,
                    retrieval_j_per_answer: rj,
                    prompt_tokens: prompt,
                });
            }
        }
    }
    let mut repaid = vec![];
    for (name, _) in &sets {
        let none = rows.iter().find(|r| r.set == *name && r.mode == "none");
        for mode in modes {
            if let (Some(none), Some(with)) = (
                none,
                rows.iter()
                    .find(|r| r.set == *name && r.mode == mode.name()),
            ) {
                repaid.push((
                    (*name).to_string(),
                    mode.name().to_string(),
                    payback(report.spent_j, none, with),
                ));
            }
        }
    }
    let result = RagReport {
        rows,
        build_j: report.spent_j,
        chunks: status.chunks as usize,
        documents: status.documents as usize,
        payback: repaid,
    };
    let notes = format!(
        "Documents: models/rag/docs (ten manuals and notes) and the project's docs/ as \
         distractors. Questions: models/rag/tune.tsv and models/rag/heldout.tsv, {} and {}, \
         each answered once in one document. Recall@5: one of the five best chunks is from \
         that document and holds an accepted answer. Answers: the default model ({}) at \
         temperature 0, at most {} tokens, {} passages in the prompt (at most 768 tokens); \
         exact match as `thermo bench eco` counts it, \"contains\": the first line holds an \
         accepted answer as whole words. Energy: {} (this process's CPU time on the default \
         board's power model when no RAPL is readable), retrieval included. The index is \
         repaid when the joules saved per right answer, against no retrieval, sum to its \
         build cost.\n",
        sets[0].1.len(),
        sets[1].1.len(),
        args.format,
        args.max_tokens,
        args.passages,
        meter.since(&start).source,
    );
    let md = markdown(&result, &notes);
    let write = |name: &str, text: &str| {
        let p = args.out.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    write("rag.md", &md)?;
    write("rag.json", &serde_json::to_string_pretty(&result)?)?;
    write("rag.svg", &svg(&result))?;
    println!("{md}");
    eprintln!("wrote {}/rag.md, rag.json, rag.svg", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_question_names_a_shipped_document_that_states_its_answer_once() {
        for (name, tsv) in SETS {
            let set = parse_set(tsv).expect("parses");
            assert_eq!(set.len(), 20, "{name}");
            for q in &set {
                let (_, text) = DOCS
                    .iter()
                    .find(|(file, _)| *file == q.source)
                    .unwrap_or_else(|| panic!("{name}: no document {}", q.source));
                let text = text.to_lowercase();
                assert!(
                    q.question.answers.iter().any(|a| text.contains(a.as_str())),
                    "{name}: {} does not state {:?}",
                    q.source,
                    q.question.answers
                );
            }
        }
    }

    #[test]
    fn contains_answer_wants_whole_words() {
        let a = vec!["37".to_string(), "blue".to_string()];
        assert!(contains_answer("It lifts from 37 metres [1].", &a));
        assert!(contains_answer("Blue.", &a));
        assert!(!contains_answer("It lifts from 370 metres.", &a));
        assert!(!contains_answer("bluebell", &a));
        assert!(!contains_answer("\n\nno idea\n37", &a));
    }
}
