//! cpufreq policies (`/sys/devices/system/cpu/cpufreq/policy*`) and [`FreqCap`] actuators that
//! lower `scaling_max_freq` and put the original back on restore or drop. On a Raspberry Pi
//! `scaling_cur_freq` is the requested clock, not the one the firmware actually runs.

use std::path::{Path, PathBuf};

use super::sysfs::{self, SysfsError};
use crate::error::ActuatorError;
use crate::traits::{FreqCap, level_at_or_below};
use crate::units::KiloHertz;

/// The cpufreq directory (`/sys/devices/system/cpu/cpufreq` on a device).
#[derive(Debug, Clone)]
pub struct CpuFreq {
    root: PathBuf,
}

impl Default for CpuFreq {
    fn default() -> Self {
        CpuFreq::with_root("/sys/devices/system/cpu/cpufreq")
    }
}

impl CpuFreq {
    /// Policies under `root` (the directory holding `policy*`).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        CpuFreq { root: root.into() }
    }

    /// Every policy, by index.
    pub fn policies(&self) -> Result<Vec<CpufreqPolicy>, SysfsError> {
        Ok(sysfs::indexed_entries(&self.root, "policy")?
            .into_iter()
            .map(|(index, dir)| CpufreqPolicy { index, dir })
            .collect())
    }
}

/// One cpufreq policy (a cluster of CPUs sharing a clock).
#[derive(Debug, Clone)]
pub struct CpufreqPolicy {
    index: u32,
    dir: PathBuf,
}

impl CpufreqPolicy {
    /// The policy in `dir` (`policyN`).
    pub fn at(index: u32, dir: PathBuf) -> Self {
        CpufreqPolicy { index, dir }
    }

    /// The policy's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The policy's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The CPUs in the policy (`related_cpus`, else `affected_cpus`).
    pub fn cpus(&self) -> Result<Vec<u32>, SysfsError> {
        sysfs::read_list(&self.dir.join("related_cpus"))
            .or_else(|_| sysfs::read_list(&self.dir.join("affected_cpus")))
    }

    /// The available frequencies, ascending and de-duplicated. Drivers without a table
    /// (`scaling_available_frequencies` absent) offer `cpuinfo_min_freq` and `cpuinfo_max_freq`.
    pub fn available_frequencies(&self) -> Result<Vec<KiloHertz>, SysfsError> {
        let mut levels: Vec<KiloHertz> =
            match sysfs::read_list::<u32>(&self.dir.join("scaling_available_frequencies")) {
                Ok(list) => list.into_iter().map(KiloHertz).collect(),
                Err(SysfsError::NotFound { .. }) => vec![
                    KiloHertz(sysfs::read_int(&self.dir.join("cpuinfo_min_freq"))?),
                    KiloHertz(sysfs::read_int(&self.dir.join("cpuinfo_max_freq"))?),
                ],
                Err(e) => return Err(e),
            };
        levels.sort_unstable();
        levels.dedup();
        levels.retain(|level| level.0 > 0);
        if levels.is_empty() {
            return Err(SysfsError::Empty {
                path: self.dir.join("scaling_available_frequencies"),
            });
        }
        Ok(levels)
    }

    /// Reads `scaling_max_freq`.
    pub fn max_freq(&self) -> Result<KiloHertz, SysfsError> {
        sysfs::read_int(&self.dir.join("scaling_max_freq")).map(KiloHertz)
    }

    /// Writes `scaling_max_freq` (needs root).
    pub fn set_max_freq(&self, freq: KiloHertz) -> Result<(), SysfsError> {
        sysfs::write_text(&self.dir.join("scaling_max_freq"), &freq.0.to_string())
    }

    /// True when this process may write `scaling_max_freq`.
    pub fn max_freq_writable(&self) -> bool {
        sysfs::is_writable(&self.dir.join("scaling_max_freq"))
    }

    /// Reads `scaling_cur_freq` (the requested clock).
    pub fn cur_freq(&self) -> Result<KiloHertz, SysfsError> {
        sysfs::read_int(&self.dir.join("scaling_cur_freq")).map(KiloHertz)
    }

    /// Reads `scaling_governor`.
    pub fn governor(&self) -> Result<String, SysfsError> {
        sysfs::read_text(&self.dir.join("scaling_governor"))
    }
}

/// A [`FreqCap`] over one policy's `scaling_max_freq`.
#[derive(Debug)]
pub struct PolicyCap {
    policy: CpufreqPolicy,
    levels: Vec<KiloHertz>,
    cap: KiloHertz,
    original: Option<KiloHertz>,
}

impl PolicyCap {
    /// Reads the policy's levels and current ceiling; nothing is written.
    pub fn new(policy: CpufreqPolicy) -> Result<Self, SysfsError> {
        let levels = policy.available_frequencies()?;
        let cap = policy.max_freq()?;
        Ok(PolicyCap {
            policy,
            levels,
            cap,
            original: None,
        })
    }

    /// The policy.
    pub fn policy(&self) -> &CpufreqPolicy {
        &self.policy
    }
}

impl FreqCap for PolicyCap {
    fn levels(&self) -> &[KiloHertz] {
        &self.levels
    }

    fn cap(&self) -> KiloHertz {
        self.cap
    }

    fn set_cap(&mut self, cap: KiloHertz) -> Result<KiloHertz, ActuatorError> {
        let level = level_at_or_below(&self.levels, cap).ok_or(ActuatorError::Unsupported)?;
        let original = match self.original {
            Some(original) => original,
            None => self.policy.max_freq()?,
        };
        self.policy.set_max_freq(level)?;
        self.original = Some(original);
        self.cap = level;
        Ok(level)
    }

    fn restore(&mut self) -> Result<(), ActuatorError> {
        if let Some(original) = self.original {
            self.policy.set_max_freq(original)?;
            self.cap = original;
            self.original = None;
        }
        Ok(())
    }
}

impl Drop for PolicyCap {
    fn drop(&mut self) {
        // Drop cannot report; callers who need the outcome call `restore` first.
        let _ = FreqCap::restore(self);
    }
}

/// A [`FreqCap`] over every policy: each gets its own highest level at or below the cap. The
/// levels offered are those of the policy with the highest top frequency.
#[derive(Debug)]
pub struct CpufreqCap {
    caps: Vec<PolicyCap>,
    leader: usize,
}

impl CpufreqCap {
    /// Caps over all `policies`; `None` when there are none.
    pub fn new(caps: Vec<PolicyCap>) -> Option<Self> {
        let leader = caps
            .iter()
            .enumerate()
            .max_by_key(|(_, cap)| cap.levels.last().copied())
            .map(|(i, _)| i)?;
        Some(CpufreqCap { caps, leader })
    }

    /// Caps over every readable policy under `cpufreq`.
    pub fn discover(cpufreq: &CpuFreq) -> Result<Option<Self>, SysfsError> {
        let caps = cpufreq
            .policies()?
            .into_iter()
            .map(PolicyCap::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CpufreqCap::new(caps))
    }

    /// True when this process may write every policy's `scaling_max_freq`.
    pub fn is_writable(&self) -> bool {
        self.caps.iter().all(|cap| cap.policy.max_freq_writable())
    }

    fn leader(&self) -> Option<&PolicyCap> {
        self.caps.get(self.leader)
    }
}

impl FreqCap for CpufreqCap {
    fn levels(&self) -> &[KiloHertz] {
        self.leader()
            .map(|cap| cap.levels.as_slice())
            .unwrap_or(&[])
    }

    fn cap(&self) -> KiloHertz {
        self.leader().map(|cap| cap.cap).unwrap_or_default()
    }

    fn set_cap(&mut self, cap: KiloHertz) -> Result<KiloHertz, ActuatorError> {
        let mut applied = None;
        for (i, policy) in self.caps.iter_mut().enumerate() {
            let level = policy.set_cap(cap)?;
            if i == self.leader {
                applied = Some(level);
            }
        }
        applied.ok_or(ActuatorError::Missing)
    }

    fn restore(&mut self) -> Result<(), ActuatorError> {
        let mut first_error = None;
        for policy in &mut self.caps {
            if let Err(e) = policy.restore() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
