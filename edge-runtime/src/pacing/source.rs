//! Where the driver's readings come from: a board's [`SensorSet`] or any closure, mapped onto
//! the governor's [`TempReading`] and board power.

use std::time::Duration;

use sensor_drivers::sensor_set::{SensorSet, Snapshot};

use crate::governor::{Health, TempReading};

/// What a sensor source says at one tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceReading {
    /// The governing temperature. A source may leave `sampled_at` at the tick time for a
    /// reading that is not fresh; the driver replaces it with the last fresh sample's time.
    pub temp: TempReading,
    /// Board power in W, when a healthy power sensor answered.
    pub power_w: Option<f32>,
}

/// Where the driver gets its readings: a board's [`SensorSet`], or anything that can produce
/// a [`SourceReading`] (closures `FnMut(Duration) -> SourceReading` qualify).
pub trait ObservationSource {
    /// Reads the governing temperature and the board power at `now` (monotonic time since the
    /// runtime's epoch; the same time base as [`GovernorDriver::tick`]).
    fn observe(&mut self, now: Duration) -> SourceReading;
}

impl ObservationSource for SensorSet {
    /// Takes a snapshot with `now` in whole milliseconds and maps it with
    /// [`reading_from_snapshot`].
    fn observe(&mut self, now: Duration) -> SourceReading {
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        reading_from_snapshot(&self.snapshot(now_ms), now)
    }
}

impl<F: FnMut(Duration) -> SourceReading> ObservationSource for F {
    fn observe(&mut self, now: Duration) -> SourceReading {
        self(now)
    }
}

/// Maps a snapshot onto the governor's reading: the governing (`soc_temp`) sample with its
/// health mapped by [`Health::from`] and its value in °C (the last good value when stale, NaN
/// when there is none), sampled at `now`; a board without a governing sensor reads as
/// missing. Power is the first healthy board-power sample, in W.
pub fn reading_from_snapshot(snapshot: &Snapshot, now: Duration) -> SourceReading {
    let temp = match snapshot.governing() {
        None => TempReading::missing(now),
        Some(sample) => {
            let health = Health::from(sample.health);
            match sample.value {
                Some(mc) => TempReading {
                    celsius: mc.celsius(),
                    health,
                    sampled_at: now,
                },
                None if health == Health::Fresh => TempReading::missing(now),
                None => TempReading {
                    celsius: f32::NAN,
                    health,
                    sampled_at: now,
                },
            }
        }
    };
    SourceReading {
        temp,
        power_w: snapshot.board_power().map(|p| p.watts() as f32),
    }
}
