//! The sentence encoder on the real all-MiniLM-L6-v2, fetched and checked as `thermo embed`
//! does: the similarities its model card publishes for three sentences, unit vectors, the
//! token window that cuts a long text instead of failing on it, the f32 and Q8_0 vectors of
//! `tests/data/embed_sentences.txt` against an independent numpy forward pass
//! (`tests/embed_reference.py`), and `thermo embed` into a reader that goes away.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use edge_runtime::engine::embed::{EmbedPrecision, Embedder, cosine};
use edge_runtime::models::{EMBED_MODEL, cache_root, ensure_embed_model};

fn encoder_dir() -> PathBuf {
    ensure_embed_model(&cache_root().expect("cache"), &EMBED_MODEL).expect("fetching the encoder")
}

fn encoder() -> Embedder {
    Embedder::load(&encoder_dir()).expect("loading the encoder")
}

/// The Python with numpy that runs `tests/embed_reference.py`: `THERMO_REF_PYTHON`, else the
/// venv `.ci/run` makes, `~/.cache/thermo/venv-ref`.
fn reference_python() -> PathBuf {
    let p = std::env::var_os("THERMO_REF_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/thermo/venv-ref/bin/python"))
        })
        .expect("THERMO_REF_PYTHON or HOME");
    assert!(
        p.is_file(),
        "no Python for the reference at {} (.ci/run makes it; or set THERMO_REF_PYTHON)",
        p.display()
    );
    p
}

/// The numpy reference's unit vectors for `ids`.
fn reference_vectors(ids: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("embed_reference.py");
    let mut child = Command::new(reference_python())
        .arg(&script)
        .arg(encoder_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the reference");
    let input = serde_json::to_vec(ids).expect("ids as JSON");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("writing the ids");
    let out = child.wait_with_output().expect("running the reference");
    assert!(out.status.success(), "the reference failed");
    serde_json::from_slice(&out.stdout).expect("the reference's vectors")
}

/// The smallest cosine between `ours` and `reference`, pair by pair.
fn min_cosine(ours: &[Vec<f32>], reference: &[Vec<f32>]) -> f32 {
    assert_eq!(ours.len(), reference.len());
    ours.iter()
        .zip(reference)
        .map(|(a, b)| {
            assert_eq!(a.len(), b.len());
            cosine(a, b)
        })
        .fold(f32::INFINITY, f32::min)
}

#[test]
fn fifty_sentences_agree_with_an_independent_numpy_forward_pass_in_f32_and_q8() {
    let text = include_str!("data/embed_sentences.txt");
    let sentences: Vec<&str> = text.lines().collect();
    assert_eq!(sentences.len(), 50);
    let dir = encoder_dir();
    let exact = Embedder::load_with(&dir, EmbedPrecision::F32).expect("f32 encoder");
    let q8 = Embedder::load_with(&dir, EmbedPrecision::Q8).expect("q8 encoder");
    let ids: Vec<Vec<u32>> = sentences
        .iter()
        .map(|s| exact.token_ids(s).expect("tokens"))
        .collect();
    let reference = reference_vectors(&ids);
    let f32_min = min_cosine(&exact.embed_batch(&sentences).expect("f32"), &reference);
    let q8_min = min_cosine(&q8.embed_batch(&sentences).expect("q8"), &reference);
    eprintln!(
        "min cosine to the numpy reference over 50 sentences: f32 {f32_min:.6}, q8 {q8_min:.6}"
    );
    assert!(f32_min >= 0.999, "f32: min cosine {f32_min}");
    assert!(q8_min >= 0.995, "q8: min cosine {q8_min}");
    // The sentences differ, so agreeing with the reference says something.
    assert!(cosine(&reference[0], &reference[2]) < 0.5);
}

#[test]
fn embed_batch_gives_each_text_its_one_at_a_time_vector() {
    let e = encoder();
    let text = include_str!("data/embed_sentences.txt");
    let sentences: Vec<&str> = text.lines().collect();
    let batched = e.embed_batch(&sentences).expect("embeds");
    for (s, v) in sentences.iter().zip(&batched) {
        let c = cosine(v, &e.embed(s).expect("embeds"));
        assert!(c > 0.99999, "{s:?}: cosine {c}");
    }
}

#[test]
fn thermo_embed_into_a_reader_that_goes_away_exits_quietly() {
    let thermo = e2e_tests::thermo().expect("the thermo binary");
    let texts = vec!["the board keeps its temperature"; 40];
    let mut child = Command::new(thermo)
        .arg("embed")
        .args(&texts)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting thermo embed");
    let mut head = [0u8; 10];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut head)
        .expect("the first bytes");
    // The pipe is closed here, long before the ~150 kB of vectors are written.
    let out = child.wait_with_output().expect("thermo embed ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(head[0], b'{', "{:?}", String::from_utf8_lossy(&head));
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// sentence-transformers' own figures for these sentences with this model (cosine
/// similarity, four decimals).
#[test]
fn the_encoder_gives_the_similarities_sentence_transformers_publishes() {
    let e = encoder();
    let texts = [
        "The weather is lovely today.",
        "It's so sunny outside!",
        "He drove to the stadium.",
    ];
    let v: Vec<Vec<f32>> = texts.iter().map(|t| e.embed(t).expect("embeds")).collect();
    for x in &v {
        assert_eq!(x.len(), 384);
        let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    for (i, j, published) in [(0, 1, 0.6660), (0, 2, 0.1046), (1, 2, 0.1411)] {
        let got = cosine(&v[i], &v[j]);
        assert!(
            (got - published).abs() < 1e-3,
            "{:?} vs {:?}: {got:.4}, published {published:.4}",
            texts[i],
            texts[j]
        );
    }
}

#[test]
fn a_text_beyond_the_window_is_cut_and_an_empty_one_still_has_a_vector() {
    let e = encoder();
    let long = "the board keeps its temperature ".repeat(400);
    assert_eq!(e.token_ids(&long).expect("tokens").len(), e.max_tokens());
    let v = e.embed(&long).expect("embeds");
    assert!(v.iter().all(|x| x.is_finite()));
    let empty = e.embed("").expect("embeds");
    assert_eq!(empty.len(), e.dim());
    assert!(
        e.embed(&"x".repeat(2 << 20)).is_err(),
        "a text over the byte bound"
    );
}
