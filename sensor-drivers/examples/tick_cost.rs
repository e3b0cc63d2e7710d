//! Measures the CPU time of one control tick's sensor reads: a full snapshot of a fake
//! Raspberry Pi 5 sysfs tree, of a fake Jetson Orin Nano tree, and of the twin. Run with
//! `cargo run --release -p sensor-drivers --features test-util,sim --example tick_cost`.

use std::time::{Duration, Instant};

use sensor_drivers::linux::SysRoot;
use sensor_drivers::linux::fixtures::{write_jetson_orin_nano_tree, write_pi5_tree};
use sensor_drivers::linux::sensors::board_sensors;
use sensor_drivers::sensor_set::SensorSet;
use sensor_drivers::sim::live::CpuClock;
use sensor_drivers::sim::{ProcCpuClock, SensorRealism, SimBoard};

const TICKS: u32 = 20_000;

fn measure(label: &str, set: &mut SensorSet) -> Result<(), Box<dyn std::error::Error>> {
    let mut cpu = ProcCpuClock::default();
    let cpu_start = cpu.cpu_time()?;
    let wall_start = Instant::now();
    let mut read = 0usize;
    for tick in 0..TICKS {
        let snapshot = set.snapshot(u64::from(tick) * 1000);
        read += usize::from(snapshot.temps.iter().all(|t| t.error.is_none()));
    }
    let cpu_per_tick = cpu.cpu_time()?.saturating_sub(cpu_start) / TICKS;
    let wall_per_tick = wall_start.elapsed() / TICKS;
    println!(
        "{label:<40} {:>7.1} µs CPU/tick  {:>7.1} µs wall/tick  ({read}/{TICKS} ticks read every sensor)",
        micros(cpu_per_tick),
        micros(wall_per_tick)
    );
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pi5 = tempfile::tempdir()?;
    write_pi5_tree(pi5.path())?;
    let mut board = board_sensors(&SysRoot::new(pi5.path()), None)?;
    measure("fake Pi 5 tree (zone + throttle)", &mut board.sensors)?;

    let orin = tempfile::tempdir()?;
    write_jetson_orin_nano_tree(orin.path())?;
    let mut board = board_sensors(&SysRoot::new(orin.path()), None)?;
    measure(
        "fake Orin Nano tree (9 zones + 3 rails)",
        &mut board.sensors,
    )?;

    let twin = SimBoard::builtin("rpi5")?;
    let realism = SensorRealism::board(
        twin.with(|soc| soc.profile().clone())
            .as_ref()
            .ok_or("twin unavailable")?,
    )
    .with_noise(200.0)
    .with_seed(1);
    let mut set = twin.sensor_set(realism);
    measure("twin rpi5 (die, board, supply, flags)", &mut set)?;
    Ok(())
}
