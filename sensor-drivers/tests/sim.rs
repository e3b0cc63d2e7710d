//! Tests of the simulated SoC: the fit of each built-in profile to its published figures,
//! determinism, energy accounting, firmware protection, the fan, the traits, sensor realism,
//! custom TOML profiles, and the live and offline drivers.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sensor_drivers::sensor_set::Role;
use sensor_drivers::sim::live::{CpuClock, LiveDriver, LiveError, WallClock};
use sensor_drivers::sim::{
    BUILTIN_PROFILES, Node, Profile, ProfileError, SensorRealism, SimBoard, SimSoc, Workload,
    run_offline,
};
use sensor_drivers::{
    ActuatorError, Fan, FreqCap, Health, HealthPolicy, KiloHertz, MilliCelsius, Percent,
    PlausibleRange, PowerSensor, SensorError, TempSensor, ThrottleSource,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

struct StepResponse {
    idle_c: f64,
    idle_w: f64,
    load_w: f64,
    t_soft_s: Option<u32>,
    at_1_2_3_min: [f64; 3],
    mean_10_30_min: f64,
    board_30_min: f64,
    max_late_c: f64,
    min_late_c: f64,
    events: u64,
}

/// Idle steady state, then all cores busy at the top clock for 30 simulated minutes.
fn step_response(name: &str) -> StepResponse {
    let mut soc = SimSoc::builtin(name).unwrap();
    let idle = soc.truth();
    soc.set_workload(Workload::all_cores(soc.profile().cores));
    let soft = f64::from(soc.profile().firmware.soft_limit_mc) / 1000.0;
    let mut response = StepResponse {
        idle_c: idle.die_c,
        idle_w: idle.power_mw / 1000.0,
        load_w: 0.0,
        t_soft_s: None,
        at_1_2_3_min: [0.0; 3],
        mean_10_30_min: 0.0,
        board_30_min: 0.0,
        max_late_c: f64::MIN,
        min_late_c: f64::MAX,
        events: 0,
    };
    let mut late = 0.0;
    for second in 1..=1800u32 {
        soc.step(secs(1));
        let truth = soc.truth();
        if second == 1 {
            response.load_w = truth.power_mw / 1000.0;
        }
        if response.t_soft_s.is_none() && truth.die_c >= soft {
            response.t_soft_s = Some(second);
        }
        match second {
            60 => response.at_1_2_3_min[0] = truth.die_c,
            120 => response.at_1_2_3_min[1] = truth.die_c,
            180 => response.at_1_2_3_min[2] = truth.die_c,
            _ => {}
        }
        if second > 600 {
            late += truth.die_c;
            response.max_late_c = response.max_late_c.max(truth.die_c);
            response.min_late_c = response.min_late_c.min(truth.die_c);
        }
    }
    let end = soc.truth();
    response.mean_10_30_min = late / 1200.0;
    response.board_30_min = end.board_c;
    response.events = end.throttle_events;
    response
}

fn near(value: f64, target: f64, tolerance: f64) -> bool {
    (value - target).abs() <= tolerance
}

#[test]
fn builtin_profiles_reproduce_their_published_step_response() {
    // rpi5, bare: idle ~40 °C; 80 °C within about a minute of `stress -c 4`; then held in the
    // firmware's 80-85 °C band (published 82.3 / 84.5 / 86.2 °C at 1 / 2 / 3 min, 81 °C mean).
    let pi5 = step_response("rpi5");
    assert!(near(pi5.idle_c, 40.5, 0.5), "rpi5 idle {}", pi5.idle_c);
    assert!(near(pi5.idle_w, 2.7, 0.01) && near(pi5.load_w, 8.1, 0.05));
    assert!(
        matches!(pi5.t_soft_s, Some(55..=70)),
        "rpi5 t80 {:?}",
        pi5.t_soft_s
    );
    for (got, expected) in pi5.at_1_2_3_min.iter().zip([79.5, 81.9, 82.5]) {
        assert!(near(*got, expected, 0.5), "rpi5 {got} vs {expected}");
    }
    assert!(
        near(pi5.mean_10_30_min, 83.3, 0.5),
        "rpi5 mean {}",
        pi5.mean_10_30_min
    );
    assert!(pi5.max_late_c < 85.0 && pi5.min_late_c > 80.0);
    assert_eq!(pi5.events, 1);

    // rpi5 with the Active Cooler: 55.4 / 58.2 / 59.8 °C published, ~61 °C sustained.
    let active = step_response("rpi5-active");
    assert!(
        near(active.idle_c, 40.0, 0.5),
        "active idle {}",
        active.idle_c
    );
    for (got, expected) in active.at_1_2_3_min.iter().zip([54.6, 58.2, 60.4]) {
        assert!(near(*got, expected, 0.5), "active {got} vs {expected}");
    }
    assert!(
        near(active.mean_10_30_min, 61.7, 0.5),
        "active mean {}",
        active.mean_10_30_min
    );
    assert_eq!(active.t_soft_s, None);
    assert_eq!(active.events, 0);

    // rpi4, bare at 27.3 °C: package (board node) +38.5 K; die throttles within minutes.
    let pi4 = step_response("rpi4");
    assert!(
        near(pi4.board_30_min - 27.3, 38.5, 1.0),
        "rpi4 board {}",
        pi4.board_30_min
    );
    assert!(near(pi4.idle_w, 2.7, 0.01) && near(pi4.load_w, 6.4, 0.05));
    assert!(
        matches!(pi4.t_soft_s, Some(180..=220)),
        "rpi4 t80 {:?}",
        pi4.t_soft_s
    );
    assert!(
        near(pi4.mean_10_30_min, 82.8, 0.5),
        "rpi4 mean {}",
        pi4.mean_10_30_min
    );

    // jetson-orin-nano: idle VDD_IN ~5 W; all-core CPU load never reaches the 95 °C trip.
    let orin = step_response("jetson-orin-nano");
    assert!(near(orin.idle_w, 5.0, 0.01), "orin idle {}", orin.idle_w);
    assert!(near(orin.idle_c, 51.5, 0.5) && near(orin.load_w, 9.2, 0.05));
    assert_eq!(orin.t_soft_s, None);
    assert!(
        orin.max_late_c < 75.0 && orin.min_late_c > 68.0,
        "{} {}",
        orin.min_late_c,
        orin.max_late_c
    );
    assert!(
        near(orin.mean_10_30_min, 71.7, 0.5),
        "orin mean {}",
        orin.mean_10_30_min
    );
}

#[test]
fn stepping_is_deterministic_and_independent_of_tick_size() {
    let run = |ticks: u32, tick: Duration| {
        let mut soc = SimSoc::builtin("rpi5-active").unwrap();
        soc.set_workload(Workload {
            threads: 3,
            duty: 0.7,
        });
        for _ in 0..ticks {
            soc.step(tick);
        }
        soc.truth()
    };
    let a = run(300, secs(1));
    assert_eq!(a, run(300, secs(1)));
    let b = run(3000, Duration::from_millis(100));
    assert!(
        (a.die_c - b.die_c).abs() < 1e-6,
        "{} vs {}",
        a.die_c,
        b.die_c
    );
    assert!((a.energy_j - b.energy_j).abs() < 1e-6);
}

#[test]
fn ground_truth_energy_integrates_power_over_time() {
    let mut soc = SimSoc::builtin("rpi5").unwrap();
    soc.step(secs(100));
    assert!(
        (soc.truth().energy_j - 270.0).abs() < 1e-6,
        "{}",
        soc.truth().energy_j
    );
    let board = SimBoard::new(soc);
    let mut sensor = board.power_sensor(SensorRealism::ideal());
    board.with(|soc| soc.set_workload(Workload::all_cores(4)));
    let mut measured_j = 0.0;
    for _ in 0..600 {
        board.step(secs(1));
        measured_j += f64::from(sensor.read_power().unwrap().power.0) / 1000.0;
    }
    let truth_j = board.with(|soc| soc.truth().energy_j).unwrap() - 270.0;
    assert!(
        (measured_j - truth_j).abs() / truth_j < 0.01,
        "{measured_j} vs {truth_j}"
    );
    assert!(truth_j > 600.0 * 4.0 && truth_j < 600.0 * 8.2);
}

#[test]
fn a_governor_cap_keeps_the_bare_pi_5_out_of_firmware_throttling() {
    let board = SimBoard::builtin("rpi5").unwrap();
    let mut cap = board.freq_cap();
    assert_eq!(cap.levels().len(), 10);
    assert_eq!(cap.set_cap(KiloHertz(1_550_000)), Ok(KiloHertz(1_500_000)));
    board.with(|soc| soc.set_workload(Workload::all_cores(4)));
    board.step(secs(3600));
    let capped = board.with(|soc| soc.truth()).unwrap();
    assert_eq!(capped.throttle_events, 0);
    assert!(capped.die_c < 75.0, "{}", capped.die_c);
    assert_eq!(capped.firmware_limited_s, 0.0);
    cap.restore().unwrap();
    assert_eq!(cap.cap(), KiloHertz(2_400_000));
    board.step(secs(600));
    let free = board.with(|soc| soc.truth()).unwrap();
    assert_eq!(free.throttle_events, 1);
    assert!(free.firmware_limited_s > 0.0);
    assert!(free.effective_khz < 2_400_000.0 && free.effective_khz > 1_500_000.0);
    let flags = board.throttle().read_throttle().unwrap();
    assert!(flags.soft_temp_limit() && flags.freq_capped() && !flags.under_voltage());
}

#[test]
fn firmware_throttling_costs_work() {
    let work = |name: &str| {
        let mut soc = SimSoc::builtin(name).unwrap();
        run_offline(&mut soc, secs(1800), secs(1), |soc, _| {
            soc.set_workload(Workload::all_cores(4));
        })
    };
    let bare = work("rpi5");
    let cooled = work("rpi5-active");
    assert!(
        bare.cycles < cooled.cycles * 0.9,
        "{} vs {}",
        bare.cycles,
        cooled.cycles
    );
    assert!(bare.firmware_limited_s > 1500.0);
    assert_eq!(cooled.firmware_limited_s, 0.0);
    let full = 4.0 * 2.4e9 * 1800.0;
    assert!((cooled.cycles - full).abs() / full < 1e-9);
}

#[test]
fn the_fan_follows_its_curve_until_overridden_and_back_after_restore() {
    let board = SimBoard::builtin("rpi5-active").unwrap();
    let mut fan = board.fan().unwrap();
    assert_eq!(fan.duty(), Ok(Percent::ZERO));
    board.with(|soc| soc.set_workload(Workload::all_cores(4)));
    board.step(secs(1200));
    assert_eq!(fan.duty(), Ok(Percent::new(50).unwrap()));
    assert_eq!(fan.set_duty(Percent::FULL), Ok(Percent::FULL));
    board.step(secs(1200));
    let forced = board.with(|soc| soc.truth()).unwrap();
    assert!(forced.die_c < 55.0, "{}", forced.die_c);
    fan.restore().unwrap();
    board.step(secs(1200));
    let auto = board.with(|soc| soc.truth()).unwrap();
    assert!(auto.die_c > 58.0, "{}", auto.die_c);
    assert!(SimBoard::builtin("rpi5").unwrap().fan().is_none());
    let mut bare = SimSoc::builtin("rpi4").unwrap();
    assert_eq!(
        bare.set_fan_override(Some(Percent::FULL)),
        Err(ActuatorError::Unsupported)
    );
}

#[test]
fn overheating_past_critical_shuts_the_board_down_and_its_sensors_go_dark() {
    let board = SimBoard::builtin("jetson-orin-nano").unwrap();
    let mut die = board.temp_sensor(Node::Die, SensorRealism::ideal());
    let mut fan = board.fan().unwrap();
    fan.set_duty(Percent::ZERO).unwrap();
    board.with(|soc| {
        soc.set_ambient(MilliCelsius(80_000));
        soc.set_workload(Workload::all_cores(6));
    });
    board.step(secs(7200));
    let truth = board.with(|soc| soc.truth()).unwrap();
    assert!(truth.shut_down);
    assert!(truth.peak_die_c >= 104.5);
    assert_eq!(truth.power_mw, 0.0);
    assert_eq!(die.read_temp(), Err(SensorError::Unavailable));
}

#[test]
fn sensor_noise_is_seeded_and_quantised_to_the_board_resolution() {
    let board = SimBoard::builtin("rpi5").unwrap();
    let realism = SensorRealism::ideal()
        .with_noise(300.0)
        .with_quantum(50)
        .with_seed(42);
    let mut a = board.temp_sensor(Node::Die, realism.clone());
    let mut b = board.temp_sensor(Node::Die, realism);
    let truth = board.with(|soc| soc.die_temp()).unwrap().0;
    let readings: Vec<i32> = (0..2000).map(|_| a.read_temp().unwrap().0).collect();
    let again: Vec<i32> = (0..2000).map(|_| b.read_temp().unwrap().0).collect();
    assert_eq!(readings, again);
    assert!(readings.iter().all(|r| r % 50 == 0));
    let mean = readings.iter().map(|r| f64::from(*r)).sum::<f64>() / 2000.0;
    let sd = (readings
        .iter()
        .map(|r| (f64::from(*r) - mean).powi(2))
        .sum::<f64>()
        / 2000.0)
        .sqrt();
    assert!((mean - f64::from(truth)).abs() < 30.0, "{mean} vs {truth}");
    assert!((sd - 300.0).abs() < 30.0, "{sd}");
}

#[test]
fn latency_shows_the_past_and_dropout_fails_reads() {
    let board = SimBoard::builtin("rpi5").unwrap();
    let mut now = board.temp_sensor(Node::Die, SensorRealism::ideal());
    let mut late = board.temp_sensor(Node::Die, SensorRealism::ideal().with_latency(secs(10)));
    board.with(|soc| soc.set_workload(Workload::all_cores(4)));
    for _ in 0..20 {
        board.step(secs(1));
    }
    let ten_ago = {
        let fresh = SimBoard::builtin("rpi5").unwrap();
        fresh.with(|soc| soc.set_workload(Workload::all_cores(4)));
        for _ in 0..10 {
            fresh.step(secs(1));
        }
        fresh.with(|soc| soc.die_temp()).unwrap()
    };
    assert_eq!(late.read_temp(), Ok(ten_ago));
    assert!(now.read_temp().unwrap() > ten_ago);

    let mut always = board.temp_sensor(Node::Die, SensorRealism::ideal().with_dropout(1.0));
    assert_eq!(always.read_temp(), Err(SensorError::Unavailable));
    let mut flaky = board.temp_sensor(
        Node::Die,
        SensorRealism::ideal().with_dropout(0.25).with_seed(9),
    );
    let failures = (0..4000).filter(|_| flaky.read_temp().is_err()).count();
    assert!((800..1200).contains(&failures), "{failures}");
}

#[test]
fn a_stuck_die_sensor_is_flagged_by_the_health_monitor() {
    let board = SimBoard::builtin("rpi5").unwrap();
    let realism = SensorRealism::ideal()
        .with_noise(100.0)
        .with_stuck_after(secs(30));
    let mut set = sensor_drivers::sensor_set::SensorSet::new();
    set.add_temp_with(
        "cpu-thermal",
        Role::SocTemp,
        Box::new(board.temp_sensor(Node::Die, realism)),
        PlausibleRange::SOC,
        HealthPolicy {
            stale_after_ms: 3_000,
            stuck_after_reads: 10,
        },
    );
    board.with(|soc| soc.set_workload(Workload::all_cores(4)));
    let mut healths = Vec::new();
    for tick in 0..60u64 {
        board.step(secs(1));
        healths.push(set.snapshot(tick * 1000).temps[0].health);
    }
    assert!(healths[..25].iter().all(|h| *h == Health::Ok));
    assert_eq!(healths.last(), Some(&Health::Stuck));
    assert_eq!(set.snapshot(60_000).soc_temp(), None);
}

#[test]
fn the_twin_builds_the_same_sensor_set_as_a_board() {
    let board = SimBoard::builtin("rpi5").unwrap();
    let mut set = board.sensor_set(SensorRealism::ideal());
    let snapshot = set.snapshot(0);
    assert_eq!(snapshot.governing().unwrap().name, "cpu-thermal");
    assert_eq!(snapshot.soc_temp(), board.with(|soc| soc.die_temp()));
    assert_eq!(
        snapshot.board_power(),
        Some(sensor_drivers::MilliWatts(2700))
    );
    assert_eq!(snapshot.throttle.unwrap().map(|f| f.0), Ok(0));
    assert_eq!(snapshot.worst_health(), Health::Ok);
}

#[test]
fn a_panicked_holder_makes_the_twin_unavailable_not_cool() {
    let board = SimBoard::builtin("rpi5").unwrap();
    let mut die = board.temp_sensor(Node::Die, SensorRealism::ideal());
    let poisoner = board.clone();
    let joined = std::thread::spawn(move || {
        poisoner.with(|_| panic!("simulated crash while holding the SoC"));
    })
    .join();
    assert!(joined.is_err());
    assert_eq!(die.read_temp(), Err(SensorError::Unavailable));
    assert!(!board.step(secs(1)));
    assert_eq!(
        board.freq_cap().set_cap(KiloHertz(1)),
        Err(ActuatorError::Unavailable)
    );
}

#[test]
fn custom_profiles_load_from_toml_and_bad_ones_are_refused() {
    for name in BUILTIN_PROFILES {
        let profile = Profile::builtin(name).unwrap();
        let text = profile.to_toml_string().unwrap();
        assert_eq!(Profile::from_toml_str(&text).unwrap(), profile, "{name}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("my-case.toml");
    let custom = Profile::builtin_toml("rpi5")
        .unwrap()
        .replace("name = \"rpi5\"", "name = \"pi5-in-a-box\"")
        .replace(
            "board_to_ambient_k_per_w = 6.0",
            "board_to_ambient_k_per_w = 12.0",
        );
    std::fs::write(&path, custom).unwrap();
    let profile = Profile::load(path.to_str().unwrap()).unwrap();
    assert_eq!(profile.name, "pi5-in-a-box");
    let boxed = SimSoc::new(profile).unwrap();
    assert!(boxed.truth().die_c > SimSoc::builtin("rpi5").unwrap().truth().die_c + 10.0);

    let base = Profile::builtin_toml("rpi5").unwrap();
    let broken = [
        base.replace("hard_limit_mc = 85000", "hard_limit_mc = 75000"),
        base.replace("{ khz = 1600000, mv = 735 }", "{ khz = 1400000, mv = 735 }"),
        base.replace("die_capacity_j_per_k = 4.0", "die_capacity_j_per_k = -4.0"),
        base.replace("cores = 4", "cores = 0"),
        base.replace("cores = 4", "cores = 4\ncolour = \"red\""),
        base.replace("idle_mw = 2700", "idle_mw = \"lots\""),
        base.replace("soft_floor_khz = 1500000", "soft_floor_khz = 9000000"),
    ];
    for text in broken {
        assert!(Profile::from_toml_str(&text).is_err());
    }
    assert!(matches!(
        Profile::load("rpi9"),
        Err(ProfileError::Unknown(_))
    ));
    assert!(matches!(
        Profile::from_file(&dir.path().join("absent.toml")),
        Err(ProfileError::Io { .. })
    ));
}

#[test]
fn offline_runs_thousands_of_times_faster_than_real_time() {
    let mut soc = SimSoc::builtin("rpi5-active").unwrap();
    let start = Instant::now();
    let summary = run_offline(
        &mut soc,
        secs(6 * 3600),
        Duration::from_millis(500),
        |soc, t| {
            let busy = if (t.as_secs() / 300) % 2 == 0 { 4 } else { 1 };
            soc.set_workload(Workload::all_cores(busy));
        },
    );
    let wall = start.elapsed();
    assert_eq!(summary.simulated, secs(6 * 3600));
    assert_eq!(summary.ticks, 43_200);
    let speedup = summary.simulated.as_secs_f64() / wall.as_secs_f64();
    assert!(speedup > 1000.0, "only {speedup:.0}x real time");
    assert!(summary.peak_die_c < 65.0 && summary.mean_die_c > 45.0);
    assert!(summary.energy_j > 6.0 * 3600.0 * 4.0);
}

struct FakeCpu(Vec<Duration>);

impl CpuClock for FakeCpu {
    fn cpu_time(&mut self) -> Result<Duration, LiveError> {
        Ok(if self.0.len() > 1 {
            self.0.remove(0)
        } else {
            self.0[0]
        })
    }
}

struct FakeWall(Vec<Duration>);

impl WallClock for FakeWall {
    fn now(&mut self) -> Duration {
        if self.0.len() > 1 {
            self.0.remove(0)
        } else {
            self.0[0]
        }
    }
}

#[test]
fn live_driving_turns_cpu_time_into_busy_cores_and_scales_time() {
    let board = SimBoard::builtin("rpi5").unwrap();
    let cpu = FakeCpu(vec![
        secs(10),
        Duration::from_millis(11_500),
        Duration::from_millis(11_500),
    ]);
    let wall = FakeWall(vec![secs(100), Duration::from_millis(100_500), secs(101)]);
    let mut live = LiveDriver::with_clocks(board.clone(), cpu, wall, 60.0).unwrap();
    let first = live.tick().unwrap();
    assert_eq!(first.simulated, Duration::ZERO);
    let busy = live.tick().unwrap();
    assert!((busy.busy_cores - 3.0).abs() < 1e-9);
    assert_eq!(busy.simulated, secs(30));
    let truth = board.with(|soc| soc.truth()).unwrap();
    assert!((truth.busy_cores - 3.0).abs() < 1e-9);
    assert!((truth.time.as_secs_f64() - 30.0).abs() < 1e-9);
    let idle = live.tick().unwrap();
    assert_eq!(idle.busy_cores, 0.0);
    assert!(matches!(
        LiveDriver::with_clocks(board, FakeCpu(vec![secs(0)]), FakeWall(vec![secs(0)]), 0.0),
        Err(LiveError::TimeScale(_))
    ));
}

#[test]
fn a_real_busy_loop_heats_the_live_twin() {
    let board = SimBoard::builtin("rpi5").unwrap();
    let idle = board.with(|soc| soc.truth().die_c).unwrap();
    let mut live = LiveDriver::new(board.clone(), 300.0).unwrap();
    live.tick().unwrap();
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < Duration::from_millis(200) {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    let tick = live.tick().unwrap();
    assert!(tick.busy_cores > 0.3, "busy {}", tick.busy_cores);
    assert!(tick.simulated >= secs(60));
    let hot = board.with(|soc| soc.truth().die_c).unwrap();
    assert!(hot > idle + 1.0, "{idle} -> {hot}");
}

#[test]
fn refuses_time_scales_above_the_maximum_and_non_finite_ones() {
    let board = SimBoard::builtin("rpi5").unwrap();
    for scale in [
        1e308,
        1e40,
        1e20,
        1e14,
        1000.5,
        f64::INFINITY,
        f64::NAN,
        -1.0,
    ] {
        let refused = LiveDriver::with_clocks(
            board.clone(),
            FakeCpu(vec![secs(0)]),
            FakeWall(vec![secs(0)]),
            scale,
        );
        assert!(
            matches!(refused, Err(LiveError::TimeScale(_))),
            "scale {scale} accepted"
        );
    }
    let top = sensor_drivers::sim::MAX_TIME_SCALE;
    assert!(
        LiveDriver::with_clocks(board, FakeCpu(vec![secs(0)]), FakeWall(vec![secs(0)]), top)
            .is_ok()
    );
}

#[test]
fn a_long_stall_between_live_ticks_advances_the_twin_by_the_catch_up_bound_only() {
    let board = SimBoard::builtin("rpi5").unwrap();
    let cpu = FakeCpu(vec![secs(0)]);
    let wall = FakeWall(vec![secs(0), Duration::from_secs(u64::MAX / 2)]);
    let mut live = LiveDriver::with_clocks(board.clone(), cpu, wall, 1000.0).unwrap();
    live.tick().unwrap();
    let late = live.tick().unwrap();
    assert_eq!(late.simulated, sensor_drivers::sim::MAX_CATCH_UP);
    let time = board.with(|soc| soc.time_s()).unwrap();
    assert!((time - sensor_drivers::sim::MAX_CATCH_UP.as_secs_f64()).abs() < 1e-6);
}

#[test]
fn a_step_of_the_longest_duration_ends_and_advances_by_the_step_bound() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut soc = SimSoc::builtin("rpi5").unwrap();
        soc.set_workload(Workload::from_busy_cores(4.0));
        soc.step(Duration::MAX);
        let _ = tx.send((soc.time_s(), soc.die_temp()));
    });
    let (time, die) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("step(Duration::MAX) did not return");
    assert!(
        time <= sensor_drivers::sim::soc::MAX_STEP_S + 1e-6,
        "{time}"
    );
    assert!(time > 0.0);
    assert!(die.celsius().is_finite());
}
