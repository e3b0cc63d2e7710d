//! The official `openai` Python package talks to `thermo serve`: models, chat and text
//! completions, whole and streamed. The package lives in a venv under the thermo cache
//! (`~/.cache/thermo/venv-openai`), created and filled with pip on first use.

mod serve_common;

use std::path::PathBuf;
use std::process::Command;

use serve_common::{Opts, Server};

/// The openai package version the tests pin.
const OPENAI_VERSION: &str = "3.57.0";

fn venv() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".cache/thermo/venv-openai")
}

/// The venv's python with the pinned `openai` importable, installing it when needed.
fn python_with_openai() -> PathBuf {
    let venv = venv();
    let python = venv.join("bin/python");
    let has = |python: &PathBuf| {
        Command::new(python)
            .args([
                "-c",
                &format!("import openai, sys; sys.exit(openai.__version__ != {OPENAI_VERSION:?})"),
            ])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has(&python) {
        return python;
    }
    if !python.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "python3 -m venv {} failed (install python3-venv)",
            venv.display()
        );
    }
    let ok = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", &format!("openai=={OPENAI_VERSION}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok && has(&python),
        "pip install openai=={OPENAI_VERSION} failed"
    );
    python
}

const SCRIPT: &str = r#"
import json, os, sys
from openai import OpenAI

client = OpenAI(base_url=os.environ["BASE_URL"], api_key="not-needed-on-loopback")
out = {}

models = client.models.list()
out["models"] = [m.id for m in models.data]

chat = client.chat.completions.create(
    model="tiny",
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
    max_tokens=20,
    temperature=0,
)
out["chat_text"] = chat.choices[0].message.content
out["chat_finish"] = chat.choices[0].finish_reason
out["chat_usage"] = chat.usage.model_dump()
out["chat_footprint"] = (chat.model_extra or {}).get("footprint")

stream = client.chat.completions.create(
    model="tiny",
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
    max_tokens=20,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
parts, usage = [], None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage.model_dump()
out["stream_text"] = "".join(parts)
out["stream_usage"] = usage

comp = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=10, temperature=0)
out["completion_text"] = comp.choices[0].text
streamed = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=10, temperature=0, stream=True)
out["completion_stream_text"] = "".join(c.choices[0].text for c in streamed if c.choices)

try:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    out["unknown_model"] = "no error"
except Exception as e:
    out["unknown_model"] = type(e).__name__ + ":" + str(getattr(e, "status_code", ""))

print(json.dumps(out))
"#;

#[test]
fn the_openai_python_client_chats_and_completes_whole_and_streamed() {
    let python = python_with_openai();
    let server = Server::start(Opts::default());
    let out = Command::new(&python)
        .args(["-c", SCRIPT])
        .env("BASE_URL", format!("{}/v1", server.base))
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .expect("running python");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json summary");
    assert_eq!(v["models"], serde_json::json!(["tiny"]));
    let chat = v["chat_text"].as_str().expect("chat text");
    assert!(!chat.is_empty() || v["chat_usage"]["completion_tokens"] == 0);
    assert_eq!(v["stream_text"], v["chat_text"], "{v}");
    assert_eq!(v["stream_usage"], v["chat_usage"], "{v}");
    assert!(v["chat_usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0);
    assert!(v["chat_footprint"]["energy_j"].is_number(), "{v}");
    assert_eq!(v["completion_stream_text"], v["completion_text"], "{v}");
    assert_eq!(v["unknown_model"], "NotFoundError:404", "{v}");
    assert!(!server.stderr().contains("panicked"));
}
