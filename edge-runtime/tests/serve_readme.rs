//! The service manual's (`docs/service.md`) curl examples, run verbatim with bash against `thermo serve` on
//! 127.0.0.1:8080 (the tiny model, served under the default model's id).

mod serve_common;

use std::process::Command;

use serve_common::{Opts, Server};

/// The shell commands of the service manual's `serve-curl` block, continuation lines joined.
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/service.md"))
            .expect("docs/service.md");
    let start = readme
        .find("<!-- serve-curl:begin")
        .expect("the serve-curl block");
    let end = readme[start..]
        .find("<!-- serve-curl:end -->")
        .map(|e| start + e)
        .expect("the end of the serve-curl block");
    let block = &readme[start..end];
    let mut commands = vec![];
    let mut current = String::new();
    for line in block.lines() {
        if line.starts_with("```") || line.starts_with("<!--") || line.trim().is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if !line.ends_with('\\') {
            commands.push(std::mem::take(&mut current));
        }
    }
    commands
}

#[test]
fn the_readme_curl_examples_work_verbatim() {
    let commands = readme_commands();
    assert!(commands.len() >= 5, "{commands:?}");
    let server = Server::start(Opts {
        sets: vec!["model.id=\"SmolLM2-135M-Instruct-ggml\""],
        port: Some(8080),
        ..Opts::default()
    });
    for cmd in &commands {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", cmd])
            .output()
            .expect("running bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{cmd}failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !stdout.contains("\"error\""),
            "{cmd}answered an error: {stdout}"
        );
        if cmd.contains("/metrics") {
            assert!(
                stdout.contains("llamacpp:tokens_predicted_total"),
                "{stdout}"
            );
        } else if cmd.contains("\"stream\": true") {
            assert!(stdout.trim_end().ends_with("data: [DONE]"), "{stdout}");
        } else {
            let v: serde_json::Value =
                serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{cmd}{e}: {stdout}"));
            assert!(v.is_object());
        }
    }
    assert!(!server.stderr().contains("panicked"));
}
