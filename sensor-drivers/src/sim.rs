//! The simulated SoC ("twin"): a two-node thermal model (die and board/heatsink to ambient),
//! a power model (idle plus f·V²-scaled dynamic power per busy core over the board's DVFS
//! table), the firmware's own protection (progressive throttling, fan curve with hysteresis,
//! critical shutdown) and realistic sensors, all behind the same traits as a real board. It is
//! driven live from this process's CPU time ([`live`]) or offline from a workload model
//! ([`offline`]). Profiles for `rpi4`, `rpi5`, `rpi5-active` and `jetson-orin-nano` are built in
//! and documented, with their fit to published figures, in [`profile`].

pub mod live;
pub mod model;
pub mod offline;
pub mod profile;
pub mod realism;
pub mod sensors;
pub mod soc;

pub use live::{LiveDriver, LiveTick, MAX_CATCH_UP, MAX_TIME_SCALE, ProcCpuClock};
pub use offline::{OfflineSummary, run_offline};
pub use profile::{BUILTIN_PROFILES, Profile, ProfileError};
pub use realism::SensorRealism;
pub use sensors::{Node, SimBoard, SimFan, SimFreqCap, SimPowerSensor, SimTempSensor, SimThrottle};
pub use soc::{GroundTruth, SimSoc, Workload};
