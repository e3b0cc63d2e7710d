//! Reading every sensor of a board once per control tick must cost well under 1 ms of CPU.
//! This file holds a single test so the process's CPU time is this test's alone.
#![cfg(all(feature = "test-util", feature = "sim"))]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sensor_drivers::linux::SysRoot;
use sensor_drivers::linux::fixtures::write_pi5_tree;
use sensor_drivers::linux::sensors::board_sensors;
use sensor_drivers::sim::live::CpuClock;
use sensor_drivers::sim::{ProcCpuClock, SensorRealism, SimBoard};

const TICKS: u32 = 2_000;

#[test]
fn reading_a_whole_board_costs_well_under_a_millisecond_of_cpu_per_tick() {
    let dir = tempfile::tempdir().unwrap();
    write_pi5_tree(dir.path()).unwrap();
    let mut pi5 = board_sensors(&SysRoot::new(dir.path()), None)
        .unwrap()
        .sensors;
    let twin = SimBoard::builtin("rpi5").unwrap();
    let mut sim = twin.sensor_set(SensorRealism::ideal().with_noise(200.0).with_quantum(50));
    let mut cpu = ProcCpuClock::default();
    for (label, set) in [("fake Pi 5 tree", &mut pi5), ("twin", &mut sim)] {
        let start = cpu.cpu_time().unwrap();
        for tick in 0..TICKS {
            let snapshot = set.snapshot(u64::from(tick) * 1000);
            // A fake tree's value never changes, so the stuck check may fire; the read must not fail.
            assert_eq!(snapshot.governing().unwrap().error, None);
        }
        let per_tick = cpu.cpu_time().unwrap().saturating_sub(start) / TICKS;
        println!(
            "{label}: {:.1} µs CPU per tick",
            per_tick.as_secs_f64() * 1e6
        );
        assert!(
            per_tick < Duration::from_micros(250),
            "{label}: {per_tick:?} per tick"
        );
    }
}
