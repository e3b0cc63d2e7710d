//! Retrieval and embeddings in `thermo serve`, through the official `openai` Python package:
//! `/v1/embeddings` (base64, the client's default, and float) gives the vectors `thermo embed`
//! prints, and a chat request with `"rag": true` cites the passage that holds the answer,
//! whole and streamed. The sentence encoder is the real all-MiniLM-L6-v2 (fetched into the
//! cache on first use); the chat model is the tiny one, since only the citations are checked.
#![cfg(feature = "real-model")]

mod serve_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use edge_runtime::models::{EMBED_MODEL, cache_root, ensure_embed_model};
use serve_common::{Opts, Server, python_with_openai, request};

fn encoder() -> PathBuf {
    ensure_embed_model(&cache_root().expect("cache"), &EMBED_MODEL).expect("the encoder")
}

fn thermo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_thermo"))
        .args(args)
        .output()
        .expect("running thermo")
}

/// An index of three short documents, one of which says how far the pump lifts water.
fn index(dir: &Path, encoder: &Path) -> PathBuf {
    let docs = dir.join("docs");
    std::fs::create_dir(&docs).expect("mkdir");
    std::fs::write(
        docs.join("pump.md"),
        "# Pump\n\nThe borehole pump lifts water from a depth of 37 metres.\n",
    )
    .expect("write");
    std::fs::write(
        docs.join("valve.txt"),
        "The pressure valve opens at 2 bar and closes again at 1.5 bar.\n",
    )
    .expect("write");
    std::fs::write(
        docs.join("garden.html"),
        "<html><body><p>The roses are pruned in March, after the frosts.</p></body></html>",
    )
    .expect("write");
    let path = dir.join("index.sqlite");
    let out = thermo(&[
        "index",
        "--index",
        path.to_str().expect("utf-8"),
        "add",
        docs.to_str().expect("utf-8"),
        "--encoder",
        encoder.to_str().expect("utf-8"),
        "--no-governor",
    ]);
    assert!(
        out.status.success(),
        "index add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

const SCRIPT: &str = r#"
import json, os
from openai import OpenAI

client = OpenAI(base_url=os.environ["BASE_URL"], api_key="not-needed-on-loopback")
out = {}
texts = ["How deep is the borehole?", "Roses are pruned in March."]
emb = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
out["base64"] = [d.embedding for d in emb.data]
out["usage"] = emb.usage.prompt_tokens
emb = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="float")
out["float"] = [d.embedding for d in emb.data]

question = [{"role": "user", "content": "From what depth does the borehole pump lift water?"}]
chat = client.chat.completions.create(
    model="tiny", messages=question, max_tokens=8, temperature=0, extra_body={"rag": True}
)
out["citations"] = (chat.model_extra or {}).get("citations")
out["prompt_tokens"] = chat.usage.prompt_tokens
plain = client.chat.completions.create(model="tiny", messages=question, max_tokens=8, temperature=0)
out["plain_citations"] = (plain.model_extra or {}).get("citations")
out["plain_prompt_tokens"] = plain.usage.prompt_tokens
stream = client.chat.completions.create(
    model="tiny", messages=question, max_tokens=8, temperature=0, stream=True,
    extra_body={"rag": True},
)
cited = None
for chunk in stream:
    if (chunk.model_extra or {}).get("citations"):
        cited = chunk.model_extra["citations"]
out["stream_citations"] = cited
print(json.dumps(out))
"#;

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

#[test]
fn embeddings_match_thermo_embed_and_a_rag_chat_cites_the_passage_that_answers() {
    let enc = encoder();
    let dir = tempfile::tempdir().expect("tempdir");
    let index = index(dir.path(), &enc);
    let python = python_with_openai();
    let index_set = format!("rag.index={}", index.display());
    let encoder_set = format!("rag.encoder={}", enc.display());
    let server = Server::start(Opts {
        sets: vec![&index_set, &encoder_set],
        ..Opts::default()
    });
    let out = Command::new(&python)
        .args(["-c", SCRIPT])
        .env("BASE_URL", format!("{}/v1", server.base))
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the script's JSON summary");

    // The client decoded base64 itself; both encodings and `thermo embed` agree.
    let reference = thermo(&[
        "embed",
        "--model",
        enc.to_str().expect("utf-8"),
        "How deep is the borehole?",
        "Roses are pruned in March.",
    ]);
    assert!(reference.status.success());
    let reference: serde_json::Value =
        serde_json::from_slice(&reference.stdout).expect("thermo embed JSON");
    for i in 0..2 {
        let want = floats(&reference["data"][i]["embedding"]);
        let (b64, float) = (floats(&v["base64"][i]), floats(&v["float"][i]));
        assert_eq!(b64.len(), 384);
        assert!(cosine(&b64, &want) > 0.9999, "base64 vector {i}");
        assert!(cosine(&float, &want) > 0.9999, "float vector {i}");
    }
    assert!(v["usage"].as_u64().unwrap_or(0) > 4, "{}", v["usage"]);

    // The chat with retrieval cites the pump's passage first and its prompt holds it.
    let first = &v["citations"][0];
    assert_eq!(first["index"], 1, "{v}");
    assert!(
        first["path"].as_str().unwrap_or("").ends_with("pump.md"),
        "{v}"
    );
    assert!(
        first["citation"]
            .as_str()
            .unwrap_or("")
            .contains("pump.md:")
    );
    assert!(v["plain_citations"].is_null(), "no rag, no citations: {v}");
    assert!(
        v["prompt_tokens"].as_u64() > v["plain_prompt_tokens"].as_u64(),
        "the passages lengthen the prompt: {v}"
    );
    assert_eq!(v["stream_citations"], v["citations"], "{v}");
    assert!(!server.stderr().contains("panicked"));
}

#[test]
fn retrieval_without_an_index_and_bad_embedding_requests_get_clear_errors() {
    let enc = encoder();
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = format!("rag.index={}", dir.path().join("none.sqlite").display());
    let encoder_set = format!("rag.encoder={}", enc.display());
    let server = Server::start(Opts {
        sets: vec![&missing, &encoder_set],
        ..Opts::default()
    });
    let post = |path: &str, body: &str| {
        request(
            server.port,
            format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .expect("an answer")
    };
    let (status, body) = post(
        "/v1/chat/completions",
        r#"{"model":"tiny","rag":true,"max_tokens":4,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("thermo index add"), "{body}");
    let (status, body) = post(
        "/v1/chat/completions",
        r#"{"model":"tiny","rag":"yes","messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(status, 400, "{body}");
    for (body, want) in [
        (r#"{"model":"all-MiniLM-L6-v2","input":[1,2]}"#, 400),
        (r#"{"model":"all-MiniLM-L6-v2","input":""}"#, 400),
        (r#"{"model":"other","input":"x"}"#, 404),
        (
            r#"{"model":"all-MiniLM-L6-v2","input":"x","dimensions":12}"#,
            400,
        ),
    ] {
        let (status, text) = post("/v1/embeddings", body);
        assert_eq!(status, want, "{body}: {text}");
    }
    assert!(!server.stderr().contains("panicked"));
}
