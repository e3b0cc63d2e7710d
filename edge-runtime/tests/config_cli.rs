//! `thermo config`: the effective configuration from file, environment and flags, every
//! invalid value reported at once with its key path, and the systemd device drop-in.

use std::process::{Command, Output};

fn thermo(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_thermo"));
    cmd.args(args).env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running thermo")
}

#[test]
fn config_prints_the_layers_merged_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("thermo.toml");
    std::fs::write(
        &file,
        "[service]\nqueue_bound = 3\nworkers = 2\n[model]\nthreads = 3\n",
    )
    .expect("write");
    let out = thermo(
        &[
            "config",
            "--config",
            file.to_str().unwrap_or_default(),
            "--threads",
            "4",
            "--set",
            "service.max_tokens_limit=1000",
        ],
        &[
            ("THERMO_SERVICE_WORKERS", "5"),
            ("THERMO_SERVICE_API_TOKEN", "very-secret-token"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: toml::Table = toml::from_str(&stdout).expect("the output is TOML");
    let service = v["service"].as_table().expect("[service]");
    assert_eq!(service["queue_bound"].as_integer(), Some(3), "file");
    assert_eq!(
        service["workers"].as_integer(),
        Some(5),
        "environment over file"
    );
    assert_eq!(
        service["max_tokens_limit"].as_integer(),
        Some(1000),
        "--set"
    );
    assert_eq!(
        v["model"]["threads"].as_integer(),
        Some(4),
        "flag over file"
    );
    assert_eq!(
        service["listen"].as_str(),
        Some("127.0.0.1:8080"),
        "default"
    );
    assert!(
        !stdout.contains("very-secret-token"),
        "the token is printed"
    );
}

#[test]
fn every_invalid_value_is_reported_at_once_with_its_key_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("thermo.toml");
    std::fs::write(
        &file,
        "[service]\nworkers = 0\nlisten = \"0.0.0.0:80\"\n[model]\nformat = \"q8\"\n[governor]\nsetpoint_c = \"hot\"\n",
    )
    .expect("write");
    let out = thermo(
        &["config", "--config", file.to_str().unwrap_or_default()],
        &[("THERMO_SERVICE_QUEUE_BOUND", "-1")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
    for path in [
        "service.workers",
        "service.listen",
        "service.queue_bound",
        "model.format",
        "governor.setpoint_c",
    ] {
        assert!(stderr.contains(path), "{path} missing: {stderr}");
    }
}

#[test]
fn a_missing_config_file_named_on_the_command_line_is_an_error() {
    let out = thermo(&["config", "--config", "/nonexistent/thermo.toml"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/thermo.toml"));
}

#[test]
fn the_systemd_drop_in_allows_exactly_the_configured_buses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("thermo.toml");
    std::fs::write(
        &file,
        "[[sensors.i2c]]\nname = \"board\"\nbus = \"/dev/i2c-1\"\naddress = 0x40\nchip = \"ina219\"\n\
         role = \"board_power\"\nshunt_micro_ohms = 100000\nmax_current_ma = 3200\n\
         [[sensors.i2c]]\nname = \"amb\"\nbus = \"/dev/i2c-3\"\naddress = 0x48\nchip = \"tmp102\"\nrole = \"ambient_temp\"\n",
    )
    .expect("write");
    let out = thermo(
        &[
            "config",
            "--config",
            file.to_str().unwrap_or_default(),
            "--systemd-devices",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let allowed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("DeviceAllow="))
        .collect();
    assert_eq!(allowed, ["/dev/i2c-1 rw", "/dev/i2c-3 rw"]);
}
