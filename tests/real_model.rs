//! The engine on the real default model, SmolLM2-135M-Instruct, imported from its GGUF.

use std::path::{Path, PathBuf};

use e2e_tests::real_model_dir;
use edge_runtime::eco::perplexity::{bos_if_added, perplexity, tokenize};
use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::generate::{Gate, GenerateOptions, generate};
use edge_runtime::engine::gguf::GgufFile;
use edge_runtime::engine::gguf::test_writer::GgufBuilder;
use edge_runtime::engine::import::import_gguf;
use edge_runtime::engine::model::{KvState, LoadedModel};
use edge_runtime::engine::quant::{self, GgmlType};

const PROMPT: &str =
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";

fn greedy_answer(format: WeightFormat, max_tokens: usize) -> String {
    greedy_answer_of(&real_model_dir(format), max_tokens)
}

fn greedy_answer_of(dir: &Path, max_tokens: usize) -> String {
    let model = LoadedModel::load(dir).expect("the imported model loads");
    let ids = model.tokenizer.encode(PROMPT).expect("encode");
    let mut state = KvState::new(model).expect("state");
    let opts = GenerateOptions {
        max_tokens,
        ..Default::default()
    };
    let mut text = String::new();
    generate(&mut state, &ids, &opts, &mut |_| Gate::Continue, &mut |t| {
        text.push_str(t)
    })
    .expect("generate");
    text
}

#[test]
fn f32_import_answers_the_capital_of_france() {
    let answer = greedy_answer(WeightFormat::F32, 12);
    assert!(
        answer.starts_with("The capital of France is Paris."),
        "answer was {answer:?}"
    );
}

#[test]
fn q4_import_answers_the_capital_of_france() {
    let answer = greedy_answer(WeightFormat::Q4, 12);
    assert!(
        answer.starts_with("The capital of France is Paris."),
        "answer was {answer:?}"
    );
}

#[test]
fn prompt_ids_equal_the_gguf_vocabulary() {
    let model = LoadedModel::load(&real_model_dir(WeightFormat::F32)).expect("loads");
    // Ids of the GGUF's own token list for this hand split of the prompt.
    let expected = [
        1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
    ];
    assert_eq!(model.tokenizer.encode(PROMPT).expect("encode"), expected);
}

#[test]
fn tokenizer_round_trips_mixed_text() {
    let model = LoadedModel::load(&real_model_dir(WeightFormat::F32)).expect("loads");
    let text = "On 2024-03-15 at 07:45, the Pi 5 hit 84.2 °C (!) — so we paced it… 🌡️🔥 «fine» \
                naïve café, 100% done; tabs\tand\nnewlines, emoji 👩‍🔧 too.";
    let ids = model.tokenizer.encode(text).expect("encode");
    assert_eq!(model.tokenizer.decode(&ids, false).expect("decode"), text);
}

/// The default GGUF requantized by our own quantizers into the formats a Q4_K_M file of this
/// model holds where its rows allow (the 576-wide projections cannot be K-quants): every
/// `ffn_down` (1536 wide) as Q4_K, Q5_K or Q6_K in turn, `attn_v` as Q5_1, `attn_output` as
/// Q5_0; the rest as stored.
fn k_quant_gguf(dir: &Path) -> PathBuf {
    let src = edge_runtime::models::ensure_default_gguf().expect("the default GGUF");
    let file = GgufFile::open(&src).expect("opens");
    let mut b = GgufBuilder::new();
    b.alignment = file.alignment();
    for (key, value) in file.metadata().iter() {
        b = b.value(key, value);
    }
    let down = [GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K];
    for (i, info) in file.tensors().iter().enumerate() {
        let target = if info.name.ends_with("ffn_down.weight") {
            Some(down[i % 3])
        } else if info.name.ends_with("attn_v.weight") {
            Some(GgmlType::Q5_1)
        } else if info.name.ends_with("attn_output.weight") {
            Some(GgmlType::Q5_0)
        } else {
            None
        };
        let (type_id, data) = match target {
            Some(kind) => {
                let values = file.read_tensor_f32(info).expect("decodes");
                (
                    kind.id(),
                    quant::quantize(kind, &values).expect("quantizes"),
                )
            }
            None => (info.type_id, file.read_tensor_bytes(info).expect("reads")),
        };
        b = b.tensor(&info.name, &info.dims, type_id, data);
    }
    let path = dir.join("SmolLM2-135M-Instruct.kquant.gguf");
    std::fs::write(&path, b.build()).expect("writes the GGUF");
    path
}

/// Perplexity of the model in `dir` on the first four 128-token chunks of the held-out text.
fn heldout_perplexity(dir: &Path) -> f64 {
    let model = LoadedModel::load(dir).expect("loads");
    let bos = bos_if_added(&model).expect("tokenizer config");
    let text = include_str!("../models/eval/heldout.txt");
    let mut tokens = tokenize(&model, text, bos).expect("tokenize");
    tokens.truncate(4 * 128);
    let mut state = KvState::new(model).expect("state");
    perplexity(&mut state, &tokens, 128, bos, &mut |_, _| {})
        .expect("perplexity")
        .ppl
}

#[test]
fn a_k_quant_gguf_imports_as_stored_blocks_and_answers_like_the_q4_1_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let gguf = k_quant_gguf(tmp.path());
    let out = tmp.path().join("kquant-ggml");
    import_gguf(&gguf, &out, WeightFormat::Ggml).expect("imports");
    // Stored form: the graph holds the GGUF's blocks plus a second copy of the tied Q8_0
    // embedding (gather table and head product, about 32 MB); decoded to f32, the 30
    // ffn_down tensors alone would add about 100 MB more.
    let graph = std::fs::metadata(out.join("model.onnx")).map(|m| m.len());
    let source = std::fs::metadata(&gguf)
        .map(|m| m.len())
        .expect("GGUF size");
    let graph = graph.expect("model.onnx size");
    assert!(
        graph < source + source / 2,
        "model.onnx is {graph} bytes for a {source}-byte GGUF"
    );
    let answer = greedy_answer_of(&out, 12);
    assert!(answer.contains("Paris"), "answer was {answer:?}");
    let ours = heldout_perplexity(&out);
    // The plain K-quant encoders and a second rounding of Q4_1 values cost some perplexity
    // (about 10 % here); a wrong layout or kernel costs far more.
    let q4_1 = heldout_perplexity(&real_model_dir(WeightFormat::Ggml));
    eprintln!("held-out PPL: requantized {ours:.4}, Q4_1 file {q4_1:.4}");
    assert!(
        ours.is_finite() && (ours - q4_1).abs() / q4_1 < 0.15,
        "requantized {ours:.4} vs Q4_1 {q4_1:.4}"
    );
}
