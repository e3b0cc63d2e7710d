//! Energy, measured where possible. Sources in order of trust: a board power sensor (INA219 /
//! INA226 on I2C, a Jetson INA3221 rail or an hwmon `power*_input`, all read through the
//! board's sensor set, or the simulated SoC's supply sensor), then RAPL's cumulative
//! `energy_uj` counters (with wraparound), then a per-board power model (idle power plus
//! per-core dynamic power at the clock in force) driven by this process's measured CPU time.
//! Instantaneous power is integrated with the trapezoidal rule. Every figure says which
//! source produced it. A [`MeterHandle`] is shared between the thread that samples the board
//! and the token loop, which only reads it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sensor_drivers::sensor_set::Snapshot;
use sensor_drivers::sim::live::CpuClock;
use thiserror::Error;

use super::wear::WearIntegrator;
use crate::governor::platform::Platform;

/// Where an energy figure came from, most trusted first.
#[derive(Debug, Clone, PartialEq)]
pub enum EnergySource {
    /// A power sensor, by its name in the board's sensor set.
    PowerSensor(String),
    /// RAPL counters, by domain name.
    Rapl(String),
    /// The per-board power model driven by CPU time.
    Model,
    /// Nothing measured yet.
    None,
}

impl fmt::Display for EnergySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnergySource::PowerSensor(name) => write!(f, "power sensor {name}"),
            EnergySource::Rapl(domains) => write!(f, "RAPL {domains}"),
            EnergySource::Model => write!(f, "power model x CPU time"),
            EnergySource::None => write!(f, "no energy source"),
        }
    }
}

/// Trapezoidal integration of power samples.
#[derive(Debug, Clone, Default)]
pub struct TrapezoidIntegrator {
    first_s: Option<f64>,
    first_w: Option<f64>,
    last: Option<(f64, f64)>,
    energy_j: f64,
    samples: usize,
}

impl TrapezoidIntegrator {
    /// No samples yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a power sample (`watts` at `t_s`). Non-finite values and samples going back in
    /// time are ignored.
    pub fn push(&mut self, t_s: f64, watts: f64) {
        if !(t_s.is_finite() && watts.is_finite()) {
            return;
        }
        if let Some((t0, w0)) = self.last {
            if t_s < t0 {
                return;
            }
            self.energy_j += 0.5 * (w0 + watts) * (t_s - t0);
        } else {
            self.first_s = Some(t_s);
            self.first_w = Some(watts);
        }
        self.last = Some((t_s, watts));
        self.samples += 1;
    }

    /// Energy between the first and the last sample (J).
    pub fn energy_j(&self) -> f64 {
        self.energy_j
    }

    /// Energy up to `t_s`, holding the last power past the last sample (J).
    pub fn energy_at(&self, t_s: f64) -> f64 {
        match self.last {
            Some((t0, w0)) if t_s > t0 => self.energy_j + w0 * (t_s - t0),
            _ => self.energy_j,
        }
    }

    /// Number of samples taken.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The last power sample (W).
    pub fn last_watts(&self) -> Option<f64> {
        self.last.map(|l| l.1)
    }

    /// The first sample: time (s) and power (W).
    pub fn first_sample(&self) -> Option<(f64, f64)> {
        match (self.first_s, self.first_w) {
            (Some(t), Some(w)) => Some((t, w)),
            _ => None,
        }
    }
}

/// Reading RAPL failed.
#[derive(Debug, Error)]
pub enum RaplError {
    /// No RAPL package domain under the root.
    #[error("no RAPL domain under {0}")]
    Absent(PathBuf),
    /// A counter file could not be read or parsed.
    #[error("reading {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Energy gained by a counter that wraps at `max_uj + 1` (RAPL's `max_energy_range_uj`),
/// assuming at most one wrap between reads.
pub fn counter_delta_uj(prev: u64, now: u64, max_uj: u64) -> u64 {
    if now >= prev {
        now - prev
    } else {
        max_uj
            .saturating_sub(prev)
            .saturating_add(now)
            .saturating_add(1)
    }
}

#[derive(Debug, Clone)]
struct RaplDomain {
    name: String,
    energy: PathBuf,
    max_uj: u64,
    last_uj: u64,
}

/// The top-level RAPL domains (`<root>/intel-rapl:N`, not their sub-zones) as one
/// cumulative counter in joules.
#[derive(Debug, Clone)]
pub struct Rapl {
    domains: Vec<RaplDomain>,
    total_j: f64,
}

fn read_u64(path: &Path) -> Result<u64, RaplError> {
    let text = std::fs::read_to_string(path).map_err(|e| RaplError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    text.trim().parse().map_err(|e| RaplError::Read {
        path: path.to_path_buf(),
        reason: format!("{e}"),
    })
}

impl Rapl {
    /// Opens the package domains under `root` (normally `/sys/class/powercap`).
    pub fn with_root(root: &Path) -> Result<Self, RaplError> {
        let entries = std::fs::read_dir(root).map_err(|_| RaplError::Absent(root.into()))?;
        let mut domains = vec![];
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let name = file_name.to_string_lossy();
            // Top-level zones are `<type>:N`; sub-zones are `<type>:N:M`.
            if name.matches(':').count() != 1 {
                continue;
            }
            let dir = entry.path();
            let energy = dir.join("energy_uj");
            if !energy.is_file() {
                continue;
            }
            let max_uj = read_u64(&dir.join("max_energy_range_uj"))?;
            let last_uj = read_u64(&energy)?;
            let label = std::fs::read_to_string(dir.join("name"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| name.to_string());
            domains.push(RaplDomain {
                name: label,
                energy,
                max_uj,
                last_uj,
            });
        }
        if domains.is_empty() {
            return Err(RaplError::Absent(root.into()));
        }
        domains.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Rapl {
            domains,
            total_j: 0.0,
        })
    }

    /// Reads every counter and returns the energy since opening (J).
    pub fn read_j(&mut self) -> Result<f64, RaplError> {
        for d in &mut self.domains {
            let now = read_u64(&d.energy)?;
            let delta = counter_delta_uj(d.last_uj, now, d.max_uj);
            d.last_uj = now;
            self.total_j += delta as f64 * 1e-6;
        }
        Ok(self.total_j)
    }

    /// The domain names, joined.
    pub fn names(&self) -> String {
        self.domains
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// The per-board power model: idle power always, plus dynamic power per busy core at the
/// clock in force (scaled by f·V² from the top operating point), charged per second of this
/// process's CPU time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerModel {
    /// Board power with all cores idle (W).
    pub idle_w: f64,
    /// Extra power of one busy core at the modelled clock (W).
    pub core_w: f64,
}

impl PowerModel {
    /// The model of `platform` at operating-point `level` (clamped to the table).
    pub fn from_platform(platform: &Platform, level: usize) -> Self {
        let opps = platform.opps();
        let top = opps.last().copied();
        let at = opps.get(level.min(opps.len().saturating_sub(1))).copied();
        let scale = match (top, at) {
            (Some(top), Some(at)) if top.khz > 0 && top.millivolts > 0 => {
                let f = f64::from(at.khz) / f64::from(top.khz);
                let v = f64::from(at.millivolts) / f64::from(top.millivolts);
                f * v * v
            }
            _ => 1.0,
        };
        PowerModel {
            idle_w: f64::from(platform.idle_w()),
            core_w: f64::from(platform.core_dyn_w()) * scale,
        }
    }

    /// Energy of `wall_s` seconds during which this process used `cpu_s` CPU-seconds (J).
    pub fn energy_j(&self, wall_s: f64, cpu_s: f64) -> f64 {
        self.idle_w * wall_s.max(0.0) + self.core_w * cpu_s.max(0.0)
    }
}

/// The cumulative source used when no power sensor reports.
pub enum Fallback {
    /// RAPL counters.
    Rapl(Rapl),
    /// The power model and a CPU-time clock.
    Model(PowerModel, Box<dyn CpuClock + Send>),
}

impl fmt::Debug for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::Rapl(r) => write!(f, "Rapl({})", r.names()),
            Fallback::Model(m, _) => write!(f, "Model({m:?})"),
        }
    }
}

impl Fallback {
    /// RAPL under `powercap_root` when present, else `model` over this process's CPU time.
    pub fn detect(powercap_root: &Path, model: PowerModel) -> Fallback {
        match Rapl::with_root(powercap_root) {
            Ok(rapl) => Fallback::Rapl(rapl),
            Err(_) => Fallback::Model(
                model,
                Box::new(sensor_drivers::sim::live::ProcCpuClock::default()),
            ),
        }
    }

    fn source(&self) -> EnergySource {
        match self {
            Fallback::Rapl(r) => EnergySource::Rapl(r.names()),
            Fallback::Model(..) => EnergySource::Model,
        }
    }
}

/// Integrates a board's energy from whichever source is best, and its die temperature into
/// wear. Times are seconds since any fixed origin.
#[derive(Debug)]
pub struct EnergyMeter {
    sensor: TrapezoidIntegrator,
    sensor_name: Option<String>,
    fallback: Option<Fallback>,
    fallback_start: Option<(f64, f64)>,
    fallback_j: f64,
    fallback_last_s: Option<f64>,
    truth: Option<(f64, f64)>,
    wear: WearIntegrator,
    alarm_c: Option<f64>,
    last_temp: Option<(f64, f64)>,
    above_s: f64,
}

/// A point on the meter: energy so far by the meter's source and the time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mark {
    /// Seconds since the meter's origin.
    pub t_s: f64,
    /// Energy so far by the source in force at the mark (J).
    pub energy_j: f64,
    /// The power sensor's energy at the mark, when it had a sample (J).
    pub sensor_j: Option<f64>,
    /// The fallback's cumulative energy at the mark (J).
    pub fallback_j: f64,
    /// Equivalent wear hours so far.
    pub wear_hours: f64,
}

impl EnergyMeter {
    /// A meter with a cumulative `fallback` for when no power sensor reports; wear relative
    /// to `reference_c` with `activation_ev`.
    pub fn new(fallback: Option<Fallback>, reference_c: f64, activation_ev: f64) -> Self {
        EnergyMeter {
            sensor: TrapezoidIntegrator::new(),
            sensor_name: None,
            fallback,
            fallback_start: None,
            fallback_j: 0.0,
            fallback_last_s: None,
            truth: None,
            wear: WearIntegrator::new(reference_c, activation_ev),
            alarm_c: None,
            last_temp: None,
            above_s: 0.0,
        }
    }

    /// Counts the time the die spends above `celsius` from now on.
    pub fn set_alarm_c(&mut self, celsius: f64) {
        self.alarm_c = Some(celsius);
    }

    /// Seconds above the alarm temperature (an interval counts when both ends are above).
    pub fn above_s(&self) -> f64 {
        self.above_s
    }

    /// Adds a power-sensor sample.
    pub fn observe_power(&mut self, t_s: f64, watts: f64, sensor: &str) {
        if self.sensor_name.is_none() {
            self.sensor_name = Some(sensor.to_string());
        }
        self.sensor.push(t_s, watts);
    }

    /// Adds a die temperature.
    pub fn observe_temp(&mut self, t_s: f64, celsius: f64) {
        self.wear.push(t_s, celsius);
        if let (Some(alarm), Some((t0, c0))) = (self.alarm_c, self.last_temp)
            && t_s > t0
            && c0 > alarm
            && celsius > alarm
        {
            self.above_s += t_s - t0;
        }
        if celsius.is_finite() {
            self.last_temp = Some((t_s, celsius));
        }
    }

    /// Records the simulated SoC's own cumulative energy (ground truth, for checks).
    pub fn observe_truth(&mut self, t_s: f64, energy_j: f64) {
        let start = self.truth.map_or(energy_j, |t| t.0);
        self.truth = Some((start, energy_j));
        let _ = t_s;
    }

    /// The twin's energy since the first [`EnergyMeter::observe_truth`] (J).
    pub fn truth_j(&self) -> Option<f64> {
        self.truth.map(|(a, b)| b - a)
    }

    /// Feeds a board snapshot: its board power (when healthy) and its governing temperature.
    pub fn observe_snapshot(&mut self, t_s: f64, snapshot: &Snapshot) {
        if let Some(p) = snapshot
            .powers
            .iter()
            .find(|p| p.role == sensor_drivers::sensor_set::Role::BoardPower && p.health.is_ok())
            && let Some(v) = p.value
        {
            self.observe_power(t_s, v.power.watts(), &p.name);
        }
        if let Some(t) = snapshot.soc_temp() {
            self.observe_temp(t_s, f64::from(t.celsius()));
        }
    }

    /// Reads the cumulative fallback source at `t_s`.
    pub fn poll(&mut self, t_s: f64) {
        let Some(fallback) = &mut self.fallback else {
            return;
        };
        let reading = match fallback {
            Fallback::Rapl(r) => r.read_j().ok(),
            Fallback::Model(model, clock) => clock
                .cpu_time()
                .ok()
                .map(|cpu| model.energy_j(t_s, cpu.as_secs_f64())),
        };
        let Some(cumulative) = reading else {
            return;
        };
        let (_, start_j) = *self.fallback_start.get_or_insert((t_s, cumulative));
        self.fallback_j = cumulative - start_j;
        self.fallback_last_s = Some(t_s);
    }

    /// The source figures come from: the power sensor once it has a sample, else the
    /// fallback.
    pub fn source(&self) -> EnergySource {
        if self.sensor.samples() >= 1 {
            EnergySource::PowerSensor(self.sensor_name.clone().unwrap_or_default())
        } else if let Some(f) = &self.fallback
            && self.fallback_last_s.is_some()
        {
            f.source()
        } else {
            EnergySource::None
        }
    }

    /// Energy up to `t_s` from [`EnergyMeter::source`] (J).
    pub fn energy_j(&self, t_s: f64) -> f64 {
        match self.source() {
            EnergySource::PowerSensor(_) => self.sensor.energy_at(t_s),
            EnergySource::Rapl(_) | EnergySource::Model => self.fallback_j,
            EnergySource::None => 0.0,
        }
    }

    /// A mark at `t_s`, for attributing the energy between two marks.
    pub fn mark(&self, t_s: f64) -> Mark {
        Mark {
            t_s,
            energy_j: self.energy_j(t_s),
            sensor_j: (self.sensor.samples() > 0).then(|| self.sensor.energy_at(t_s)),
            fallback_j: self.fallback_j,
            wear_hours: self.wear.equivalent_hours(),
        }
    }

    /// Energy from `from` to `t_s` by the source in force now. When the power sensor's first
    /// sample came after `from`, the stretch before it is charged at that first sample's power.
    pub fn energy_since(&self, from: &Mark, t_s: f64) -> f64 {
        let e = match self.source() {
            EnergySource::PowerSensor(_) => {
                let end = self.sensor.energy_at(t_s);
                match (from.sensor_j, self.sensor.first_sample()) {
                    (Some(start), _) => end - start,
                    (None, Some((t0, w0))) => end + w0 * (t0 - from.t_s).max(0.0),
                    (None, None) => 0.0,
                }
            }
            EnergySource::Rapl(_) | EnergySource::Model => self.fallback_j - from.fallback_j,
            EnergySource::None => 0.0,
        };
        e.max(0.0)
    }

    /// Hottest die temperature seen (°C).
    pub fn peak_c(&self) -> Option<f64> {
        self.wear.peak_c()
    }

    /// The power sensor's integrated energy up to its last sample, and the twin's
    /// ground-truth energy over the same snapshots (both since the first snapshot).
    pub fn sensor_and_truth_j(&self) -> (f64, Option<f64>) {
        (self.sensor.energy_j(), self.truth_j())
    }
}

/// The meter shared by the sampling thread and the token loop, on its own monotonic clock.
#[derive(Debug, Clone)]
pub struct MeterHandle {
    inner: Arc<Mutex<EnergyMeter>>,
    origin: Instant,
}

/// Energy, wear and time between two marks.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Energy (J).
    pub energy_j: f64,
    /// Wall time (s).
    pub duration_s: f64,
    /// Equivalent wear hours.
    pub wear_hours: f64,
    /// Where the energy figure came from.
    pub source: EnergySource,
}

impl MeterHandle {
    /// Shares `meter`; its clock starts now.
    pub fn new(meter: EnergyMeter) -> Self {
        MeterHandle {
            inner: Arc::new(Mutex::new(meter)),
            origin: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, EnergyMeter> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds since the handle was made.
    pub fn now_s(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// Feeds a board snapshot taken now, and the twin's ground-truth energy when given.
    pub fn observe_snapshot(&self, snapshot: &Snapshot, truth_j: Option<f64>) {
        let t = self.now_s();
        let mut m = self.lock();
        m.observe_snapshot(t, snapshot);
        if let Some(j) = truth_j {
            m.observe_truth(t, j);
        }
    }

    /// Reads the cumulative fallback now.
    pub fn poll(&self) {
        let t = self.now_s();
        self.lock().poll(t);
    }

    /// A mark now.
    pub fn mark(&self) -> Mark {
        let t = self.now_s();
        self.lock().mark(t)
    }

    /// What happened since `from`.
    pub fn since(&self, from: &Mark) -> Span {
        let t = self.now_s();
        let m = self.lock();
        let now = m.mark(t);
        Span {
            energy_j: m.energy_since(from, t),
            duration_s: (now.t_s - from.t_s).max(0.0),
            wear_hours: (now.wear_hours - from.wear_hours).max(0.0),
            source: m.source(),
        }
    }

    /// The twin's ground-truth energy since the first snapshot (J), on the simulated SoC.
    pub fn truth_j(&self) -> Option<f64> {
        self.lock().truth_j()
    }

    /// See [`EnergyMeter::sensor_and_truth_j`].
    pub fn sensor_and_truth_j(&self) -> (f64, Option<f64>) {
        self.lock().sensor_and_truth_j()
    }

    /// Hottest die temperature seen (°C).
    pub fn peak_c(&self) -> Option<f64> {
        self.lock().peak_c()
    }

    /// Counts the time above `celsius` from now on.
    pub fn set_alarm_c(&self, celsius: f64) {
        self.lock().set_alarm_c(celsius);
    }

    /// Seconds above the alarm temperature.
    pub fn above_s(&self) -> f64 {
        self.lock().above_s()
    }

    /// Calls [`MeterHandle::poll`] every `period` until `stop` is set; for a runtime thread
    /// when no governor samples the board.
    pub fn sample_until(&self, period: Duration, stop: &std::sync::atomic::AtomicBool) {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            self.poll();
            std::thread::sleep(period);
        }
        self.poll();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_drivers::PowerSensor;
    use sensor_drivers::sim::{SensorRealism, SimBoard, Workload};

    #[test]
    fn trapezoid_integrates_a_ramp_exactly() {
        let mut i = TrapezoidIntegrator::new();
        for k in 0..=10 {
            let t = f64::from(k);
            i.push(t, 2.0 * t);
        }
        // Integral of 2t over 0..10 = 100.
        assert!((i.energy_j() - 100.0).abs() < 1e-9);
        assert!((i.energy_at(11.0) - 120.0).abs() < 1e-9);
        i.push(5.0, 1e9);
        i.push(12.0, f64::NAN);
        assert_eq!(i.samples(), 11);
    }

    #[test]
    fn rapl_counters_survive_a_wraparound() {
        assert_eq!(counter_delta_uj(100, 250, 1000), 150);
        // 900 -> wrap at 1000 (counter range 0..=1000) -> 50: 100 + 1 + 50.
        assert_eq!(counter_delta_uj(900, 50, 1000), 151);
    }

    #[test]
    fn rapl_reads_top_level_domains_and_their_wrap() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let pkg = dir.path().join("intel-rapl:0");
        let sub = dir.path().join("intel-rapl:0:0");
        std::fs::create_dir_all(&pkg)?;
        std::fs::create_dir_all(&sub)?;
        std::fs::write(pkg.join("name"), "package-0\n")?;
        std::fs::write(pkg.join("max_energy_range_uj"), "262143328850\n")?;
        std::fs::write(pkg.join("energy_uj"), "262143000000\n")?;
        std::fs::write(sub.join("name"), "core\n")?;
        std::fs::write(sub.join("max_energy_range_uj"), "262143328850\n")?;
        std::fs::write(sub.join("energy_uj"), "5\n")?;
        let mut rapl = Rapl::with_root(dir.path())?;
        assert_eq!(rapl.names(), "package-0");
        // Wraps: 328850 µJ to the top, +1, then 671149 µJ: 1.0 J in all.
        std::fs::write(pkg.join("energy_uj"), "671149\n")?;
        let j = rapl.read_j()?;
        assert!((j - 1.0).abs() < 1e-9, "{j}");
        assert!(matches!(
            Rapl::with_root(&dir.path().join("absent")),
            Err(RaplError::Absent(_))
        ));
        Ok(())
    }

    struct FakeCpu(Duration);
    impl CpuClock for FakeCpu {
        fn cpu_time(&mut self) -> Result<Duration, sensor_drivers::sim::live::LiveError> {
            Ok(self.0)
        }
    }

    #[test]
    fn the_model_charges_idle_power_for_wall_time_and_core_power_for_cpu_time() {
        let model = PowerModel {
            idle_w: 3.0,
            core_w: 1.5,
        };
        assert_eq!(model.energy_j(10.0, 4.0), 36.0);
        let mut m = EnergyMeter::new(
            Some(Fallback::Model(model, Box::new(FakeCpu(Duration::ZERO)))),
            50.0,
            0.7,
        );
        m.poll(0.0);
        if let Some(Fallback::Model(_, clock)) = &mut m.fallback {
            *clock = Box::new(FakeCpu(Duration::from_secs(4)));
        }
        m.poll(10.0);
        assert_eq!(m.source(), EnergySource::Model);
        assert!((m.energy_j(10.0) - 36.0).abs() < 1e-9);
    }

    #[test]
    fn the_model_of_a_platform_scales_core_power_by_f_v_squared()
    -> Result<(), Box<dyn std::error::Error>> {
        use crate::governor::platform::Opp;
        let p = Platform::new(
            vec![
                Opp {
                    khz: 1_000_000,
                    millivolts: 800,
                },
                Opp {
                    khz: 2_000_000,
                    millivolts: 1000,
                },
            ],
            4,
            2.5,
            2.0,
        )?;
        let top = PowerModel::from_platform(&p, 1);
        let low = PowerModel::from_platform(&p, 0);
        assert_eq!(top.idle_w, 2.5);
        assert!((top.core_w - 2.0).abs() < 1e-6);
        // 0.5 x 0.8^2 x 2 W = 0.64 W.
        assert!((low.core_w - 0.64).abs() < 1e-6, "{}", low.core_w);
        Ok(())
    }

    /// An INA219 on a mocked I2C bus, scripted with a known power trace (5 W + 2 W·sin, two
    /// periods over 20 s, read every 100 ms): the integrated energy is within 1 % of the
    /// trace's exact integral, 100 J.
    #[test]
    fn a_mocked_ina219_fed_a_known_trace_integrates_within_one_percent()
    -> Result<(), Box<dyn std::error::Error>> {
        use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
        use sensor_drivers::i2c::ina219::{Calibration, Ina219};
        use sensor_drivers::units::MilliAmps;
        const ADDR: u8 = 0x40;
        // Datasheet registers: 0x00 configuration, 0x02 bus voltage, 0x03 power, 0x04
        // current, 0x05 calibration. 0.1 Ω shunt, 0.1 mA current LSB: calibration
        // 0.04096 / (1e-4 A x 0.1 Ω) = 4096; power LSB 20 x 0.1 mA = 2 mW; gain /8 for
        // 200 mV keeps the power-on configuration 0x399F.
        let mut script = vec![
            Transaction::write(ADDR, vec![0x00, 0x39, 0x9F]),
            Transaction::write(ADDR, vec![0x05, 0x10, 0x00]),
        ];
        let watts = |t: f64| 5.0 + 2.0 * (2.0 * std::f64::consts::PI * t / 10.0).sin();
        let steps = 200;
        for k in 0..=steps {
            let p_w = watts(f64::from(k) * 0.1);
            // Bus voltage 5 V: 1250 counts of 4 mV in bits 15..3.
            let bus: u16 = 1250 << 3;
            let current = (p_w / 5.0 / 1e-4).round() as u16;
            let power = (p_w * 1000.0 / 2.0).round() as u16;
            script.push(Transaction::write_read(
                ADDR,
                vec![0x02],
                bus.to_be_bytes().to_vec(),
            ));
            script.push(Transaction::write_read(
                ADDR,
                vec![0x04],
                current.to_be_bytes().to_vec(),
            ));
            script.push(Transaction::write_read(
                ADDR,
                vec![0x03],
                power.to_be_bytes().to_vec(),
            ));
        }
        let mut ina = Ina219::new(Mock::new(&script), ADDR);
        ina.apply_calibration(Calibration::with_current_lsb(
            100_000,
            MilliAmps(2_000),
            100_000,
        )?)?;
        let mut meter = EnergyMeter::new(None, 50.0, 0.7);
        for k in 0..=steps {
            let reading = ina.read_power()?;
            meter.observe_power(f64::from(k) * 0.1, reading.power.watts(), "ina219");
        }
        let energy = meter.energy_j(20.0);
        assert!((energy - 100.0).abs() / 100.0 < 0.01, "{energy} J");
        assert_eq!(meter.source(), EnergySource::PowerSensor("ina219".into()));
        ina.release().done();
        Ok(())
    }

    /// The simulated SoC under a changing load, its supply sensor sampled every 100 ms: the
    /// integrated energy matches the twin's own ground truth within 2 %.
    #[test]
    fn integrated_sim_power_matches_the_twins_ground_truth_within_two_percent()
    -> Result<(), Box<dyn std::error::Error>> {
        let board = SimBoard::builtin("rpi5")?;
        let mut sensor = board.power_sensor(SensorRealism::ideal());
        let start = board
            .with(|s| s.truth().energy_j)
            .ok_or("twin unavailable")?;
        let mut meter = EnergyMeter::new(None, 50.0, 0.7);
        let dt = Duration::from_millis(100);
        let mut t = 0.0;
        meter.observe_power(t, sensor.read_power()?.power.watts(), "board_power");
        // Bursts of 0-4 busy cores changing every 0.7-2.3 s, over 120 s.
        let mut k = 0u32;
        while t < 120.0 {
            let busy = f64::from((k * 7 + 3) % 5);
            let hold = 7 + (k * 13) % 17;
            board.with(|s| s.set_workload(Workload::from_busy_cores(busy)));
            for _ in 0..hold {
                board.step(dt);
                t += dt.as_secs_f64();
                meter.observe_power(t, sensor.read_power()?.power.watts(), "board_power");
            }
            k += 1;
        }
        let truth = board
            .with(|s| s.truth().energy_j)
            .ok_or("twin unavailable")?
            - start;
        let measured = meter.energy_j(t);
        let err = (measured - truth).abs() / truth;
        assert!(
            err < 0.02,
            "measured {measured:.2} J, truth {truth:.2} J, error {err:.4}"
        );
        assert_eq!(
            meter.source(),
            EnergySource::PowerSensor("board_power".into())
        );
        Ok(())
    }
}
