//! Whole-system CPU load and memory through `sysinfo`, for the `thermo sensors` listing and
//! the governor's context. CPU usage is a difference between two refreshes, so the first
//! [`SystemLoad::sample`] after construction reports the usage since boot.

use sysinfo::{MemoryRefreshKind, RefreshKind, System};

/// CPU usage and memory at one moment.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LoadSample {
    /// Average usage over all CPUs since the previous sample, 0 to 100 %.
    pub cpu_usage_pct: f32,
    /// Number of logical CPUs.
    pub cpus: usize,
    /// Total memory in bytes.
    pub memory_total_bytes: u64,
    /// Memory available to new allocations in bytes.
    pub memory_available_bytes: u64,
}

/// A reusable sysinfo handle.
#[derive(Debug)]
pub struct SystemLoad {
    system: System,
}

impl Default for SystemLoad {
    fn default() -> Self {
        SystemLoad::new()
    }
}

impl SystemLoad {
    /// A handle with CPU and memory loaded once.
    pub fn new() -> Self {
        let mut system = System::new_with_specifics(
            RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        system.refresh_cpu_usage();
        SystemLoad { system }
    }

    /// Refreshes and returns the current load.
    pub fn sample(&mut self) -> LoadSample {
        self.system.refresh_cpu_usage();
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        LoadSample {
            cpu_usage_pct: self.system.global_cpu_usage(),
            cpus: self.system.cpus().len(),
            memory_total_bytes: self.system.total_memory(),
            memory_available_bytes: self.system.available_memory(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_this_machines_cpus_and_memory() {
        let mut load = SystemLoad::new();
        let sample = load.sample();
        assert!(sample.cpus >= 1);
        assert!(sample.memory_total_bytes > 0);
        assert!(sample.memory_available_bytes <= sample.memory_total_bytes);
        assert!((0.0..=100.0).contains(&sample.cpu_usage_pct));
    }
}
