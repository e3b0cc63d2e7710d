//! Which model a job runs and what it is asked: the model folder (a given one, or the default
//! model in a weight format, fetched and imported into the cache on first use) and the prompt
//! rendered into token ids through the model's chat template.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::engine::WeightFormat;
use crate::engine::chat::{Message, Role};
use crate::engine::import::{import_gguf, is_current_import};
use crate::engine::model::LoadedModel;
use crate::models::{DEFAULT_MODEL, cache_root, ensure_gguf, model_dir};

/// The model folder to use: `dir` when given, else the default model in `format` (`f32`,
/// `q4`, `ggml`), fetched and imported on first use and imported again when an older
/// importer wrote it.
pub fn resolve_model(dir: Option<&Path>, format: &str) -> Result<PathBuf> {
    if let Some(dir) = dir {
        return Ok(dir.to_path_buf());
    }
    let weights: WeightFormat = format.parse()?;
    let root = cache_root()?;
    let dir = model_dir(&root, &DEFAULT_MODEL, format);
    if !is_current_import(&dir) {
        if dir.exists() {
            log::info!(
                "{} was imported by another version; importing again",
                dir.display()
            );
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        } else {
            log::info!(
                "{} ({}) is not imported yet; fetching it",
                DEFAULT_MODEL.name,
                format
            );
        }
        fetch_and_import(&root, weights, &dir)?;
    }
    Ok(dir)
}

/// Fetches (if needed) the default model's GGUF into the cache `root` and imports it into
/// `dir` in `format`.
pub fn fetch_and_import(root: &Path, format: WeightFormat, dir: &Path) -> Result<()> {
    let gguf = ensure_gguf(root, &DEFAULT_MODEL)?;
    let t = std::time::Instant::now();
    let report = import_gguf(&gguf, dir, format)?;
    log::info!(
        "imported {} ({} license) as {:?} into {} in {:.1} s",
        DEFAULT_MODEL.name,
        DEFAULT_MODEL.license,
        format,
        report.dir.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn messages(system: &Option<String>, history: &[Message]) -> Vec<Message> {
    let mut msgs = vec![];
    if let Some(sys) = system {
        msgs.push(Message::new(Role::System, sys.clone()));
    }
    msgs.extend_from_slice(history);
    msgs
}

/// Renders a prompt into token ids: `raw` verbatim when given, else `system` (if any) and
/// `history` through the model's chat template.
pub fn prompt_ids(
    model: &LoadedModel,
    system: &Option<String>,
    history: &[Message],
    raw: Option<&str>,
) -> Result<Vec<u32>> {
    let text = match raw {
        Some(text) => text.to_string(),
        None => {
            let template = model
                .chat_template
                .as_ref()
                .context("this model has no chat template; use --raw")?;
            template.render(&messages(system, history), true)?
        }
    };
    model.tokenizer.encode(&text)
}
