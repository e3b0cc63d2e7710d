//! The sentence encoder on the real all-MiniLM-L6-v2, fetched and checked as `thermo embed`
//! does: the similarities its model card publishes for three sentences, unit vectors, and the
//! token window that cuts a long text instead of failing on it.

use edge_runtime::engine::embed::{Embedder, cosine};
use edge_runtime::models::{EMBED_MODEL, cache_root, ensure_embed_model};

fn encoder() -> Embedder {
    let dir = ensure_embed_model(&cache_root().expect("cache"), &EMBED_MODEL)
        .expect("fetching the encoder");
    Embedder::load(&dir).expect("loading the encoder")
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
