//! Sensing for the runtime: maps the config's `[sensors]` section onto one [`Board`] handle
//! that gives the governor a [`Snapshot`] per tick, the frequency-cap and fan actuators, and,
//! when the board is the simulated SoC, the [`LiveDriver`] that heats it from this process's
//! CPU time. This module decides *which* source is used ([`select`]) and builds it
//! ([`open_board`]); reading, range checks and health live in `sensor_drivers`, control in
//! `governor`. It never writes to sysfs itself: actuators write only when the governor asks.
//!
//! Selection rule: an explicit `sim` forces the twin. Otherwise a root holding a governing
//! thermal zone, or any configured I2C sensor, is a real board; so is a known board (device
//! tree says Raspberry Pi or Jetson) whose governing zone is absent, which then reports that
//! zone as `Missing`. A real board whose sensor reads badly stays real with an unhealthy
//! reading: it is never replaced by the twin and never shows a made-up value. Only a root with
//! no thermal hardware at all (or, on an unknown board, only unreadable zones of unknown types)
//! selects the twin, with a log line saying so.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use sensor_drivers::i2c_config::{self, I2cConfigError, I2cSensorConfig, OpenedSensor};
use sensor_drivers::linux::board::{BoardInfo, BoardKind, choose_governing_zone, detect_board};
use sensor_drivers::linux::hwmon::ChannelKind;
use sensor_drivers::linux::sensors::board_sensors;
use sensor_drivers::linux::{CpufreqCap, KernelFan, SysRoot};
use sensor_drivers::sensor_set::{Role, SensorSet, Snapshot};
use sensor_drivers::sim::{BUILTIN_PROFILES, LiveDriver, LiveTick, Profile, SensorRealism};
use sensor_drivers::sim::{SimBoard, SimSoc};
use sensor_drivers::{
    Fan, FreqCap, MilliCelsius, PowerReading, PowerSensor, SensorError, TempSensor,
};

/// The twin's profile when no thermal hardware is found and none is configured.
pub const DEFAULT_TWIN_PROFILE: &str = "rpi5";

/// The kernel cooling-device type of the fans this runtime drives (Pi 5, Jetson Orin).
const FAN_COOLING_TYPE: &str = "pwm-fan";

/// The hwmon chip carrying the fan's tachometer (`fan1_input`).
const FAN_HWMON_NAME: &str = "pwmfan";

/// The `[sensors]` section of the runtime's TOML config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensingConfig {
    /// Filesystem root the sysfs and procfs paths hang from: `/` on a device, a fake tree in
    /// tests.
    pub root: PathBuf,
    /// Type of the thermal zone that governs (e.g. `cpu-thermal`, `tj-thermal`); default: the
    /// board's own.
    pub zone: Option<String>,
    /// Forces the simulated SoC: a built-in profile name (`rpi4`, `rpi5`, `rpi5-active`,
    /// `jetson-orin-nano`) or the path of a TOML profile.
    pub sim: Option<String>,
    /// Simulated seconds per wall second for the live twin (1.0: real time).
    pub time_scale: f64,
    /// I2C sensors (`[[sensors.i2c]]`: name, bus, address, chip, role `soc_temp` /
    /// `ambient_temp` / `board_power`, shunt calibration for INA2xx).
    pub i2c: Vec<I2cSensorConfig>,
}

/// Fastest simulated time the live twin and the governor honour, in simulated seconds per
/// wall second: above it a control period shrinks below the scheduler's resolution.
pub const MAX_TIME_SCALE: f64 = 1000.0;

/// Checks a time scale: finite, above 0 and at most [`MAX_TIME_SCALE`]. The error says what
/// was given and the accepted range.
pub fn check_time_scale(scale: f64) -> std::result::Result<f64, String> {
    if scale.is_finite() && scale > 0.0 && scale <= MAX_TIME_SCALE {
        Ok(scale)
    } else {
        Err(format!(
            "must be above 0 and at most {MAX_TIME_SCALE}, got {scale}"
        ))
    }
}

/// Parses a `--sim-time-scale`/`--time-scale` flag value with [`check_time_scale`], keeping
/// the text as given in the message.
pub fn parse_time_scale(text: &str) -> std::result::Result<f64, String> {
    let scale: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    check_time_scale(scale).map_err(|_| {
        format!("{text} is out of range: must be above 0 and at most {MAX_TIME_SCALE}")
    })
}

impl Default for SensingConfig {
    fn default() -> Self {
        SensingConfig {
            root: PathBuf::from("/"),
            zone: None,
            sim: None,
            time_scale: 1.0,
            i2c: Vec::new(),
        }
    }
}

/// A whole config file, of which only the `[sensors]` table is read here.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    sensors: SensingConfig,
}

impl SensingConfig {
    /// Parses the `[sensors]` table of a config file's text; other tables are ignored and an
    /// absent table gives the defaults.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let file: ConfigFile = toml::from_str(text).context("parsing the [sensors] table")?;
        file.sensors.validate()?;
        Ok(file.sensors)
    }

    /// Reads the `[sensors]` table of the config file at `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::from_toml_str(&text).with_context(|| format!("in config {}", path.display()))
    }

    /// Checks every field without touching any file or bus.
    pub fn validate(&self) -> Result<()> {
        if let Err(e) = check_time_scale(self.time_scale) {
            bail!("sensors.time_scale {e}");
        }
        if self.zone.as_deref().is_some_and(|z| z.trim().is_empty()) {
            bail!("sensors.zone must not be empty");
        }
        if self.sim.as_deref().is_some_and(|s| s.trim().is_empty()) {
            bail!(
                "sensors.sim must name a profile ({}) or a TOML file",
                BUILTIN_PROFILES.join(", ")
            );
        }
        for sensor in &self.i2c {
            i2c_config::validate(sensor).context("in sensors.i2c")?;
        }
        Ok(())
    }
}

/// Why the twin stands in for a board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwinReason {
    /// `sim` is set in the config.
    Configured,
    /// The root holds no thermal zone and no I2C sensor is configured.
    NoThermalHardware,
    /// On a board of unknown kind, the root holds only thermal zones of unknown types that
    /// cannot be read.
    NoUsableZone {
        /// The zone types found.
        zones: Vec<String>,
    },
}

/// Which source [`open_board`] uses for a config, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The board under the root.
    Real {
        /// What its device tree says.
        board: BoardInfo,
        /// The thermal zone type that governs, when one is present or expected.
        governing_zone: Option<String>,
    },
    /// The simulated SoC.
    Twin {
        /// The profile name or TOML path.
        profile: String,
        /// Why.
        reason: TwinReason,
    },
}

/// Decides between the board under `cfg.root` and the twin, reading only the device tree and
/// the thermal zones' `type` and `temp` files. A configured `zone` that the root lacks while
/// holding other zones is an error (a typo must not silently govern on another sensor).
pub fn select(cfg: &SensingConfig) -> Result<Selection> {
    if let Some(profile) = &cfg.sim {
        return Ok(Selection::Twin {
            profile: profile.clone(),
            reason: TwinReason::Configured,
        });
    }
    let root = SysRoot::new(&cfg.root);
    let board = detect_board(root.path());
    let zones = root
        .thermal_zones()
        .zones()
        .with_context(|| format!("listing thermal zones under {}", root.thermal().display()))?;
    let kinds: Vec<String> = zones.iter().map(|z| z.kind().to_owned()).collect();
    if let Some(wanted) = &cfg.zone
        && !zones.is_empty()
        && !kinds.contains(wanted)
    {
        bail!(
            "the configured governing zone {wanted:?} is not under {} (zones present: {})",
            root.thermal().display(),
            kinds.join(", ")
        );
    }
    let governing = choose_governing_zone(board.kind, &zones, cfg.zone.as_deref());
    if let Some(zone) = governing {
        return Ok(Selection::Real {
            governing_zone: Some(zone.kind().to_owned()),
            board,
        });
    }
    if board.kind != BoardKind::Unknown || !cfg.i2c.is_empty() {
        let governing_zone = match cfg.i2c.iter().find(|s| s.role == Role::SocTemp) {
            Some(_) => None,
            None => cfg
                .zone
                .clone()
                .or_else(|| board.kind.default_zone_type().map(str::to_owned)),
        };
        return Ok(Selection::Real {
            board,
            governing_zone,
        });
    }
    let reason = if zones.is_empty() {
        TwinReason::NoThermalHardware
    } else {
        TwinReason::NoUsableZone { zones: kinds }
    };
    Ok(Selection::Twin {
        profile: DEFAULT_TWIN_PROFILE.to_owned(),
        reason,
    })
}

/// Where a [`Board`]'s readings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A physical board.
    Real {
        /// The classified board.
        board: BoardKind,
        /// Its device-tree model string, when present.
        model: Option<String>,
    },
    /// The simulated SoC.
    Simulated {
        /// The profile's name.
        profile: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Real {
                board,
                model: Some(model),
            } => write!(f, "{board} ({model})"),
            Source::Real { board, model: None } => write!(f, "{board}"),
            Source::Simulated { profile } => write!(f, "simulated SoC `{profile}`"),
        }
    }
}

/// A configured I2C sensor and whether it opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct I2cDevice {
    /// The sensor as configured.
    pub config: I2cSensorConfig,
    /// Why it could not be opened; `None` when it is live. A failed sensor stays in the set and
    /// reads as an error, so the governor sees its health.
    pub error: Option<String>,
}

/// The actuators a [`Board`] hands over with [`Board::take_actuators`]; each is `None` where
/// the board has none the runtime may write.
pub struct BoardActuators {
    /// The CPU frequency ceiling (cpufreq `scaling_max_freq`, or the twin's clock).
    pub freq_cap: Option<Box<dyn FreqCap + Send>>,
    /// The fan (the kernel's `pwm-fan` cooling device, or the twin's fan).
    pub fan: Option<Box<dyn Fan + Send>>,
}

/// One handle on the board's sensing and cooling: a real board or the twin, told apart only by
/// [`Board::source`].
pub struct Board {
    source: Source,
    governing_zone: Option<String>,
    sensors: SensorSet,
    freq_cap: Option<Box<dyn FreqCap + Send>>,
    fan: Option<Box<dyn Fan + Send>>,
    /// Whether this process may write the frequency ceiling and the fan (sysfs attributes are
    /// root-only unless granted).
    writable: Writable,
    live: Option<LiveDriver>,
    i2c: Vec<I2cDevice>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Writable {
    freq_cap: bool,
    fan: bool,
}

impl fmt::Debug for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Board")
            .field("source", &self.source)
            .field("governing_zone", &self.governing_zone)
            .field("sensors", &self.sensors)
            .field("freq_cap", &self.freq_cap.is_some())
            .field("fan", &self.fan.is_some())
            .field("live", &self.live.is_some())
            .field("i2c", &self.i2c)
            .finish()
    }
}

impl Board {
    /// Where the readings come from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// True when this is the simulated SoC.
    pub fn is_simulated(&self) -> bool {
        matches!(self.source, Source::Simulated { .. })
    }

    /// The name of the sample that governs (a zone type, an I2C sensor name, or the twin's
    /// die named after its board's zone); `None` when the board has no SoC temperature source.
    pub fn governing_zone(&self) -> Option<&str> {
        self.governing_zone.as_deref()
    }

    /// Reads every sensor once. `now_ms` is the caller's clock (any fixed origin), used for
    /// staleness. The twin is not advanced here: call [`Board::advance`] first.
    pub fn snapshot(&mut self, now_ms: u64) -> Snapshot {
        self.sensors.snapshot(now_ms)
    }

    /// Advances the twin by the wall time since the previous call, loaded with the CPU time
    /// this process consumed meanwhile; a real board is left alone (`Ok(None)`).
    pub fn advance(&mut self) -> Result<Option<LiveTick>> {
        match &mut self.live {
            Some(live) => live.tick().map(Some).context("advancing the simulated SoC"),
            None => Ok(None),
        }
    }

    /// The CPU frequency ceiling, when the board has one the runtime may drive.
    pub fn freq_cap(&mut self) -> Option<&mut (dyn FreqCap + Send + 'static)> {
        self.freq_cap.as_deref_mut()
    }

    /// The fan, when the board has one the runtime may drive.
    pub fn fan(&mut self) -> Option<&mut (dyn Fan + Send + 'static)> {
        self.fan.as_deref_mut()
    }

    /// Takes the frequency ceiling and the fan out of the board, for a governor that drives
    /// them and restores them itself; the board no longer touches what it handed over. Only
    /// actuators this process may write are handed over: on a real board that usually takes
    /// root or a granted write access (the systemd unit's), and the rest stay with the kernel.
    pub fn take_actuators(&mut self) -> BoardActuators {
        let take = |present: bool, writable: bool, what: &str| {
            if present && !writable {
                log::info!(
                    "the {what} is read-only for this process; the kernel keeps it (run as root \
                     or grant write access to govern it)"
                );
            }
            present && writable
        };
        let freq = take(
            self.freq_cap.is_some(),
            self.writable.freq_cap,
            "CPU frequency ceiling",
        );
        let fan = take(self.fan.is_some(), self.writable.fan, "fan");
        BoardActuators {
            freq_cap: if freq { self.freq_cap.take() } else { None },
            fan: if fan { self.fan.take() } else { None },
        }
    }

    /// The twin's live driver, for a runtime that ticks it on its own schedule.
    pub fn live_driver(&mut self) -> Option<&mut LiveDriver> {
        self.live.as_mut()
    }

    /// The twin itself (ground truth, workload, ambient), when this is the simulated SoC.
    pub fn sim_board(&self) -> Option<&SimBoard> {
        self.live.as_ref().map(LiveDriver::board)
    }

    /// The profile the simulated SoC runs, when the board is the twin (whichever way it was
    /// named: built-in or a TOML file).
    pub fn sim_profile(&self) -> Option<sensor_drivers::sim::Profile> {
        self.sim_board()
            .and_then(|twin| twin.with(|soc| soc.profile().clone()))
    }

    /// The configured I2C sensors and whether each opened.
    pub fn i2c_devices(&self) -> &[I2cDevice] {
        &self.i2c
    }

    /// Hands the fan and the frequency ceiling back to their previous settings. Both are
    /// attempted; the first failure is returned. Dropping the board restores them too, silently.
    pub fn restore(&mut self) -> Result<()> {
        let fan = match &mut self.fan {
            Some(fan) => fan.restore().context("restoring the fan"),
            None => Ok(()),
        };
        let cap = match &mut self.freq_cap {
            Some(cap) => cap.restore().context("restoring the CPU frequency ceiling"),
            None => Ok(()),
        };
        fan.and(cap)
    }
}

/// Opens the sensing source [`select`] picks for `cfg`, logging which one and why.
pub fn open_board(cfg: &SensingConfig) -> Result<Board> {
    cfg.validate()?;
    match select(cfg)? {
        Selection::Twin { profile, reason } => {
            let board = open_twin(&profile, cfg.time_scale)?;
            match &reason {
                TwinReason::Configured => {
                    log::info!("using the {} as configured", board.source());
                }
                TwinReason::NoThermalHardware => log::info!(
                    "no thermal hardware found under {} (no thermal zone, no configured I2C \
                     sensor); using the simulated SoC `{profile}`, heated by this process's CPU time",
                    cfg.root.display()
                ),
                TwinReason::NoUsableZone { zones } => log::warn!(
                    "no usable thermal zone under {} (unreadable zones of unknown type: {}); \
                     using the simulated SoC `{profile}`, heated by this process's CPU time",
                    cfg.root.display(),
                    zones.join(", ")
                ),
            }
            Ok(board)
        }
        Selection::Real { .. } => open_real(cfg),
    }
}

/// The twin of `profile` (a built-in name or a TOML path), live-driven at `time_scale`.
fn open_twin(profile: &str, time_scale: f64) -> Result<Board> {
    let loaded = Profile::load(profile)
        .with_context(|| format!("loading the simulated SoC profile {profile:?}"))?;
    let name = loaded.name.clone();
    let zone = loaded.governing_zone.clone();
    let realism = SensorRealism::board(&loaded);
    let soc = SimSoc::new(loaded)
        .with_context(|| format!("building the simulated SoC from profile {profile:?}"))?;
    let twin = SimBoard::new(soc);
    let sensors = twin.sensor_set(realism);
    let freq_cap: Box<dyn FreqCap + Send> = Box::new(twin.freq_cap());
    let fan = twin.fan().map(|fan| Box::new(fan) as Box<dyn Fan + Send>);
    let live = LiveDriver::new(twin, time_scale).context("driving the simulated SoC")?;
    Ok(Board {
        source: Source::Simulated { profile: name },
        governing_zone: Some(zone),
        sensors,
        freq_cap: Some(freq_cap),
        fan,
        writable: Writable {
            freq_cap: true,
            fan: true,
        },
        live: Some(live),
        i2c: Vec::new(),
    })
}

/// A sensor that could not be opened: every read fails with the same error.
#[derive(Debug, Clone, Copy)]
struct Unopened(SensorError);

impl TempSensor for Unopened {
    fn read_temp(&mut self) -> Result<MilliCelsius, SensorError> {
        Err(self.0)
    }
}

impl PowerSensor for Unopened {
    fn read_power(&mut self) -> Result<PowerReading, SensorError> {
        Err(self.0)
    }
}

fn is_power(role: Role) -> bool {
    matches!(role, Role::BoardPower | Role::RailPower)
}

#[cfg(target_os = "linux")]
fn open_i2c(config: &I2cSensorConfig) -> Result<OpenedSensor, I2cConfigError> {
    sensor_drivers::linux_i2c::open_sensor(config)
}

#[cfg(not(target_os = "linux"))]
fn open_i2c(config: &I2cSensorConfig) -> Result<OpenedSensor, I2cConfigError> {
    Err(I2cConfigError::Bus {
        name: config.name.clone(),
        bus: config.bus.clone(),
        message: "I2C buses are supported on Linux only".to_owned(),
    })
}

/// Adds the configured I2C sensors to `sensors`; one that cannot be opened joins as a sensor
/// whose reads fail (`Missing` when its bus is absent, `Bus` when the chip refused its setup).
fn add_i2c(configs: &[I2cSensorConfig], sensors: &mut SensorSet) -> Vec<I2cDevice> {
    configs
        .iter()
        .map(|config| match open_i2c(config) {
            Ok(opened) => {
                opened.add_to(sensors, config);
                I2cDevice {
                    config: config.clone(),
                    error: None,
                }
            }
            Err(error) => {
                log::warn!("I2C sensor {error}; it reads as failed until the runtime restarts");
                let read_error = match error {
                    I2cConfigError::Bus { .. } => SensorError::Missing,
                    _ => SensorError::Bus,
                };
                if is_power(config.role) {
                    sensors.add_power(
                        config.name.clone(),
                        config.role,
                        Box::new(Unopened(read_error)),
                    );
                } else {
                    sensors.add_temp(
                        config.name.clone(),
                        config.role,
                        Box::new(Unopened(read_error)),
                    );
                }
                I2cDevice {
                    config: config.clone(),
                    error: Some(error.to_string()),
                }
            }
        })
        .collect()
}

/// The board under `cfg.root`: its zones, rails and throttle flags, the configured I2C sensors,
/// the cpufreq ceiling and the `pwm-fan` cooling device.
fn open_real(cfg: &SensingConfig) -> Result<Board> {
    let root = SysRoot::new(&cfg.root);
    let found = board_sensors(&root, cfg.zone.as_deref()).with_context(|| {
        format!(
            "reading the board's sensors under {}",
            root.path().display()
        )
    })?;
    let mut sensors = found.sensors;
    let mut governing_zone = found.governing_zone;
    let i2c_governs = cfg.i2c.iter().any(|s| s.role == Role::SocTemp);
    if governing_zone.is_none()
        && !i2c_governs
        && let Some(expected) = cfg
            .zone
            .as_deref()
            .or_else(|| found.board.kind.default_zone_type())
    {
        log::warn!(
            "{} has no `{expected}` thermal zone under {}; it reads as missing",
            found.board.kind,
            root.thermal().display()
        );
        sensors.add_temp(
            expected,
            Role::SocTemp,
            Box::new(Unopened(SensorError::Missing)),
        );
        governing_zone = Some(expected.to_owned());
    }
    let i2c = add_i2c(&cfg.i2c, &mut sensors);
    if governing_zone.is_none() {
        governing_zone = cfg
            .i2c
            .iter()
            .find(|s| s.role == Role::SocTemp)
            .map(|s| s.name.clone());
    }
    let mut writable = Writable::default();
    let freq_cap = match CpufreqCap::discover(&root.cpu_freq()) {
        Ok(cap) => cap.map(|cap| {
            writable.freq_cap = cap.is_writable();
            Box::new(cap) as Box<dyn FreqCap + Send>
        }),
        Err(error) => {
            log::warn!("no CPU frequency ceiling: {error}");
            None
        }
    };
    let fan = kernel_fan(&root, governing_zone.as_deref()).map(|fan| {
        writable.fan = fan.is_writable();
        Box::new(fan) as Box<dyn Fan + Send>
    });
    let source = Source::Real {
        board: found.board.kind,
        model: found.board.model,
    };
    log::info!(
        "sensing {source}; governing on {}",
        governing_zone.as_deref().unwrap_or("no SoC temperature")
    );
    Ok(Board {
        source,
        governing_zone,
        sensors,
        freq_cap,
        fan,
        writable,
        live: None,
        i2c,
    })
}

/// The `pwm-fan` cooling device, bound to the governing zone (whose kernel governor it must
/// switch off to drive the fan) and to the `pwmfan` tachometer when present.
fn kernel_fan(root: &SysRoot, governing_zone: Option<&str>) -> Option<KernelFan> {
    let thermal = root.thermal_zones();
    let device = thermal
        .cooling_devices()
        .ok()?
        .into_iter()
        .find(|d| d.kind() == FAN_COOLING_TYPE)?;
    let zone = governing_zone.and_then(|kind| thermal.zone_by_type(kind).ok().flatten());
    let fan = KernelFan::new(device, zone);
    let tachometer = root
        .hwmon_chips()
        .chip_by_name(FAN_HWMON_NAME)
        .ok()
        .flatten()
        .and_then(|chip| chip.channel(ChannelKind::Fan, 1));
    Some(match tachometer {
        Some(channel) => fan.with_tachometer(channel.input),
        None => fan,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::fs;

    use sensor_drivers::Health;
    use sensor_drivers::i2c_config::Chip;
    use sensor_drivers::linux::fixtures::{write_jetson_orin_nano_tree, write_pi5_tree};

    use super::*;

    fn config(root: &Path) -> SensingConfig {
        SensingConfig {
            root: root.to_path_buf(),
            ..SensingConfig::default()
        }
    }

    fn pi5() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_pi5_tree(dir.path()).unwrap();
        dir
    }

    fn ambient_sensor(bus: PathBuf) -> I2cSensorConfig {
        I2cSensorConfig {
            name: "case-air".to_owned(),
            bus,
            address: 0x48,
            chip: Chip::Tmp102,
            role: Role::AmbientTemp,
            shunt_micro_ohms: None,
            max_current_ma: None,
        }
    }

    #[test]
    fn an_empty_root_selects_the_twin_for_lack_of_thermal_hardware() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        assert_eq!(
            select(&cfg).unwrap(),
            Selection::Twin {
                profile: DEFAULT_TWIN_PROFILE.to_owned(),
                reason: TwinReason::NoThermalHardware
            }
        );
        let mut board = open_board(&cfg).unwrap();
        assert_eq!(
            board.source(),
            &Source::Simulated {
                profile: "rpi5".to_owned()
            }
        );
        assert!(board.is_simulated());
        assert!(board.live_driver().is_some());
        assert!(board.freq_cap().is_some());
        board.advance().unwrap();
        let snapshot = board.snapshot(0);
        let die = snapshot.soc_temp().unwrap();
        assert!((20_000..60_000).contains(&die.0), "idle twin die {die}");
    }

    #[test]
    fn a_pi5_tree_selects_the_real_board_governed_by_cpu_thermal() {
        let dir = pi5();
        let cfg = config(dir.path());
        let Selection::Real {
            board,
            governing_zone,
        } = select(&cfg).unwrap()
        else {
            panic!("a Pi 5 tree must select the real board");
        };
        assert_eq!(board.kind, BoardKind::RaspberryPi5);
        assert_eq!(governing_zone.as_deref(), Some("cpu-thermal"));

        let mut board = open_board(&cfg).unwrap();
        assert_eq!(
            board.source(),
            &Source::Real {
                board: BoardKind::RaspberryPi5,
                model: Some("Raspberry Pi 5 Model B Rev 1.0".to_owned())
            }
        );
        assert_eq!(board.governing_zone(), Some("cpu-thermal"));
        assert!(board.live_driver().is_none());
        assert!(board.advance().unwrap().is_none());
        let snapshot = board.snapshot(0);
        assert_eq!(snapshot.soc_temp(), Some(MilliCelsius(52_150)));
        assert_eq!(snapshot.governing().unwrap().name, "cpu-thermal");
        assert!(snapshot.throttle.is_some());
        let cap = board.freq_cap().unwrap();
        assert_eq!(cap.cap().0, 2_400_000);
        assert_eq!(cap.levels().len(), 10);
        let fan = board.fan().unwrap();
        assert_eq!(fan.duty().unwrap().get(), 25);
        assert_eq!(fan.speed().unwrap().map(|r| r.0), Some(2_998));
    }

    #[test]
    fn taken_actuators_leave_the_board_and_keep_working() {
        let dir = pi5();
        let mut board = open_board(&config(dir.path())).unwrap();
        let BoardActuators { freq_cap, fan } = board.take_actuators();
        let mut cap = freq_cap.expect("the Pi 5 tree has a writable cpufreq ceiling");
        assert!(fan.is_some(), "the Pi 5 tree has a pwm-fan cooling device");
        assert!(board.freq_cap().is_none() && board.fan().is_none());
        let applied = cap.set_cap(sensor_drivers::KiloHertz(1_500_000)).unwrap();
        assert!(applied.0 <= 1_500_000);
        cap.restore().unwrap();
        assert_eq!(cap.cap().0, 2_400_000);
        // The board restores nothing it no longer holds.
        board.restore().unwrap();
    }

    #[test]
    fn an_orin_tree_governs_on_tj_thermal_and_reads_board_power() {
        let dir = tempfile::tempdir().unwrap();
        write_jetson_orin_nano_tree(dir.path()).unwrap();
        let mut board = open_board(&config(dir.path())).unwrap();
        assert_eq!(board.governing_zone(), Some("tj-thermal"));
        let snapshot = board.snapshot(0);
        assert_eq!(snapshot.soc_temp(), Some(MilliCelsius(47_218)));
        // VDD_IN: 5072 mV x 987 mA.
        assert_eq!(snapshot.board_power().map(|p| p.0), Some(5_006));
        assert_eq!(snapshot.temps.len(), 9);
        assert!(board.fan().is_some());
    }

    #[test]
    fn a_corrupt_governing_zone_stays_real_and_unhealthy_never_the_twin() {
        let cases = [
            ("garbage\n", Health::Error),
            ("", Health::Error),
            ("-273150\n", Health::Implausible),
            ("250000\n", Health::Implausible),
        ];
        for (contents, health) in cases {
            let dir = pi5();
            fs::write(
                dir.path().join("sys/class/thermal/thermal_zone0/temp"),
                contents,
            )
            .unwrap();
            let cfg = config(dir.path());
            assert!(
                matches!(select(&cfg).unwrap(), Selection::Real { .. }),
                "{contents:?}"
            );
            let mut board = open_board(&cfg).unwrap();
            assert!(!board.is_simulated(), "{contents:?}");
            let snapshot = board.snapshot(0);
            let governing = snapshot.governing().unwrap();
            assert_eq!(governing.name, "cpu-thermal");
            assert_eq!(governing.health, health, "{contents:?}");
            assert_eq!(governing.value, None, "{contents:?}");
            assert_eq!(snapshot.soc_temp(), None, "{contents:?}");
        }
    }

    #[test]
    fn a_missing_temp_file_on_a_pi_reads_as_missing_not_as_the_twin() {
        let dir = pi5();
        fs::remove_file(dir.path().join("sys/class/thermal/thermal_zone0/temp")).unwrap();
        let mut board = open_board(&config(dir.path())).unwrap();
        assert!(!board.is_simulated());
        let snapshot = board.snapshot(0);
        assert_eq!(snapshot.governing().unwrap().health, Health::Missing);
        assert_eq!(snapshot.soc_temp(), None);
    }

    #[test]
    fn a_pi_without_any_thermal_zone_is_a_real_board_whose_zone_is_missing() {
        let dir = pi5();
        fs::remove_dir_all(dir.path().join("sys/class/thermal")).unwrap();
        let cfg = config(dir.path());
        assert_eq!(
            select(&cfg).unwrap(),
            Selection::Real {
                board: detect_board(dir.path()),
                governing_zone: Some("cpu-thermal".to_owned())
            }
        );
        let mut board = open_board(&cfg).unwrap();
        assert!(!board.is_simulated());
        assert_eq!(board.governing_zone(), Some("cpu-thermal"));
        let snapshot = board.snapshot(0);
        let governing = snapshot.governing().unwrap();
        assert_eq!(governing.health, Health::Missing);
        assert_eq!(governing.value, None);
        assert!(board.fan().is_none());
    }

    #[test]
    fn an_explicit_sim_forces_the_twin_even_on_a_real_board() {
        let dir = pi5();
        let cfg = SensingConfig {
            sim: Some("jetson-orin-nano".to_owned()),
            time_scale: 50.0,
            ..config(dir.path())
        };
        let mut board = open_board(&cfg).unwrap();
        assert_eq!(
            board.source(),
            &Source::Simulated {
                profile: "jetson-orin-nano".to_owned()
            }
        );
        assert_eq!(board.governing_zone(), Some("tj-thermal"));
        assert!(board.sim_board().is_some());
        assert!(board.snapshot(0).soc_temp().is_some());
    }

    #[test]
    fn a_custom_profile_file_drives_the_twin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("my-board.toml");
        let text = Profile::builtin_toml("rpi4").unwrap().replacen(
            "name = \"rpi4\"",
            "name = \"my-board\"",
            1,
        );
        fs::write(&path, text).unwrap();
        let cfg = SensingConfig {
            sim: Some(path.display().to_string()),
            ..SensingConfig::default()
        };
        let board = open_board(&cfg).unwrap();
        assert_eq!(
            board.source(),
            &Source::Simulated {
                profile: "my-board".to_owned()
            }
        );
    }

    #[test]
    fn an_unknown_profile_is_an_error_naming_the_builtin_ones() {
        let cfg = SensingConfig {
            sim: Some("nonsense".to_owned()),
            ..SensingConfig::default()
        };
        let message = format!("{:#}", open_board(&cfg).unwrap_err());
        assert!(message.contains("nonsense"), "{message}");
        assert!(message.contains("rpi5"), "{message}");
    }

    #[test]
    fn the_twin_heats_when_this_process_burns_cpu() {
        let cfg = SensingConfig {
            sim: Some("rpi5".to_owned()),
            time_scale: 200.0,
            ..SensingConfig::default()
        };
        let mut board = open_board(&cfg).unwrap();
        board.advance().unwrap();
        let idle = board.snapshot(0).soc_temp().unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
        let tick = board.advance().unwrap().unwrap();
        assert!(tick.busy_cores > 0.2, "busy cores {}", tick.busy_cores);
        let hot = board.snapshot(1).soc_temp().unwrap();
        assert!(hot.0 > idle.0 + 1_000, "idle {idle}, after load {hot}");
    }

    #[test]
    fn a_configured_zone_the_root_lacks_is_an_error_listing_the_zones() {
        let dir = pi5();
        let cfg = SensingConfig {
            zone: Some("gpu-thermal".to_owned()),
            ..config(dir.path())
        };
        let message = format!("{:#}", select(&cfg).unwrap_err());
        assert!(message.contains("gpu-thermal"), "{message}");
        assert!(message.contains("cpu-thermal"), "{message}");
    }

    #[test]
    fn an_unknown_board_with_only_unreadable_unknown_zones_selects_the_twin() {
        let dir = tempfile::tempdir().unwrap();
        let zone = dir.path().join("sys/class/thermal/thermal_zone0");
        fs::create_dir_all(&zone).unwrap();
        fs::write(zone.join("type"), "acpitz\n").unwrap();
        fs::write(zone.join("temp"), "garbage\n").unwrap();
        assert_eq!(
            select(&config(dir.path())).unwrap(),
            Selection::Twin {
                profile: DEFAULT_TWIN_PROFILE.to_owned(),
                reason: TwinReason::NoUsableZone {
                    zones: vec!["acpitz".to_owned()]
                }
            }
        );
        fs::write(zone.join("temp"), "41000\n").unwrap();
        assert!(matches!(
            select(&config(dir.path())).unwrap(),
            Selection::Real { .. }
        ));
    }

    #[test]
    fn configured_i2c_sensors_make_a_real_board_and_a_dead_bus_reads_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SensingConfig {
            i2c: vec![ambient_sensor(dir.path().join("no-such-i2c-bus"))],
            ..config(dir.path())
        };
        assert!(matches!(select(&cfg).unwrap(), Selection::Real { .. }));
        let mut board = open_board(&cfg).unwrap();
        assert!(!board.is_simulated());
        assert_eq!(board.governing_zone(), None);
        let [device] = board.i2c_devices() else {
            panic!("one I2C device expected");
        };
        assert!(device.error.is_some());
        let snapshot = board.snapshot(0);
        let sample = snapshot
            .temps
            .iter()
            .find(|t| t.name == "case-air")
            .unwrap();
        assert_eq!(sample.role, Role::AmbientTemp);
        assert_eq!(sample.health, Health::Missing);
        assert_eq!(sample.value, None);
    }

    #[test]
    fn an_invalid_i2c_entry_is_a_config_error_before_any_bus_is_opened() {
        let mut sensor = ambient_sensor(PathBuf::from("/dev/i2c-1"));
        sensor.role = Role::BoardPower;
        let cfg = SensingConfig {
            i2c: vec![sensor],
            ..SensingConfig::default()
        };
        let message = format!("{:#}", open_board(&cfg).unwrap_err());
        assert!(message.contains("case-air"), "{message}");
    }

    #[test]
    fn the_sensors_table_parses_with_defaults_and_rejects_bad_values() {
        let cfg = SensingConfig::from_toml_str(
            r#"
            [model]
            name = "ignored here"

            [sensors]
            zone = "tj-thermal"
            time_scale = 10.0

            [[sensors.i2c]]
            name = "supply"
            bus = "/dev/i2c-1"
            address = 0x40
            chip = "ina226"
            role = "board_power"
            shunt_micro_ohms = 10000
            max_current_ma = 5000
            "#,
        )
        .unwrap();
        assert_eq!(cfg.root, PathBuf::from("/"));
        assert_eq!(cfg.zone.as_deref(), Some("tj-thermal"));
        assert_eq!(cfg.sim, None);
        assert_eq!(cfg.time_scale, 10.0);
        assert_eq!(cfg.i2c.len(), 1);
        assert_eq!(cfg.i2c[0].role, Role::BoardPower);
        assert_eq!(
            SensingConfig::from_toml_str("").unwrap(),
            SensingConfig::default()
        );
        let bad = [
            "[sensors]\ntime_scale = 0.0\n",
            "[sensors]\ntime_scale = -2.0\n",
            "[sensors]\nsim = \"\"\n",
            "[sensors]\nzone = \" \"\n",
            "[sensors]\nunknown_key = 1\n",
        ];
        for text in bad {
            assert!(SensingConfig::from_toml_str(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_board_can_move_to_the_governor_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Board>();
    }
}
