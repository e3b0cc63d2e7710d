//! GGUF -> ONNX model folder, and the seeded tiny model folder for tests. A folder is built
//! beside its destination and renamed into place only when complete, so an interrupted or
//! failed import never leaves a half-written model behind.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::gguf::GgufFile;
use super::hf_files::{byte_level_tokenizer_json, config_json, write_hf_files};
use super::onnx_export::tiny::random_tiny_llama;
use super::onnx_export::{WeightFormat, weights_file, write_onnx};

impl FromStr for WeightFormat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(WeightFormat::F32),
            "q4" => Ok(WeightFormat::Q4),
            "ggml" => Ok(WeightFormat::Ggml),
            other => bail!("unknown weight format {other:?} (expected f32, q4 or ggml)"),
        }
    }
}

/// Version of the folders this importer writes; bumped whenever the graph it writes changes,
/// so a cached import from an older version is redone instead of reused.
pub const IMPORTER_VERSION: u32 = 4;

/// Name of the marker file an import leaves in its folder.
pub const IMPORT_MARKER: &str = "thermo-import.json";

/// Marker key naming the GGUF an import was made from (absolute path).
pub const MARKER_SOURCE_GGUF: &str = "source_gguf";
/// Marker key holding the seed of a tiny test model.
pub const MARKER_TINY_SEED: &str = "tiny_seed";

fn write_marker(dir: &Path, format: WeightFormat, source: (&str, serde_json::Value)) -> Result<()> {
    let mut marker = json!({
        "importer_version": IMPORTER_VERSION,
        "format": format!("{format:?}"),
    });
    marker[source.0] = source.1;
    let text = serde_json::to_string_pretty(&marker)?;
    std::fs::write(dir.join(IMPORT_MARKER), text).context("writing the import marker")
}

/// Whether `dir` holds a complete import written by this importer version.
pub fn is_current_import(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(IMPORT_MARKER)) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    v.get("importer_version")
        .and_then(serde_json::Value::as_u64)
        == Some(u64::from(IMPORTER_VERSION))
        && dir.join("config.json").is_file()
}

/// What an import produced.
#[derive(Clone, Debug)]
pub struct ImportReport {
    /// The finished model folder.
    pub dir: PathBuf,
    /// Size of `model.onnx` and its weights file in bytes.
    pub onnx_bytes: u64,
    /// Parameters in the model.
    pub parameters: usize,
}

/// Builds a model folder at `out` with `build` writing into a sibling temporary folder,
/// then renames it into place. `out` must not exist, or be an empty folder.
fn build_atomically(out: &Path, build: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if out.exists() {
        let empty = out.is_dir()
            && std::fs::read_dir(out)
                .with_context(|| format!("reading {}", out.display()))?
                .next()
                .is_none();
        if !empty {
            bail!(
                "{} already exists; remove it or choose another folder",
                out.display()
            );
        }
        std::fs::remove_dir(out).with_context(|| format!("removing empty {}", out.display()))?;
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = out
        .file_name()
        .context("output folder has no name")?
        .to_string_lossy();
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("removing stale {}", tmp.display()))?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = build(&tmp).and_then(|()| {
        std::fs::rename(&tmp, out).with_context(|| format!("moving the model to {}", out.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Imports the Llama GGUF at `gguf` into an ONNX model folder at `out`.
pub fn import_gguf(gguf: &Path, out: &Path, format: WeightFormat) -> Result<ImportReport> {
    let file = GgufFile::open(gguf).with_context(|| format!("reading {}", gguf.display()))?;
    let weights = file
        .load_llama()
        .with_context(|| format!("importing {}", gguf.display()))?;
    let parameters = weights
        .tensors
        .values()
        .map(|w| w.shape.iter().product::<usize>())
        .sum();
    build_atomically(out, |tmp| {
        write_hf_files(file.metadata(), &weights.config, tmp)?;
        write_onnx(&weights, format, &tmp.join("model.onnx"))?;
        let source = std::path::absolute(gguf).unwrap_or_else(|_| gguf.to_path_buf());
        write_marker(tmp, format, (MARKER_SOURCE_GGUF, json!(source)))
    })?;
    let graph = out.join("model.onnx");
    let data = std::fs::metadata(weights_file(&graph)).map_or(0, |m| m.len());
    let onnx_bytes = std::fs::metadata(&graph)?.len() + data;
    Ok(ImportReport {
        dir: out.to_path_buf(),
        onnx_bytes,
        parameters,
    })
}

/// ChatML, the template of SmolLM2-Instruct, used by the tiny test model.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Writes the seeded random tiny Llama (2 layers, hidden 64, byte-level tokenizer with
/// ChatML specials) as a model folder at `out`. Same seed, same model.
pub fn write_tiny_model(out: &Path, seed: u64, format: WeightFormat) -> Result<()> {
    let weights = tiny_weights(seed);
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    build_atomically(out, |tmp| {
        let write = |name: &str, text: String| {
            std::fs::write(tmp.join(name), text).with_context(|| format!("writing {name}"))
        };
        write("tokenizer.json", byte_level_tokenizer_json(&specials))?;
        write(
            "config.json",
            serde_json::to_string_pretty(&config_json(&weights.config)?)?,
        )?;
        write(
            "generation_config.json",
            serde_json::to_string_pretty(&json!({"bos_token_id": 256, "eos_token_id": 258}))?,
        )?;
        write(
            "tokenizer_config.json",
            serde_json::to_string_pretty(&json!({
                "chat_template": CHATML_TEMPLATE,
                "bos_token": "<|endoftext|>",
                "eos_token": "<|im_end|>",
            }))?,
        )?;
        write_onnx(&weights, format, &tmp.join("model.onnx"))?;
        write_marker(tmp, format, (MARKER_TINY_SEED, json!(seed)))
    })
}

/// The weights of the tiny model [`write_tiny_model`] writes for `seed`.
pub fn tiny_weights(seed: u64) -> crate::engine::llama::LlamaWeights {
    let mut weights = random_tiny_llama(seed);
    // Byte tokens take ids 0..256; the specials follow.
    weights.config.bos_token_id = 256;
    weights.config.eos_token_id = 258;
    weights
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weight_formats() {
        assert_eq!("f32".parse::<WeightFormat>().ok(), Some(WeightFormat::F32));
        assert_eq!("Q4".parse::<WeightFormat>().ok(), Some(WeightFormat::Q4));
        assert!("q3".parse::<WeightFormat>().is_err());
    }

    #[test]
    fn a_failed_build_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("m");
        let r = build_atomically(&out, |tmp| {
            std::fs::write(tmp.join("half"), b"x")?;
            bail!("boom")
        });
        assert!(r.is_err());
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0);
    }

    #[test]
    fn a_tiny_import_is_current_and_a_folder_without_marker_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("tiny");
        write_tiny_model(&out, 1, WeightFormat::F32).expect("tiny model");
        assert!(is_current_import(&out));
        std::fs::write(out.join(IMPORT_MARKER), r#"{"importer_version": 1}"#).expect("write");
        assert!(!is_current_import(&out));
        std::fs::remove_file(out.join(IMPORT_MARKER)).expect("rm");
        assert!(!is_current_import(&out));
    }

    #[test]
    fn refuses_to_overwrite_a_model_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("keep"), b"x").expect("write");
        let r = build_atomically(dir.path(), |_| Ok(()));
        assert!(r.is_err());
        assert!(dir.path().join("keep").exists());
    }
}
