//! Live driving: the twin heats with the CPU time this process really consumes, so a real
//! generation warms the simulated die. Each [`LiveDriver::tick`] measures the process CPU time
//! and the wall time since the previous tick, turns their ratio into busy cores, and advances
//! the twin by the wall time multiplied by a time-scale factor (so a test can compress minutes
//! of heating into seconds). Clocks are traits so tests can inject exact ones.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::sensors::SimBoard;
use super::soc::Workload;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, fixed at 100 by the kernel ABI).
const USER_HZ: u64 = 100;

/// Fastest time scale a [`LiveDriver`] accepts, in simulated seconds per wall second.
pub const MAX_TIME_SCALE: f64 = 1000.0;

/// Most simulated time one [`LiveDriver::tick`] advances the twin by: a longer gap between
/// ticks (a stalled or suspended process) advances it by this much, so a tick stays bounded.
pub const MAX_CATCH_UP: Duration = Duration::from_secs(600);

/// Live driving failed.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The process CPU time could not be read.
    #[error("reading process CPU time from {path}: {reason}")]
    CpuTime {
        /// The file tried last.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The time scale is not above 0 and at most [`MAX_TIME_SCALE`].
    #[error("time scale must be above 0 and at most {MAX_TIME_SCALE}, got {0}")]
    TimeScale(f64),
    /// The twin's lock was poisoned by a panicking thread.
    #[error("the simulated SoC is unavailable (a thread panicked while holding it)")]
    Unavailable,
}

/// Cumulative CPU time consumed by this process.
pub trait CpuClock {
    /// CPU time (user + system, all threads) since the process started.
    fn cpu_time(&mut self) -> Result<Duration, LiveError>;
}

/// Monotonic wall time.
pub trait WallClock {
    /// Time since an arbitrary fixed origin.
    fn now(&mut self) -> Duration;
}

/// The process's CPU time from procfs `self/stat` (`utime + stime` in clock ticks, all threads,
/// including exited ones; 10 ms resolution). `self/schedstat` is not used: it covers the main
/// thread only.
#[derive(Debug, Clone)]
pub struct ProcCpuClock {
    proc_root: PathBuf,
}

impl Default for ProcCpuClock {
    fn default() -> Self {
        ProcCpuClock::with_root("/proc")
    }
}

impl ProcCpuClock {
    /// Reads `<proc_root>/self/...`.
    pub fn with_root(proc_root: impl Into<PathBuf>) -> Self {
        ProcCpuClock {
            proc_root: proc_root.into(),
        }
    }
}

/// Parses `utime + stime` (fields 14 and 15) of `stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<Duration> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Field 3 (state) is the first after ')', so utime (14) is the 12th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime.checked_add(stime)?;
    Some(Duration::from_millis(ticks.checked_mul(1000 / USER_HZ)?))
}

impl CpuClock for ProcCpuClock {
    fn cpu_time(&mut self) -> Result<Duration, LiveError> {
        let stat = self.proc_root.join("self/stat");
        let text = std::fs::read_to_string(&stat).map_err(|e| LiveError::CpuTime {
            path: stat.clone(),
            reason: e.to_string(),
        })?;
        parse_stat(&text).ok_or_else(|| LiveError::CpuTime {
            path: stat,
            reason: "unexpected format".to_owned(),
        })
    }
}

/// [`Instant`]-based wall clock.
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl WallClock for MonotonicClock {
    fn now(&mut self) -> Duration {
        self.origin.elapsed()
    }
}

/// What one live tick did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveTick {
    /// Wall time since the previous tick.
    pub wall: Duration,
    /// Busy cores fed to the twin (CPU time / wall time, times the core scale).
    pub busy_cores: f64,
    /// Simulated time advanced.
    pub simulated: Duration,
}

/// Feeds a [`SimBoard`] from real CPU consumption.
#[derive(Debug)]
pub struct LiveDriver<C = ProcCpuClock, W = MonotonicClock> {
    board: SimBoard,
    cpu: C,
    wall: W,
    time_scale: f64,
    core_scale: f64,
    last: Option<(Duration, Duration)>,
}

impl LiveDriver {
    /// Drives `board` from this process's CPU time with a real wall clock; simulated time
    /// runs `time_scale` times faster than wall time.
    pub fn new(board: SimBoard, time_scale: f64) -> Result<Self, LiveError> {
        LiveDriver::with_clocks(
            board,
            ProcCpuClock::default(),
            MonotonicClock::default(),
            time_scale,
        )
    }
}

impl<C: CpuClock, W: WallClock> LiveDriver<C, W> {
    /// Drives `board` from the given clocks.
    pub fn with_clocks(
        board: SimBoard,
        cpu: C,
        wall: W,
        time_scale: f64,
    ) -> Result<Self, LiveError> {
        if !(time_scale.is_finite() && time_scale > 0.0 && time_scale <= MAX_TIME_SCALE) {
            return Err(LiveError::TimeScale(time_scale));
        }
        Ok(LiveDriver {
            board,
            cpu,
            wall,
            time_scale,
            core_scale: 1.0,
            last: None,
        })
    }

    /// Multiplies measured busy cores by `scale` (for a host with fewer cores than the board).
    pub fn with_core_scale(mut self, scale: f64) -> Self {
        self.core_scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        self
    }

    /// The board driven.
    pub fn board(&self) -> &SimBoard {
        &self.board
    }

    /// Measures CPU and wall time since the previous tick, sets the twin's workload from their
    /// ratio and advances it by the scaled wall time, at most [`MAX_CATCH_UP`]. The first tick
    /// only takes the baseline.
    pub fn tick(&mut self) -> Result<LiveTick, LiveError> {
        let cpu = self.cpu.cpu_time()?;
        let wall = self.wall.now();
        let Some((last_cpu, last_wall)) = self.last.replace((cpu, wall)) else {
            return Ok(LiveTick {
                wall: Duration::ZERO,
                busy_cores: 0.0,
                simulated: Duration::ZERO,
            });
        };
        let wall_dt = wall.saturating_sub(last_wall);
        let cpu_dt = cpu.saturating_sub(last_cpu);
        let busy = if wall_dt.is_zero() {
            0.0
        } else {
            cpu_dt.as_secs_f64() / wall_dt.as_secs_f64() * self.core_scale
        };
        let simulated = Duration::try_from_secs_f64(wall_dt.as_secs_f64() * self.time_scale)
            .unwrap_or(MAX_CATCH_UP)
            .min(MAX_CATCH_UP);
        self.board
            .with(|soc| {
                soc.set_workload(Workload::from_busy_cores(busy));
                soc.step(simulated);
            })
            .ok_or(LiveError::Unavailable)?;
        Ok(LiveTick {
            wall: wall_dt,
            busy_cores: busy,
            simulated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_after_an_odd_command_name() {
        let stat = "4242 (my (odd) name) R 1 4242 4242 0 -1 4194304 100 0 0 0 150 25 0 0 20 0 3 0";
        assert_eq!(parse_stat(stat), Some(Duration::from_millis(1_750)));
        assert_eq!(parse_stat("4242 (short) R 1"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn reads_cpu_time_from_an_injected_proc_root() {
        let dir = tempfile::tempdir().unwrap();
        let mut clock = ProcCpuClock::with_root(dir.path());
        assert!(matches!(clock.cpu_time(), Err(LiveError::CpuTime { .. })));
        std::fs::create_dir(dir.path().join("self")).unwrap();
        std::fs::write(
            dir.path().join("self/stat"),
            "1 (x) S 0 0 0 0 0 0 0 0 0 0 7 3 0",
        )
        .unwrap();
        assert_eq!(clock.cpu_time().unwrap(), Duration::from_millis(100));
        std::fs::write(dir.path().join("self/stat"), "garbage").unwrap();
        assert!(matches!(clock.cpu_time(), Err(LiveError::CpuTime { .. })));
        assert!(ProcCpuClock::default().cpu_time().is_ok());
    }
}
