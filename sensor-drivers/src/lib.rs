//! Sensing and cooling for edge boards, behind small traits a governor can use without knowing
//! what is underneath: embedded-hal 1.0 I2C drivers for temperature and power chips (the
//! `no_std` core), Linux sysfs readers and actuators for thermal zones, hwmon, cooling devices,
//! cpufreq and Raspberry Pi throttle flags (feature `linux`), a simulated SoC (feature `sim`),
//! Raspberry Pi buses through rppal (feature `rpi`) and `/dev/i2c-N` through linux-embedded-hal
//! (feature `linux-i2c`). This crate owns no threads and no policy: it reads, writes and
//! reports health; deciding is the runtime's governor's job.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

pub mod error;
pub mod health;
pub mod i2c;
pub mod pwm_fan;
pub mod throttle;
pub mod traits;
pub mod units;

#[cfg(feature = "std")]
pub mod sensor_set;

#[cfg(feature = "linux")]
pub mod linux;

#[cfg(feature = "sim")]
pub mod sim;

#[cfg(feature = "std")]
pub mod i2c_config;

#[cfg(all(feature = "rpi", target_os = "linux"))]
pub mod rpi;

#[cfg(feature = "linux-i2c")]
pub mod linux_i2c;

pub use error::{ActuatorError, SensorError};
pub use health::{Health, HealthMonitor, HealthPolicy, PlausibleRange, check_plausible};
pub use throttle::{ThrottleFlags, ThrottleTracker};
pub use traits::{Fan, FreqCap, PowerReading, PowerSensor, TempSensor, ThrottleSource};
pub use units::{
    KiloHertz, MicroVolts, MilliAmps, MilliCelsius, MilliVolts, MilliWatts, Percent, Rpm,
};
