//! Turning SIGTERM and SIGINT into an orderly stop. The first signal sets a flag that the
//! token loop, the trainer and the service poll between steps, so the work ends at a step
//! boundary and every actuator the governor changed is restored on the way out. A second
//! signal while the first is being honoured ends the process at once (exit status 130), the
//! way a user pressing Ctrl-C twice expects.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

/// Exit status of a process ended by a second signal (128 + SIGINT, as shells report it).
pub const FORCED_EXIT_STATUS: i32 = 130;

/// A stop request shared by everything that does work: set by a signal or by
/// [`Shutdown::request`], read with [`Shutdown::is_requested`] (one relaxed atomic load).
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
}

impl Shutdown {
    /// A flag that only [`Shutdown::request`] sets (for tests and library users that own
    /// their signals).
    pub fn new() -> Self {
        Self::default()
    }

    /// A flag set by SIGTERM and SIGINT; a second such signal exits the process with
    /// [`FORCED_EXIT_STATUS`].
    pub fn install() -> Result<Self> {
        let shutdown = Self::new();
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            // Registered first, so it sees the flag as it was before this signal set it.
            signal_hook::flag::register_conditional_shutdown(
                signal,
                FORCED_EXIT_STATUS,
                Arc::clone(&shutdown.flag),
            )
            .with_context(|| format!("installing the handler for signal {signal}"))?;
            signal_hook::flag::register(signal, Arc::clone(&shutdown.flag))
                .with_context(|| format!("installing the handler for signal {signal}"))?;
        }
        Ok(shutdown)
    }

    /// Asks everything sharing this flag to stop.
    pub fn request(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// True once a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// The underlying flag, for loops that take an `&AtomicBool`.
    pub fn flag(&self) -> &AtomicBool {
        &self.flag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_seen_by_every_clone() {
        let a = Shutdown::new();
        let b = a.clone();
        assert!(!b.is_requested());
        a.request();
        assert!(b.is_requested());
        assert!(b.flag().load(Ordering::SeqCst));
    }
}
