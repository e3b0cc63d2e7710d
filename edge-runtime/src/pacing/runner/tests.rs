//! Driver tests with a scripted thermometer and test doubles of the frequency cap and the fan
//! (the `sensor_drivers` traits, standing in for sysfs actuators that do not exist here).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sensor_drivers::sensor_set::{Role, SensorSet};
use sensor_drivers::{
    ActuatorError, Fan, FreqCap, KiloHertz, MilliCelsius, MilliWatts, Percent, PowerReading,
    PowerSensor, SensorError, TempSensor,
};

use super::*;
use crate::governor::platform::{Opp, Platform};
use crate::governor::types::{Decision, Limiter, Mode, Pace, TempReading};
use crate::pacing::SourceReading;

const PERIOD: Duration = Duration::from_millis(250);
const TOP_KHZ: u32 = 1_500_000;
const LOW_KHZ: u32 = 600_000;

fn platform() -> Platform {
    let opps = [(600_000, 800), (1_000_000, 850), (1_500_000, 900)]
        .map(|(khz, millivolts)| Opp { khz, millivolts })
        .to_vec();
    Platform::new(opps, 4, 2.0, 1.0).expect("a valid test platform")
}

fn config(platform: Platform) -> GovernorConfig {
    GovernorConfig::builder(platform, 80.0)
        .with_period(PERIOD)
        .build()
        .expect("a valid test configuration")
}

/// What the fake actuators were asked to do.
#[derive(Debug, Default)]
struct ActuatorLog {
    caps_khz: Vec<u32>,
    cap_restores: u32,
    fan_duties: Vec<u8>,
    fan_restores: u32,
}

type Log = Arc<Mutex<ActuatorLog>>;

fn log_of(log: &Log) -> std::sync::MutexGuard<'_, ActuatorLog> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cpufreq cap double that starts (and restores) at the top level.
struct FakeCap {
    levels: Vec<KiloHertz>,
    cap: Arc<Mutex<KiloHertz>>,
    log: Log,
}

impl FreqCap for FakeCap {
    fn levels(&self) -> &[KiloHertz] {
        &self.levels
    }

    fn cap(&self) -> KiloHertz {
        *self.cap.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_cap(&mut self, cap: KiloHertz) -> Result<KiloHertz, ActuatorError> {
        let level = sensor_drivers::traits::level_at_or_below(&self.levels, cap)
            .ok_or(ActuatorError::OutOfRange)?;
        *self.cap.lock().unwrap_or_else(|e| e.into_inner()) = level;
        log_of(&self.log).caps_khz.push(level.0);
        Ok(level)
    }

    fn restore(&mut self) -> Result<(), ActuatorError> {
        *self.cap.lock().unwrap_or_else(|e| e.into_inner()) = KiloHertz(TOP_KHZ);
        log_of(&self.log).cap_restores += 1;
        Ok(())
    }
}

/// A fan double: `None` duty means the firmware's own curve drives it.
struct FakeFan {
    duty: Arc<Mutex<Option<Percent>>>,
    log: Log,
}

impl Fan for FakeFan {
    fn set_duty(&mut self, duty: Percent) -> Result<Percent, ActuatorError> {
        *self.duty.lock().unwrap_or_else(|e| e.into_inner()) = Some(duty);
        log_of(&self.log).fan_duties.push(duty.get());
        Ok(duty)
    }

    fn duty(&mut self) -> Result<Percent, SensorError> {
        Ok(self
            .duty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(Percent::ZERO))
    }

    fn restore(&mut self) -> Result<(), ActuatorError> {
        *self.duty.lock().unwrap_or_else(|e| e.into_inner()) = None;
        log_of(&self.log).fan_restores += 1;
        Ok(())
    }
}

/// The fake board: a thermometer the test sets, and the actuators' state.
#[derive(Clone)]
struct Board {
    reading: Arc<Mutex<(f32, Health)>>,
    cap: Arc<Mutex<KiloHertz>>,
    fan_duty: Arc<Mutex<Option<Percent>>>,
    log: Log,
}

impl Board {
    fn new(celsius: f32) -> Self {
        Self {
            reading: Arc::new(Mutex::new((celsius, Health::Fresh))),
            cap: Arc::new(Mutex::new(KiloHertz(TOP_KHZ))),
            fan_duty: Arc::new(Mutex::new(None)),
            log: Log::default(),
        }
    }

    fn set(&self, celsius: f32, health: Health) {
        *self.reading.lock().unwrap_or_else(|e| e.into_inner()) = (celsius, health);
    }

    fn source(&self) -> Box<dyn ObservationSource + Send> {
        let reading = Arc::clone(&self.reading);
        Box::new(move |now: Duration| {
            let (celsius, health) = *reading.lock().unwrap_or_else(|e| e.into_inner());
            SourceReading {
                temp: TempReading {
                    celsius,
                    health,
                    sampled_at: now,
                },
                power_w: None,
            }
        })
    }

    fn freq_cap(&self) -> Box<dyn FreqCap + Send> {
        Box::new(FakeCap {
            levels: [600_000, 1_000_000, 1_500_000].map(KiloHertz).to_vec(),
            cap: Arc::clone(&self.cap),
            log: Arc::clone(&self.log),
        })
    }

    fn fan(&self) -> Box<dyn Fan + Send> {
        Box::new(FakeFan {
            duty: Arc::clone(&self.fan_duty),
            log: Arc::clone(&self.log),
        })
    }

    fn cap_khz(&self) -> u32 {
        self.cap.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn fan_duty(&self) -> Option<u8> {
        self.fan_duty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(Percent::get)
    }
}

/// Our governor on `board` with a frequency cap and a 4-level fan.
fn governed(board: &Board, permits: &Permits) -> (GovernorHandle, GovernorDriver) {
    let governor = Governor::new(config(platform().with_fan(Some(4))));
    GovernorRunner::new(Box::new(governor), permits.clone(), board.source())
        .with_freq_cap(board.freq_cap())
        .with_fan(board.fan())
        .build()
        .expect("actuators match the platform")
}

fn at(tick: u32) -> Duration {
    PERIOD * tick
}

#[test]
fn restores_the_frequency_cap_and_the_fan_when_the_driver_shuts_down() {
    let board = Board::new(60.0);
    let permits = Permits::new(4);
    let (handle, mut driver) = governed(&board, &permits);
    // The first tick is the coolest mode (no reading before it): lowest clock, fan at full.
    driver.tick(at(0));
    assert_eq!(board.cap_khz(), LOW_KHZ);
    assert_eq!(board.fan_duty(), Some(100));
    assert_eq!(handle.status().freq_cap_khz, Some(LOW_KHZ));
    assert_eq!(handle.status().fan_level, Some(4));

    driver.shutdown().expect("restoring succeeds");
    assert_eq!(board.cap_khz(), TOP_KHZ);
    assert_eq!(
        board.fan_duty(),
        None,
        "the fan is back on its firmware curve"
    );
    let log = log_of(&board.log);
    // Restored once: the drop after shutdown has nothing left to restore.
    assert_eq!((log.cap_restores, log.fan_restores), (1, 1));
    let status = handle.status();
    assert!(!status.running);
    assert_eq!(status.freq_cap_khz, Some(TOP_KHZ));
    assert!(status.line().ends_with("| stopped"), "{}", status.line());
}

/// Our governor, except that its `decide` panics at the given tick.
struct PanicsAt {
    inner: Governor,
    tick: u32,
    seen: u32,
}

impl Controller for PanicsAt {
    fn name(&self) -> &'static str {
        "panics"
    }

    fn decide(&mut self, obs: Observation, now: Duration) -> Decision {
        self.seen += 1;
        assert!(
            self.seen < self.tick,
            "controller fault injected by the test"
        );
        self.inner.decide(obs, now)
    }
}

impl Regulator for PanicsAt {
    fn config(&self) -> &GovernorConfig {
        self.inner.config()
    }

    fn set_setpoint_c(&mut self, setpoint_c: f32) -> Result<(), ConfigError> {
        self.inner.set_setpoint_c(setpoint_c)
    }
}

#[test]
fn restores_the_actuators_when_a_panic_unwinds_through_the_driver() {
    let board = Board::new(60.0);
    let permits = Permits::new(4);
    let controller = PanicsAt {
        inner: Governor::new(config(platform().with_fan(Some(4)))),
        tick: 3,
        seen: 0,
    };
    let (handle, mut driver) =
        GovernorRunner::new(Box::new(controller), permits.clone(), board.source())
            .with_freq_cap(board.freq_cap())
            .with_fan(board.fan())
            .build()
            .expect("actuators match the platform");
    let outcome = catch_unwind(AssertUnwindSafe(move || {
        for i in 0..5 {
            driver.tick(at(i));
        }
    }));
    assert!(outcome.is_err(), "the injected fault panics");
    assert_eq!(
        handle.status().ticks,
        2,
        "two ticks completed before the fault"
    );
    assert_eq!(board.cap_khz(), TOP_KHZ);
    assert_eq!(board.fan_duty(), None);
    let log = log_of(&board.log);
    assert_eq!(
        log.caps_khz.first(),
        Some(&LOW_KHZ),
        "the cap had been lowered"
    );
    assert_eq!((log.cap_restores, log.fan_restores), (1, 1));
    assert!(!handle.status().running);
}

#[test]
fn a_stale_source_puts_the_governor_in_its_coolest_mode_and_the_status_says_why() {
    let board = Board::new(50.0);
    let permits = Permits::new(4);
    let (handle, mut driver) = governed(&board, &permits);
    let mut tick = 0;
    for i in 0..12 {
        board.set(50.0 + 0.05 * (i % 3) as f32, Health::Fresh);
        driver.tick(at(tick));
        tick += 1;
    }
    let before = handle.status();
    assert_ne!(before.mode, Mode::FailSafe, "{}", before.reason);
    assert_eq!(permits.duty(Priority::Interactive), 1.0);
    assert_eq!(permits.threads(), 4);
    assert_eq!(board.cap_khz(), TOP_KHZ);

    // The sensor layer keeps showing the last good value, marked stale.
    board.set(50.1, Health::Stale);
    driver.tick(at(tick));
    tick += 1;
    assert_ne!(
        handle.status().mode,
        Mode::FailSafe,
        "one missed period is held"
    );
    driver.tick(at(tick));
    let status = handle.status();
    assert_eq!(status.mode, Mode::FailSafe, "{}", status.reason);
    assert!(status.reason.contains("stale"), "{}", status.reason);
    assert_eq!(status.health, Health::Stale);
    let line = status.line();
    assert!(line.starts_with("50.1 °C (stale) / set 70.0 | "), "{line}");
    assert!(line.contains("coolest mode: stale"), "{line}");
    // Coolest mode, carried out: background paused, generation at the fail-safe duty, lowest
    // clock, fan at full speed.
    assert_eq!(permits.duty(Priority::Training), 0.0);
    assert_eq!(permits.duty(Priority::Batch), 0.0);
    assert_eq!(permits.duty(Priority::Interactive), 0.25);
    assert_eq!(permits.threads(), 1);
    assert_eq!(board.cap_khz(), LOW_KHZ);
    assert_eq!(board.fan_duty(), Some(100));
}

#[test]
fn a_setpoint_change_is_validated_at_once_and_applied_at_the_next_tick() {
    let board = Board::new(50.0);
    let permits = Permits::new(4);
    let (handle, mut driver) = governed(&board, &permits);
    for i in 0..4 {
        driver.tick(at(i));
    }
    assert_eq!(handle.status().setpoint_c, 70.0);

    assert!(matches!(
        handle.set_setpoint_c(f32::NAN),
        Err(ConfigError::SetpointNotFinite(_))
    ));
    assert!(matches!(
        handle.set_setpoint_c(78.0),
        Err(ConfigError::SetpointAboveCeiling { .. })
    ));
    assert!(matches!(
        handle.set_setpoint_c(-60.0),
        Err(ConfigError::SetpointBelowPlausible { .. })
    ));
    handle.set_setpoint_c(65.0).expect("65 °C is valid");
    assert_eq!(
        handle.status().setpoint_c,
        70.0,
        "not applied before the next tick"
    );

    driver.tick(at(4));
    let status = handle.status();
    assert_eq!(status.setpoint_c, 65.0);
    assert!(status.reason.contains("65.0"), "{}", status.reason);
    assert!(status.line().contains("/ set 65.0 |"), "{}", status.line());
    assert_eq!(
        status.last_error, None,
        "the rejected values never reached it"
    );
}

/// A controller that records what it observes and always decides the same.
struct Recorder {
    cfg: GovernorConfig,
    seen: Arc<Mutex<Vec<Observation>>>,
}

impl Controller for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn decide(&mut self, obs: Observation, _now: Duration) -> Decision {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(obs);
        Decision {
            freq_cap_khz: None,
            threads: 3,
            pacing: [Pace { duty: 0.5 }, Pace::FULL, Pace::PAUSED],
            fan_level: None,
            mode: Mode::Regulating,
            limiter: Limiter::PaceGeneration,
            reason: "recording".to_string(),
            power_budget_w: 4.0,
        }
    }
}

impl Regulator for Recorder {
    fn config(&self) -> &GovernorConfig {
        &self.cfg
    }

    fn set_setpoint_c(&mut self, setpoint_c: f32) -> Result<(), ConfigError> {
        validate_setpoint(setpoint_c, self.cfg.ceiling_c, self.cfg.plausible_min_c)?;
        self.cfg.setpoint_c = setpoint_c;
        Ok(())
    }
}

fn recorded(
    board: &Board,
    permits: &Permits,
) -> (GovernorHandle, GovernorDriver, Arc<Mutex<Vec<Observation>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder {
        cfg: config(platform().with_freq_writable(false)),
        seen: Arc::clone(&seen),
    };
    let (handle, driver) = GovernorRunner::new(Box::new(recorder), permits.clone(), board.source())
        .build()
        .expect("no actuators on a platform without any");
    (handle, driver, seen)
}

#[test]
fn a_reading_that_is_not_fresh_carries_the_last_good_sample_time() {
    let board = Board::new(55.0);
    let permits = Permits::new(4);
    let (_handle, mut driver, seen) = recorded(&board, &permits);
    board.set(55.0, Health::Stale);
    driver.tick(at(1));
    board.set(56.0, Health::Fresh);
    driver.tick(at(2));
    board.set(56.0, Health::Stale);
    driver.tick(at(3));
    board.set(f32::NAN, Health::Missing);
    driver.tick(at(4));
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let times: Vec<(Health, Duration)> = seen
        .iter()
        .map(|o| (o.temp.health, o.temp.sampled_at))
        .collect();
    assert_eq!(
        times,
        vec![
            (Health::Stale, Duration::ZERO),
            (Health::Fresh, at(2)),
            (Health::Stale, at(2)),
            (Health::Missing, at(2)),
        ]
    );
}

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[test]
fn observations_carry_demand_utilisation_and_read_back_from_the_permits() {
    let board = Board::new(55.0);
    let permits = Permits::new(4);
    let (handle, mut driver, seen) = recorded(&board, &permits);
    driver.tick(at(0));
    assert_eq!(permits.duty(Priority::Interactive), 0.5);
    assert_eq!(permits.duty(Priority::Batch), 0.0);
    assert_eq!(permits.threads(), 3);
    for _ in 0..10 {
        let _token = permits.acquire(Priority::Interactive);
        spin(Duration::from_millis(3));
    }
    driver.tick(at(1));
    let obs = *seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .last()
        .expect("two observations");
    assert_eq!(obs.actuators.threads, 3, "the thread count last published");
    assert_eq!(obs.actuators.freq_khz, None, "no frequency actuator");
    assert!(obs.actuators.utilisation > 0.0, "{:?}", obs.actuators);
    assert!(
        obs.demand.of(Priority::Interactive) > 0.0,
        "{:?}",
        obs.demand
    );
    assert_eq!(obs.demand.of(Priority::Training), 0.0);
    let status = handle.status();
    let tps = status.tokens_per_s.expect("interactive permits were taken");
    assert!(tps > 0.0, "{tps}");
    assert_eq!(status.duties, [0.5, 1.0, 0.0]);
    assert_eq!(status.mode, Mode::Regulating);
    assert!(
        status.line().ends_with("tok/s | limiting: pace generation"),
        "{}",
        status.line()
    );
}

#[test]
fn run_ticks_every_period_until_stopped_then_restores() {
    let board = Board::new(60.0);
    let permits = Permits::new(4);
    let governor = Governor::new(
        GovernorConfig::builder(platform().with_fan(Some(4)), 80.0)
            .with_period(Duration::from_millis(20))
            .build()
            .expect("valid"),
    );
    let (handle, driver) = GovernorRunner::new(Box::new(governor), permits, board.source())
        .with_freq_cap(board.freq_cap())
        .with_fan(board.fan())
        .build()
        .expect("actuators match the platform");
    let never = AtomicBool::new(false);
    let worker = std::thread::spawn(move || driver.run(&never));
    let started = Instant::now();
    while handle.status().ticks < 3 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(handle.status().ticks >= 3);
    assert!(handle.status().running);
    assert_eq!(
        board.cap_khz(),
        LOW_KHZ,
        "coolest mode until readings settle"
    );
    handle.stop();
    assert!(handle.is_stop_requested());
    let result = worker.join().expect("the driver thread does not panic");
    assert!(result.is_ok(), "{result:?}");
    assert!(!handle.status().running);
    assert_eq!(board.cap_khz(), TOP_KHZ);
    assert_eq!(board.fan_duty(), None);
}

#[test]
fn build_rejects_actuators_that_do_not_match_the_platform() {
    let board = Board::new(50.0);
    let permits = Permits::new(4);
    let no_cap = GovernorRunner::new(
        Box::new(Governor::new(config(platform()))),
        permits.clone(),
        board.source(),
    )
    .build();
    assert!(matches!(no_cap, Err(RunnerError::MissingFreqCap)));
    let no_fan = GovernorRunner::new(
        Box::new(Governor::new(config(platform().with_fan(Some(4))))),
        permits.clone(),
        board.source(),
    )
    .with_freq_cap(board.freq_cap())
    .build();
    assert!(matches!(no_fan, Err(RunnerError::MissingFan(4))));
    let unused = GovernorRunner::new(
        Box::new(Governor::new(config(platform()))),
        permits,
        board.source(),
    )
    .with_freq_cap(board.freq_cap())
    .with_fan(board.fan())
    .build();
    assert!(matches!(unused, Err(RunnerError::UnusedActuator("fan"))));
}

fn status(mode: Mode, limiter: Limiter) -> GovernorStatus {
    GovernorStatus {
        temperature_c: Some(62.4),
        health: Health::Fresh,
        tokens_per_s: Some(31.2),
        mode,
        limiter,
        reason: "coolest mode: sensor reports a stuck value".to_string(),
        ..GovernorStatus::initial("ours", 70.0)
    }
}

#[test]
fn the_status_line_shows_temperature_setpoint_speed_and_limiter() {
    let cases = [
        (
            status(Mode::Regulating, Limiter::PaceTraining),
            "62.4 °C / set 70.0 | 31.2 tok/s | limiting: pace training",
        ),
        (
            status(Mode::Regulating, Limiter::Freq),
            "62.4 °C / set 70.0 | 31.2 tok/s | limiting: cpu frequency",
        ),
        (
            status(Mode::Unlimited, Limiter::None),
            "62.4 °C / set 70.0 | 31.2 tok/s | limiting: nothing",
        ),
        (
            GovernorStatus {
                temperature_c: None,
                health: Health::Stuck,
                tokens_per_s: None,
                ..status(Mode::FailSafe, Limiter::FailSafe)
            },
            "-- °C (stuck) / set 70.0 | coolest mode: sensor reports a stuck value",
        ),
        (
            GovernorStatus {
                setpoint_c: 66.0,
                eco: Some(crate::governor::SetpointChoice {
                    chosen: crate::governor::eco_setpoint::Candidate {
                        setpoint_c: 66.0,
                        die_c: 66.0,
                        power_w: 5.0,
                        tokens_per_s: 31.2,
                        grid_g_per_ktok: 0.27,
                        wear_g_per_ktok: 0.04,
                    },
                    reference: crate::governor::eco_setpoint::Candidate {
                        setpoint_c: 70.0,
                        die_c: 70.0,
                        power_w: 5.5,
                        tokens_per_s: 33.0,
                        grid_g_per_ktok: 0.28,
                        wear_g_per_ktok: 0.07,
                    },
                    base_c: 45.0,
                }),
                ..status(Mode::Regulating, Limiter::Freq)
            },
            "62.4 °C / set 66.0 | 31.2 tok/s | limiting: cpu frequency | eco 66.0 °C: 0.31 g/1k \
             tokens (0.27 grid + 0.040 wear) vs 0.35 at 70.0 °C",
        ),
    ];
    for (s, expected) in cases {
        assert_eq!(s.line(), expected);
    }
}

struct Scripted(Vec<Result<MilliCelsius, SensorError>>);

impl TempSensor for Scripted {
    fn read_temp(&mut self) -> Result<MilliCelsius, SensorError> {
        if self.0.is_empty() {
            Err(SensorError::Missing)
        } else {
            self.0.remove(0)
        }
    }
}

struct Watts(i32);

impl PowerSensor for Watts {
    fn read_power(&mut self) -> Result<PowerReading, SensorError> {
        Ok(PowerReading::power_only(MilliWatts(self.0)))
    }
}

#[test]
fn a_sensor_set_reads_as_fresh_then_stale_with_the_last_good_value() {
    let mut set = SensorSet::new();
    set.add_temp(
        "cpu-thermal",
        Role::SocTemp,
        Box::new(Scripted(vec![
            Ok(MilliCelsius(61_250)),
            Err(SensorError::Io),
            Ok(MilliCelsius(250_000)),
        ])),
    );
    set.add_power("supply", Role::BoardPower, Box::new(Watts(4_500)));
    let fresh = set.observe(Duration::from_millis(100));
    assert_eq!(
        fresh.temp,
        TempReading::fresh(61.25, Duration::from_millis(100))
    );
    assert_eq!(fresh.power_w, Some(4.5));
    let stale = set.observe(Duration::from_millis(350));
    assert_eq!(stale.temp.health, Health::Stale);
    assert_eq!(stale.temp.celsius, 61.25);
    let absurd = set.observe(Duration::from_millis(600));
    assert_eq!(absurd.temp.health, Health::Implausible);
    assert!(absurd.temp.celsius.is_nan());

    let mut empty = SensorSet::new();
    let none = empty.observe(Duration::from_millis(5));
    assert_eq!(none.temp.health, Health::Missing);
    assert_eq!(none.power_w, None);
}

#[test]
fn a_time_compressed_board_is_ticked_once_per_period_of_board_time() {
    const SCALE: f64 = 25.0;
    let board = Board::new(50.0);
    let permits = Permits::new(4);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder {
        cfg: config(platform().with_freq_writable(false)),
        seen: Arc::clone(&seen),
    };
    let (handle, driver) = GovernorRunner::new(Box::new(recorder), permits, board.source())
        .with_time_scale(SCALE)
        .build()
        .expect("a positive time scale");
    let never = AtomicBool::new(false);
    let started = Instant::now();
    let worker = std::thread::spawn(move || driver.run(&never));
    while handle.status().ticks < 6 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.stop();
    let wall = started.elapsed();
    assert!(worker.join().expect("no panic").is_ok());
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let times: Vec<Duration> = seen.iter().map(|o| o.temp.sampled_at).collect();
    assert!(times.len() >= 6, "{times:?}");
    // Ticks are at least one control period of board time apart, however late the thread is.
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= PERIOD, "{times:?}");
    }
    // Board time runs at SCALE × wall time: the last tick is no later than that allows.
    let last = times.last().copied().unwrap_or_default();
    assert!(
        last <= wall.mul_f64(SCALE),
        "{last:?} after {wall:?} of wall time"
    );
    // And well ahead of wall time: six periods of board time took far less wall time.
    assert!(
        last > wall,
        "{last:?} board time after {wall:?} of wall time"
    );
}

#[test]
fn build_rejects_a_time_scale_that_is_not_positive_and_finite() {
    for scale in [
        0.0,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        1e308,
        1e40,
        1e20,
        1e14,
        1000.5,
    ] {
        let board = Board::new(50.0);
        let built = GovernorRunner::new(
            Box::new(Governor::new(config(platform().with_freq_writable(false)))),
            Permits::new(4),
            board.source(),
        )
        .with_time_scale(scale)
        .build();
        assert!(
            matches!(built, Err(RunnerError::InvalidTimeScale(_))),
            "{scale}"
        );
    }
}

#[test]
fn the_fastest_accepted_time_scale_ticks_and_stops_on_request() {
    let board = Board::new(50.0);
    let (handle, driver) = GovernorRunner::new(
        Box::new(Governor::new(config(platform().with_freq_writable(false)))),
        Permits::new(4),
        board.source(),
    )
    .with_time_scale(MAX_TIME_SCALE)
    .build()
    .expect("the maximum scale is accepted");
    let never = AtomicBool::new(false);
    let worker = std::thread::spawn(move || driver.run(&never));
    let started = Instant::now();
    while handle.status().ticks < 3 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.stop();
    assert!(worker.join().expect("no panic").is_ok());
    let status = handle.status();
    assert!(status.ticks >= 3, "{} ticks", status.ticks);
    assert!(!status.running);
}

#[test]
fn scaling_a_duration_saturates_instead_of_panicking() {
    assert_eq!(scaled(Duration::from_secs(1), 1e308), Duration::MAX);
    assert_eq!(scaled(Duration::MAX, 2.0), Duration::MAX);
    assert_eq!(scaled(Duration::from_secs(1), f64::NAN), Duration::ZERO);
    assert_eq!(scaled(Duration::from_secs(2), 0.5), Duration::from_secs(1));
}

#[test]
fn the_status_carries_the_governors_headroom_and_none_in_the_coolest_mode() {
    let board = Board::new(50.0);
    let permits = Permits::new(4);
    let (handle, mut driver) = governed(&board, &permits);
    assert_eq!(handle.status().headroom_s, None, "no tick yet");
    let mut tick = 0;
    for i in 0..12 {
        board.set(50.0 + 0.05 * (i % 3) as f32, Health::Fresh);
        driver.tick(at(tick));
        tick += 1;
    }
    let cool = handle.status().headroom_s;
    assert!(
        cool.is_some_and(|h| h > 0.0),
        "{cool:?} at 50 °C, setpoint 70"
    );
    board.set(50.1, Health::Stale);
    driver.tick(at(tick));
    driver.tick(at(tick + 1));
    let status = handle.status();
    assert_eq!(status.mode, Mode::FailSafe, "{}", status.reason);
    assert_eq!(status.headroom_s, None);
}
