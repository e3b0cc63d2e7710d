//! Fake-tree tests for the Linux readers and actuators: full Raspberry Pi 5 and Jetson Orin
//! Nano trees, a Pi 4 tree, a JetPack 4 IIO directory, and every kind of bad file.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "test-util")]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use sensor_drivers::linux::board::{BoardKind, choose_governing_zone, detect_board};
use sensor_drivers::linux::fixtures::{
    write_jetpack4_ina3221, write_jetson_orin_nano_tree, write_pi4_tree, write_pi5_tree,
};
use sensor_drivers::linux::hwmon::{ChannelKind, HwmonValue};
use sensor_drivers::linux::sensors::board_sensors;
use sensor_drivers::linux::{
    CpuFreq, CpufreqCap, Hwmon, KernelFan, PiThrottle, PolicyCap, PowerRail, SysRoot, SysfsError,
    ThermalZones, TripKind, ZoneMode, discover,
};
use sensor_drivers::sensor_set::Role;
use sensor_drivers::{
    ActuatorError, Fan, FreqCap, Health, KiloHertz, MilliAmps, MilliCelsius, MilliVolts,
    MilliWatts, Percent, PowerReading, PowerSensor, SensorError, TempSensor, ThrottleSource,
};

/// A root-owned read-only sysctl holding a plain number: writing it fails with EACCES even for
/// root, which stands in for a sysfs attribute the runtime may not write.
const READ_ONLY_NUMBER: &str = "/proc/sys/kernel/ngroups_max";

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap().trim().to_owned()
}

fn pi5() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_pi5_tree(dir.path()).unwrap();
    dir
}

fn orin() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_jetson_orin_nano_tree(dir.path()).unwrap();
    dir
}

#[test]
fn discovers_everything_a_pi_5_exposes() {
    let dir = pi5();
    let found = discover(&SysRoot::new(dir.path()));
    assert_eq!(found.board.kind, BoardKind::RaspberryPi5);
    assert_eq!(found.governing_zone.as_deref(), Some("cpu-thermal"));
    assert_eq!(found.zones.len(), 1);
    assert_eq!(found.zones[0].temp, Ok(MilliCelsius(52_150)));
    assert_eq!(found.zones[0].mode, Some(ZoneMode::Enabled));
    let chips: Vec<&str> = found.hwmon.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(chips, ["cpu_thermal", "rp1_adc", "pwmfan", "rpi_volt"]);
    let fan = &found.hwmon[2];
    assert!(
        fan.channels
            .iter()
            .any(|(ch, v)| ch.kind == ChannelKind::Fan
                && *v == Ok(HwmonValue::Fan(sensor_drivers::Rpm(2998))))
    );
    assert_eq!(found.cooling.len(), 1);
    assert_eq!(found.cooling[0].kind, "pwm-fan");
    assert_eq!(
        (found.cooling[0].cur_state, found.cooling[0].max_state),
        (Ok(1), Ok(4))
    );
    assert_eq!(found.cpufreq.len(), 1);
    assert_eq!(found.cpufreq[0].levels.len(), 10);
    assert_eq!(found.cpufreq[0].cpus, [0, 1, 2, 3]);
    let (path, flags) = found.throttle.as_ref().unwrap();
    assert!(path.ends_with("soc@107c000000:firmware/get_throttled"));
    assert_eq!(flags.map(|f| f.0), Ok(0));
    let listing = found.to_string();
    assert!(listing.contains("board: Raspberry Pi 5 (Raspberry Pi 5 Model B Rev 1.0)"));
    assert!(
        listing.contains("thermal_zone0 cpu-thermal: 52.1 °C, mode enabled, 5 trips [governing]")
    );
    assert!(listing.contains("cooling_device0 pwm-fan: state 1 of 4"));
}

#[test]
fn pi_5_zone_exposes_the_fan_trip_points() {
    let dir = pi5();
    let zones = ThermalZones::with_root(dir.path().join("sys/class/thermal"));
    let zone = zones.zone_by_type("cpu-thermal").unwrap().unwrap();
    let trips = zone.trip_points().unwrap();
    let active: Vec<i32> = trips
        .iter()
        .filter(|t| t.kind == TripKind::Active)
        .map(|t| t.temp.0)
        .collect();
    assert_eq!(active, [50_000, 60_000, 67_500, 75_000]);
    assert_eq!(trips[0].kind, TripKind::Critical);
    assert_eq!(trips[1].hysteresis, Some(MilliCelsius(5_000)));
}

#[test]
fn discovers_a_jetson_orin_nano_with_its_power_rails() {
    let dir = orin();
    let root = SysRoot::new(dir.path());
    let found = discover(&root);
    assert_eq!(found.board.kind, BoardKind::JetsonOrinNano);
    assert_eq!(found.zones.len(), 9);
    assert_eq!(found.governing_zone.as_deref(), Some("tj-thermal"));
    assert_eq!(found.power_rails, ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]);
    assert_eq!(found.cpufreq.len(), 2);
    assert_eq!(found.cpufreq[1].cpus, [4, 5]);
    assert!(found.throttle.is_none());
    let tj = found.zones.iter().find(|z| z.kind == "tj-thermal").unwrap();
    let critical = tj
        .trips
        .iter()
        .find(|t| t.kind == TripKind::Critical)
        .unwrap();
    assert_eq!(critical.temp, MilliCelsius(104_500));
}

#[test]
fn ina3221_rails_multiply_volts_by_amps_and_skip_the_sum_channel() {
    let dir = orin();
    let chip = Hwmon::with_root(dir.path().join("sys/class/hwmon"))
        .chip_by_name("ina3221")
        .unwrap()
        .unwrap();
    let mut rails = PowerRail::from_hwmon(&chip);
    assert_eq!(rails.len(), 3);
    assert_eq!(
        rails[0].read_power(),
        Ok(PowerReading {
            power: MilliWatts(5_006),
            voltage: Some(MilliVolts(5_072)),
            current: Some(MilliAmps(987)),
        })
    );
    assert_eq!(
        rails[2].read_power().map(|r| r.power),
        Ok(MilliWatts(1_496))
    );
    assert!(rails.iter().all(|r| !r.name().contains("sum")));
}

#[test]
fn jetpack_4_rails_report_milliwatts_directly() {
    let dir = tempfile::tempdir().unwrap();
    write_jetpack4_ina3221(dir.path()).unwrap();
    let mut rails = PowerRail::from_iio(dir.path());
    let names: Vec<&str> = rails.iter().map(|r| r.name()).collect();
    assert_eq!(names, ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]);
    assert_eq!(
        rails[0].read_power(),
        Ok(PowerReading {
            power: MilliWatts(3_120),
            voltage: Some(MilliVolts(5_056)),
            current: Some(MilliAmps(617)),
        })
    );
    assert_eq!(
        rails[1].read_power(),
        Ok(PowerReading::power_only(MilliWatts(78)))
    );
}

#[test]
fn a_negative_or_absurd_rail_power_is_implausible() {
    let dir = orin();
    let hwmon = dir.path().join("sys/class/hwmon/hwmon1");
    fs::write(hwmon.join("curr1_input"), "-5\n").unwrap();
    fs::write(hwmon.join("curr2_input"), "40000\n").unwrap();
    let chip = Hwmon::with_root(dir.path().join("sys/class/hwmon"))
        .chip_by_name("ina3221")
        .unwrap()
        .unwrap();
    let mut rails = PowerRail::from_hwmon(&chip);
    assert!(matches!(
        rails[0].read_power(),
        Err(SensorError::Implausible { .. })
    ));
    assert!(matches!(
        rails[1].read_power(),
        Err(SensorError::Implausible { .. })
    ));
}

#[test]
fn bad_temperature_files_are_typed_errors_never_cool_readings() {
    let dir = pi5();
    let temp = dir.path().join("sys/class/thermal/thermal_zone0/temp");
    let zones = ThermalZones::with_root(dir.path().join("sys/class/thermal"));
    let mut zone = zones.zones().unwrap().remove(0);
    let cases: [(Option<&str>, SensorError); 7] = [
        (None, SensorError::Missing),
        (Some(""), SensorError::Empty),
        (Some("\n"), SensorError::Empty),
        (Some("hot\n"), SensorError::Malformed),
        (Some("45.5\n"), SensorError::Malformed),
        (
            Some("-273150\n"),
            SensorError::Implausible { value: -273_150 },
        ),
        (
            Some("250000\n"),
            SensorError::Implausible { value: 250_000 },
        ),
    ];
    for (contents, expected) in cases {
        match contents {
            Some(text) => fs::write(&temp, text).unwrap(),
            None => fs::remove_file(&temp).unwrap(),
        }
        assert_eq!(zone.read_temp(), Err(expected), "{contents:?}");
    }
    fs::write(&temp, "99999999999\n").unwrap();
    assert!(matches!(
        zone.read_temp(),
        Err(SensorError::Implausible { .. })
    ));
    fs::write(&temp, "-5000\n").unwrap();
    assert_eq!(zone.read_temp(), Ok(MilliCelsius(-5_000)));
}

#[test]
fn sensor_set_health_follows_the_files() {
    let dir = pi5();
    let temp = dir.path().join("sys/class/thermal/thermal_zone0/temp");
    let mut board = board_sensors(&SysRoot::new(dir.path()), None).unwrap();
    assert_eq!(board.governing_zone.as_deref(), Some("cpu-thermal"));
    let ok = board.sensors.snapshot(0);
    assert_eq!(ok.soc_temp(), Some(MilliCelsius(52_150)));
    assert_eq!(ok.throttle, Some(Ok(sensor_drivers::ThrottleFlags(0))));
    fs::write(&temp, "250000\n").unwrap();
    assert_eq!(
        board.sensors.snapshot(1_000).governing().unwrap().health,
        Health::Implausible
    );
    fs::write(&temp, "").unwrap();
    let stale = board.sensors.snapshot(2_000);
    assert_eq!(stale.governing().unwrap().health, Health::Stale);
    assert_eq!(stale.soc_temp(), None);
    fs::remove_file(&temp).unwrap();
    let missing = board.sensors.snapshot(60_000);
    assert_eq!(missing.governing().unwrap().health, Health::Missing);
}

#[test]
fn jetson_sensor_set_governs_on_tj_and_reads_vdd_in_as_board_power() {
    let dir = orin();
    let mut board = board_sensors(&SysRoot::new(dir.path()), None).unwrap();
    let snapshot = board.sensors.snapshot(0);
    assert_eq!(snapshot.governing().unwrap().name, "tj-thermal");
    assert_eq!(snapshot.temps.len(), 9);
    assert_eq!(snapshot.board_power(), Some(MilliWatts(5_006)));
    let roles: Vec<Role> = snapshot.powers.iter().map(|p| p.role).collect();
    assert_eq!(roles, [Role::BoardPower, Role::RailPower, Role::RailPower]);
    let configured = board_sensors(&SysRoot::new(dir.path()), Some("gpu-thermal")).unwrap();
    assert_eq!(configured.governing_zone.as_deref(), Some("gpu-thermal"));
}

#[test]
fn manual_fan_control_disables_the_zone_and_restores_it() {
    let dir = pi5();
    let thermal = dir.path().join("sys/class/thermal");
    let zones = ThermalZones::with_root(&thermal);
    let zone = zones.zones().unwrap().remove(0);
    let device = zones.cooling_devices().unwrap().remove(0);
    let mode = thermal.join("thermal_zone0/mode");
    let state = thermal.join("cooling_device0/cur_state");
    let mut fan = KernelFan::new(device, Some(zone))
        .with_tachometer(dir.path().join("sys/class/hwmon/hwmon2/fan1_input"));
    assert_eq!(fan.duty(), Ok(Percent::new(25).unwrap()));
    assert_eq!(fan.set_duty(Percent::FULL), Ok(Percent::FULL));
    assert_eq!(read(&mode), "disabled");
    assert_eq!(read(&state), "4");
    assert!(fan.is_manual());
    assert_eq!(
        fan.set_duty(Percent::new(60).unwrap()),
        Ok(Percent::new(50).unwrap())
    );
    assert_eq!(read(&state), "2");
    assert_eq!(fan.speed(), Ok(Some(sensor_drivers::Rpm(2998))));
    fan.restore().unwrap();
    assert_eq!(read(&mode), "enabled");
    assert_eq!(read(&state), "1");
    assert!(!fan.is_manual());

    fan.set_duty(Percent::ZERO).unwrap();
    assert_eq!(read(&mode), "disabled");
    drop(fan);
    assert_eq!(read(&mode), "enabled");
    assert_eq!(read(&state), "1");
}

#[test]
fn a_zone_already_disabled_by_the_operator_stays_disabled() {
    let dir = pi5();
    let thermal = dir.path().join("sys/class/thermal");
    fs::write(thermal.join("thermal_zone0/mode"), "disabled\n").unwrap();
    let zones = ThermalZones::with_root(&thermal);
    let zone = zones.zones().unwrap().remove(0);
    let mut guard = zone.disable_governor().unwrap();
    assert_eq!(guard.previous(), ZoneMode::Disabled);
    guard.restore().unwrap();
    assert_eq!(read(&thermal.join("thermal_zone0/mode")), "disabled");
}

#[test]
fn fan_writes_refused_by_the_kernel_are_permission_errors() {
    let dir = pi5();
    let thermal = dir.path().join("sys/class/thermal");
    let state = thermal.join("cooling_device0/cur_state");
    fs::remove_file(&state).unwrap();
    symlink(READ_ONLY_NUMBER, &state).unwrap();
    fs::write(thermal.join("cooling_device0/max_state"), "99999999\n").unwrap();
    let zones = ThermalZones::with_root(&thermal);
    let zone = zones.zones().unwrap().remove(0);
    let device = zones.cooling_devices().unwrap().remove(0);
    let mut fan = KernelFan::new(device, Some(zone));
    assert_eq!(
        fan.set_duty(Percent::FULL),
        Err(ActuatorError::PermissionDenied)
    );
    assert_eq!(fan.restore(), Err(ActuatorError::PermissionDenied));
    assert_eq!(read(&thermal.join("thermal_zone0/mode")), "enabled");
}

#[test]
fn out_of_range_fan_states_are_refused_before_writing() {
    let dir = pi5();
    let zones = ThermalZones::with_root(dir.path().join("sys/class/thermal"));
    let device = zones.cooling_devices().unwrap().remove(0);
    assert!(matches!(
        device.set_state(5),
        Err(SysfsError::OutOfRange { max: 4, .. })
    ));
    assert_eq!(device.cur_state().unwrap(), 1);
}

#[test]
fn frequency_cap_snaps_to_levels_and_restores_the_original() {
    let dir = pi5();
    let cpufreq = CpuFreq::with_root(dir.path().join("sys/devices/system/cpu/cpufreq"));
    let max = dir
        .path()
        .join("sys/devices/system/cpu/cpufreq/policy0/scaling_max_freq");
    let policy = cpufreq.policies().unwrap().remove(0);
    let mut cap = PolicyCap::new(policy).unwrap();
    assert_eq!(cap.levels().first(), Some(&KiloHertz(1_500_000)));
    assert_eq!(cap.cap(), KiloHertz(2_400_000));
    assert_eq!(cap.set_cap(KiloHertz(1_850_000)), Ok(KiloHertz(1_800_000)));
    assert_eq!(read(&max), "1800000");
    assert_eq!(cap.set_cap(KiloHertz(100)), Ok(KiloHertz(1_500_000)));
    cap.restore().unwrap();
    assert_eq!(read(&max), "2400000");
    cap.set_cap(KiloHertz(2_000_000)).unwrap();
    drop(cap);
    assert_eq!(read(&max), "2400000");
}

#[test]
fn jetson_cap_applies_to_both_clusters() {
    let dir = orin();
    let base = dir.path().join("sys/devices/system/cpu/cpufreq");
    let mut cap = CpufreqCap::discover(&CpuFreq::with_root(&base))
        .unwrap()
        .unwrap();
    assert_eq!(cap.levels().len(), 20);
    assert_eq!(cap.set_cap(KiloHertz(1_000_000)), Ok(KiloHertz(960_000)));
    assert_eq!(read(&base.join("policy0/scaling_max_freq")), "960000");
    assert_eq!(read(&base.join("policy4/scaling_max_freq")), "960000");
    cap.restore().unwrap();
    assert_eq!(read(&base.join("policy4/scaling_max_freq")), "1510400");
}

#[test]
fn frequency_writes_refused_by_the_kernel_are_permission_errors() {
    let dir = pi5();
    let max = dir
        .path()
        .join("sys/devices/system/cpu/cpufreq/policy0/scaling_max_freq");
    fs::remove_file(&max).unwrap();
    symlink(READ_ONLY_NUMBER, &max).unwrap();
    let cpufreq = CpuFreq::with_root(dir.path().join("sys/devices/system/cpu/cpufreq"));
    let mut cap = PolicyCap::new(cpufreq.policies().unwrap().remove(0)).unwrap();
    assert_eq!(
        cap.set_cap(KiloHertz(1_500_000)),
        Err(ActuatorError::PermissionDenied)
    );
    assert_eq!(cap.restore(), Ok(()));
}

#[test]
fn cpufreq_without_a_table_offers_min_and_max() {
    let dir = pi5();
    let policy = dir.path().join("sys/devices/system/cpu/cpufreq/policy0");
    fs::remove_file(policy.join("scaling_available_frequencies")).unwrap();
    let cpufreq = CpuFreq::with_root(dir.path().join("sys/devices/system/cpu/cpufreq"));
    let levels = cpufreq.policies().unwrap()[0]
        .available_frequencies()
        .unwrap();
    assert_eq!(levels, [KiloHertz(1_500_000), KiloHertz(2_400_000)]);
    fs::write(policy.join("cpuinfo_max_freq"), "fast\n").unwrap();
    assert!(matches!(
        cpufreq.policies().unwrap()[0].available_frequencies(),
        Err(SysfsError::Malformed { .. })
    ));
}

#[test]
fn pi_4_throttle_flags_are_found_and_decoded() {
    let dir = tempfile::tempdir().unwrap();
    write_pi4_tree(dir.path()).unwrap();
    let mut throttle = PiThrottle::locate(dir.path()).unwrap();
    let flags = throttle.read_throttle().unwrap();
    assert!(!flags.any_live());
    assert_eq!(flags.0, 0x50000);
    fs::write(throttle.path(), "0xZZ\n").unwrap();
    assert_eq!(throttle.read_throttle(), Err(SensorError::Malformed));
    assert_eq!(detect_board(dir.path()).kind, BoardKind::RaspberryPi4);
}

#[test]
fn an_empty_root_discovers_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let found = discover(&SysRoot::new(dir.path()));
    assert!(found.is_empty());
    assert_eq!(found.board.kind, BoardKind::Unknown);
    assert!(found.to_string().contains("no thermal zones"));
    let board = board_sensors(&SysRoot::new(dir.path()), None).unwrap();
    assert!(board.sensors.is_empty());
}

#[test]
fn unknown_boards_govern_on_a_well_known_zone_or_the_first_readable_one() {
    let dir = tempfile::tempdir().unwrap();
    let thermal = dir.path().join("sys/class/thermal");
    for (index, kind, temp) in [
        (0, "acpitz", "garbage"),
        (1, "iwlwifi_1", "41000"),
        (2, "x86_pkg_temp", "55000"),
    ] {
        let zone = thermal.join(format!("thermal_zone{index}"));
        fs::create_dir_all(&zone).unwrap();
        fs::write(zone.join("type"), kind).unwrap();
        fs::write(zone.join("temp"), temp).unwrap();
    }
    let zones = ThermalZones::with_root(&thermal).zones().unwrap();
    let chosen = choose_governing_zone(BoardKind::Unknown, &zones, None).unwrap();
    assert_eq!(chosen.kind(), "x86_pkg_temp");
    fs::remove_dir_all(thermal.join("thermal_zone2")).unwrap();
    let zones = ThermalZones::with_root(&thermal).zones().unwrap();
    let chosen = choose_governing_zone(BoardKind::Unknown, &zones, None).unwrap();
    assert_eq!(chosen.kind(), "iwlwifi_1");
    assert!(choose_governing_zone(BoardKind::Unknown, &zones, Some("nope")).is_none());
}
