//! What the fuzz targets share: the case count (seconds by default, `THERMO_FUZZ_CASES` for a
//! longer run), a runner that never writes failure files, and the process's peak RSS.

use proptest::test_runner::{Config, TestRunner};

/// Peak resident memory every fuzz target must stay under, in kB.
pub const PEAK_RSS_LIMIT_KB: u64 = 512 * 1024;

/// Cases per strategy: `THERMO_FUZZ_CASES` when set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("THERMO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A deterministic runner of `cases` cases that keeps no regression files.
pub fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// `VmHWM` of `/proc/self/status` in kB: the most resident memory this process has had.
pub fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(u64::MAX)
}

/// Fails unless the peak RSS stayed under [`PEAK_RSS_LIMIT_KB`].
pub fn assert_peak_rss_bounded(target: &str) {
    let peak = peak_rss_kb();
    assert!(
        peak < PEAK_RSS_LIMIT_KB,
        "{target}: peak RSS {peak} kB, limit {PEAK_RSS_LIMIT_KB} kB"
    );
    eprintln!("{target}: peak RSS {peak} kB");
}
