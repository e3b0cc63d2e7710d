//! The `thermo` binary as a user runs it: `thermo sensors` on a fake Raspberry Pi 5 tree, on an
//! empty root, on the simulated SoC and with a bad profile, and `--help` for every subcommand.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use sensor_drivers::linux::fixtures::write_pi5_tree;

fn thermo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thermo"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn root_arg(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn sensors_once_on_a_pi5_tree_prints_the_governing_zone_and_its_temperature() {
    let dir = tempfile::tempdir().unwrap();
    write_pi5_tree(dir.path()).unwrap();
    let output = thermo(&["sensors", "--once", "--root", &root_arg(dir.path())]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("Raspberry Pi 5"), "{stdout}");
    assert!(stdout.contains("governing: cpu-thermal"), "{stdout}");
    let reading = stdout
        .split("readings:")
        .nth(1)
        .expect("a readings section");
    let zone_line = reading
        .lines()
        .find(|l| l.trim_start().starts_with("cpu-thermal"))
        .expect("a cpu-thermal reading");
    assert!(zone_line.contains("52.1 °C"), "{zone_line}");
    assert!(zone_line.trim_end().ends_with("ok"), "{zone_line}");
    assert!(stdout.contains("pwm-fan"), "{stdout}");
    assert!(stdout.contains("frequency ceiling 2400 MHz"), "{stdout}");
    assert!(stdout.contains("throttle flags 0x0"), "{stdout}");
    assert!(stdout.contains("CPUs, memory"), "{stdout}");
}

#[test]
fn sensors_once_on_a_corrupt_pi5_zone_shows_an_error_not_a_temperature() {
    let dir = tempfile::tempdir().unwrap();
    write_pi5_tree(dir.path()).unwrap();
    std::fs::write(
        dir.path().join("sys/class/thermal/thermal_zone0/temp"),
        "garbage\n",
    )
    .unwrap();
    let output = thermo(&["sensors", "--once", "--root", &root_arg(dir.path())]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(!stdout.contains("no thermal hardware"), "{stdout}");
    let reading = stdout.split("readings:").nth(1).unwrap();
    let zone_line = reading
        .lines()
        .find(|l| l.trim_start().starts_with("cpu-thermal"))
        .unwrap();
    assert!(!zone_line.contains("°C"), "{zone_line}");
    assert!(zone_line.contains("error"), "{zone_line}");
}

#[test]
fn sensors_once_on_an_empty_root_says_there_is_no_thermal_hardware_and_offers_the_twin() {
    let dir = tempfile::tempdir().unwrap();
    let output = thermo(&["sensors", "--once", "--root", &root_arg(dir.path())]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("no thermal hardware"), "{stdout}");
    assert!(stdout.contains("thermo sensors --sim rpi5"), "{stdout}");
    assert!(!stdout.contains("readings"), "{stdout}");
}

#[test]
fn sensors_once_on_the_twin_prints_a_temperature() {
    let output = thermo(&["sensors", "--once", "--sim", "rpi5"]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("simulated SoC `rpi5`"), "{stdout}");
    let reading = stdout.split("readings:").nth(1).unwrap();
    let die_line = reading
        .lines()
        .find(|l| l.trim_start().starts_with("cpu-thermal"))
        .expect("the twin's die reading");
    let celsius: f64 = die_line
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a number in {die_line:?}"));
    assert!((20.0..60.0).contains(&celsius), "{die_line}");
    assert!(die_line.contains("°C"), "{die_line}");
    assert!(stdout.contains("sim-supply"), "{stdout}");
}

#[test]
fn sensors_with_an_unknown_profile_fails_naming_it_and_the_builtin_ones() {
    let output = thermo(&["sensors", "--once", "--sim", "nonsense"]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("\"nonsense\""), "{stderr}");
    assert!(stderr.contains("rpi5-active"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn sensors_rejects_a_zero_interval() {
    let output = thermo(&["sensors", "--interval-ms", "0"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("--interval-ms"),
        "{}",
        text(&output.stderr)
    );
}

/// The subcommand names listed under `Commands:` in `thermo --help`, without `help`.
fn subcommands() -> Vec<String> {
    let output = thermo(&["--help"]);
    assert!(output.status.success());
    let stdout = text(&output.stdout);
    stdout
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_subcommand_answers_help() {
    let names = subcommands();
    assert!(names.iter().any(|n| n == "sensors"), "{names:?}");
    assert!(names.len() >= 2, "{names:?}");
    for name in names {
        let output = thermo(&[&name, "--help"]);
        let stdout = text(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: {stdout}{}",
            text(&output.stderr)
        );
        assert!(
            stdout.contains(&format!("Usage: thermo {name}")),
            "{name}: {stdout}"
        );
    }
}

#[test]
fn every_benchmark_is_a_bench_subcommand_and_the_old_spellings_still_work() {
    for name in ["llm", "governor", "eco", "train", "index"] {
        let output = thermo(&["bench", name, "--help"]);
        let stdout = text(&output.stdout);
        assert!(output.status.success(), "bench {name}: {stdout}");
        assert!(
            stdout.contains(&format!("Usage: thermo bench {name}")),
            "bench {name}: {stdout}"
        );
    }
    let old = thermo(&["bench-llm", "--help"]);
    assert!(old.status.success(), "{}", text(&old.stderr));
    assert!(text(&old.stdout).contains("--repeat"));
    assert!(!subcommands().iter().any(|n| n == "bench-llm"));
    let train = thermo(&["train", "--help"]);
    assert!(train.status.success());
    let hidden = text(&train.stdout);
    assert!(
        !hidden.lines().any(|l| {
            let flag = l.trim_start();
            flag == "--bench" || flag.starts_with("--bench ")
        }),
        "{hidden}"
    );
    let bench_train = thermo(&["bench", "train", "--help"]);
    assert!(text(&bench_train.stdout).contains("--bench-top"));
}
