//! The official `openai` Python package talks to `thermo serve`: models, chat and text
//! completions, whole and streamed. The package lives in a venv under the thermo cache
//! (`~/.cache/thermo/venv-openai`), created and filled with pip on first use.

mod serve_common;

use std::process::Command;

use serve_common::{Opts, Server, python_with_openai};

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
