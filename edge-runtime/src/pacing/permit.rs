//! Permits: the shared handle the engine and the trainer consult before every token or
//! training step, and the decision task updates once per control period.
//!
//! The fast path is lock-free: one atomic load of the class's duty, one of the higher classes'
//! activity, and two monotonic clock reads (served from the vDSO on Linux, no system call) to
//! time the step. Pacing spreads the idle time evenly: after a step that kept the pool busy
//! for `t`, the next permit of that class is granted `t·(1 − duty)/duty` later, counting the
//! time that has already passed, so inter-token latency stays even instead of bursty. A
//! paused class (duty 0) waits, re-checking every few milliseconds. A lower-priority class
//! also waits while a higher one is mid-step or about to take its next step, which is how
//! training gives way to a chat at token granularity.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::governor::{Decision, Priority};

/// Poll interval while paused or yielding.
const POLL: Duration = Duration::from_millis(5);
/// Longest sleep of [`Permits::acquire_unless`] between looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// Minimum time a class counts as active after its last step.
const ACTIVE_GRACE: Duration = Duration::from_millis(10);

#[derive(Debug, Default)]
struct ClassState {
    duty_bits: AtomicU32,
    last_busy_ns: AtomicU64,
    last_end_ns: AtomicU64,
    active_until_ns: AtomicU64,
    in_flight: AtomicU32,
    steps: AtomicU64,
    busy_ns: AtomicU64,
    waited_ns: AtomicU64,
    held: AtomicBool,
}

#[derive(Debug)]
struct Shared {
    epoch: Instant,
    threads: AtomicU32,
    order: [Priority; 3],
    classes: [ClassState; 3],
}

/// Cheap, cloneable handle to the governor's pacing (one `Arc` inside).
#[derive(Clone, Debug)]
pub struct Permits {
    shared: Arc<Shared>,
}

/// Cumulative per-class counters since the handle was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PermitStats {
    /// When the snapshot was taken, since the handle's epoch.
    pub at: Duration,
    /// Completed steps per class (indexed by [`Priority::index`]).
    pub steps: [u64; 3],
    /// Time steps kept the pool busy, per class.
    pub busy: [Duration; 3],
    /// Time spent waiting for a permit (pacing, pause, yielding), per class.
    pub waited: [Duration; 3],
}

impl PermitStats {
    /// Per class, the fraction of the interval since `earlier` spent running steps.
    pub fn occupancy_since(&self, earlier: &PermitStats) -> [f32; 3] {
        let span = self.at.saturating_sub(earlier.at).as_secs_f64();
        std::array::from_fn(|i| {
            if span <= 0.0 {
                return 0.0;
            }
            let busy = self.busy[i].saturating_sub(earlier.busy[i]).as_secs_f64();
            (busy / span).clamp(0.0, 1.0) as f32
        })
    }

    /// Per class, the fraction of the interval since `earlier` the class had work (running or
    /// waiting for a permit): the demand the governor should plan for.
    pub fn demand_since(&self, earlier: &PermitStats) -> [f32; 3] {
        let span = self.at.saturating_sub(earlier.at).as_secs_f64();
        std::array::from_fn(|i| {
            if span <= 0.0 {
                return 0.0;
            }
            let busy = self.busy[i].saturating_sub(earlier.busy[i]).as_secs_f64();
            let waited = self.waited[i]
                .saturating_sub(earlier.waited[i])
                .as_secs_f64();
            ((busy + waited) / span).clamp(0.0, 1.0) as f32
        })
    }

    /// Fraction of the interval since `earlier` the pool was busy with any class.
    pub fn utilisation_since(&self, earlier: &PermitStats) -> f32 {
        self.occupancy_since(earlier)
            .iter()
            .sum::<f32>()
            .clamp(0.0, 1.0)
    }
}

/// A granted permit: hold it for the duration of one token or training step; dropping it
/// records the step's busy time.
#[derive(Debug)]
pub struct Permit<'a> {
    shared: &'a Shared,
    class: Priority,
    start: Instant,
}

impl Permits {
    /// A handle starting unpaced with `threads` compute threads and the default priority
    /// order (interactive > training > batch).
    pub fn new(threads: u16) -> Self {
        Self::with_priorities(
            threads,
            [Priority::Interactive, Priority::Training, Priority::Batch],
        )
    }

    /// Like [`Permits::new`] with the priority order `order` (highest first).
    pub fn with_priorities(threads: u16, order: [Priority; 3]) -> Self {
        let shared = Shared {
            epoch: Instant::now(),
            threads: AtomicU32::new(u32::from(threads.max(1))),
            order,
            classes: Default::default(),
        };
        for c in &shared.classes {
            c.duty_bits.store(1.0f32.to_bits(), Ordering::Relaxed);
        }
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Publishes a decision's pacing and thread count (called by the decision task).
    pub fn apply(&self, d: &Decision) {
        for c in Priority::ALL {
            let duty = d.pace(c).duty;
            let duty = if duty.is_nan() {
                0.0
            } else {
                duty.clamp(0.0, 1.0)
            };
            self.shared.classes[c.index()]
                .duty_bits
                .store(duty.to_bits(), Ordering::Release);
        }
        self.shared
            .threads
            .store(u32::from(d.threads.max(1)), Ordering::Release);
    }

    /// Compute threads the engine should use for its next step.
    pub fn threads(&self) -> u16 {
        u16::try_from(self.shared.threads.load(Ordering::Acquire)).unwrap_or(u16::MAX)
    }

    /// Current duty of `class` (1 = unpaced, 0 = paused).
    pub fn duty(&self, class: Priority) -> f32 {
        f32::from_bits(
            self.shared.classes[class.index()]
                .duty_bits
                .load(Ordering::Acquire),
        )
    }

    /// Waits out any pacing delay, pause or higher-priority activity, then grants a permit
    /// for one step of `class`. Never blocks when the class is unpaced and no higher class is
    /// active.
    pub fn acquire(&self, class: Priority) -> Permit<'_> {
        let never = AtomicBool::new(false);
        loop {
            if let Some(p) = self.acquire_unless(class, &never) {
                return p;
            }
        }
    }

    /// As [`Permits::acquire`], but gives up (`None`) once `stop` is set, checking it at
    /// least every 50 ms of waiting, so a paused class still notices a stop request.
    pub fn acquire_unless(&self, class: Priority, stop: &AtomicBool) -> Option<Permit<'_>> {
        loop {
            match self.try_acquire(class) {
                Ok(p) => return Some(p),
                Err(_) if stop.load(Ordering::Relaxed) => return None,
                Err(wait) => {
                    let wait = wait.min(STOP_POLL);
                    let slot = &self.shared.classes[class.index()];
                    std::thread::sleep(wait);
                    slot.waited_ns
                        .fetch_add(duration_ns(wait), Ordering::Relaxed);
                }
            }
        }
    }

    /// Grants a permit now, or says how long to wait before asking again (for callers that
    /// sleep on their own, such as async tasks).
    pub fn try_acquire(&self, class: Priority) -> Result<Permit<'_>, Duration> {
        let sh = &*self.shared;
        let slot = &sh.classes[class.index()];
        let duty = f32::from_bits(slot.duty_bits.load(Ordering::Acquire));
        let now = Instant::now();
        let now_ns = duration_ns(now.saturating_duration_since(sh.epoch));
        // Yield to higher-priority classes that are running or about to run.
        for &higher in sh.order.iter().take_while(|&&c| c != class) {
            let h = &sh.classes[higher.index()];
            if h.in_flight.load(Ordering::Acquire) > 0 {
                return Err(POLL);
            }
            let until = h.active_until_ns.load(Ordering::Acquire);
            if until > now_ns {
                return Err(Duration::from_nanos(until - now_ns).min(POLL));
            }
        }
        if duty <= 0.0 || duty.is_nan() || slot.held.load(Ordering::Acquire) {
            return Err(POLL);
        }
        if duty < 1.0 {
            let busy = slot.last_busy_ns.load(Ordering::Acquire) as f64;
            let required = busy * f64::from(1.0 - duty) / f64::from(duty);
            let since_end = now_ns.saturating_sub(slot.last_end_ns.load(Ordering::Acquire)) as f64;
            let remaining = required - since_end;
            if remaining > 1_000.0 {
                return Err(Duration::from_nanos(remaining as u64));
            }
        }
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(Permit {
            shared: sh,
            class,
            start: now,
        })
    }

    /// Holds `class` (an operator's pause, e.g. a fleet command) or releases it. A held class
    /// gets no permit whatever the governor's pacing says; the governor's [`Permits::apply`]
    /// does not release it.
    pub fn hold(&self, class: Priority, held: bool) {
        self.shared.classes[class.index()]
            .held
            .store(held, Ordering::Release);
    }

    /// Whether `class` is held by [`Permits::hold`].
    pub fn is_held(&self, class: Priority) -> bool {
        self.shared.classes[class.index()]
            .held
            .load(Ordering::Acquire)
    }

    /// Cumulative counters, for the runtime to derive utilisation and demand per period.
    pub fn stats(&self) -> PermitStats {
        let sh = &*self.shared;
        PermitStats {
            at: sh.epoch.elapsed(),
            steps: std::array::from_fn(|i| sh.classes[i].steps.load(Ordering::Relaxed)),
            busy: std::array::from_fn(|i| {
                Duration::from_nanos(sh.classes[i].busy_ns.load(Ordering::Relaxed))
            }),
            waited: std::array::from_fn(|i| {
                Duration::from_nanos(sh.classes[i].waited_ns.load(Ordering::Relaxed))
            }),
        }
    }
}

impl Permit<'_> {
    /// The class this permit was granted to.
    pub fn class(&self) -> Priority {
        self.class
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let sh = self.shared;
        let slot = &sh.classes[self.class.index()];
        let end = Instant::now();
        let busy = duration_ns(end.saturating_duration_since(self.start));
        let end_ns = duration_ns(end.saturating_duration_since(sh.epoch));
        let duty = f32::from_bits(slot.duty_bits.load(Ordering::Acquire)).clamp(0.01, 1.0);
        let gap = busy as f64 * f64::from(1.0 - duty) / f64::from(duty);
        let grace = (gap + 0.5 * busy as f64) as u64 + duration_ns(ACTIVE_GRACE);
        slot.last_busy_ns.store(busy, Ordering::Release);
        slot.last_end_ns.store(end_ns, Ordering::Release);
        slot.active_until_ns
            .fetch_max(end_ns.saturating_add(grace), Ordering::AcqRel);
        slot.steps.fetch_add(1, Ordering::Relaxed);
        slot.busy_ns.fetch_add(busy, Ordering::Relaxed);
        slot.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governor::types::{Limiter, Mode, Pace};

    fn decision(duties: [f32; 3]) -> Decision {
        Decision {
            freq_cap_khz: None,
            threads: 3,
            pacing: duties.map(|duty| Pace { duty }),
            fan_level: None,
            mode: Mode::Regulating,
            limiter: Limiter::None,
            reason: String::new(),
            power_budget_w: 1.0,
        }
    }

    fn spin(d: Duration) {
        let t = Instant::now();
        while t.elapsed() < d {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn an_unpaced_permit_costs_microseconds_not_a_sleep() {
        let permits = Permits::new(4);
        let n = 20_000;
        let t = Instant::now();
        for _ in 0..n {
            let p = permits.acquire(Priority::Interactive);
            drop(p);
        }
        let per = t.elapsed() / n;
        assert!(per < Duration::from_micros(20), "{per:?} per permit");
        assert_eq!(permits.stats().steps[0], u64::from(n));
    }

    #[test]
    fn pacing_at_half_duty_doubles_the_step_interval() {
        let permits = Permits::new(4);
        permits.apply(&decision([0.5, 1.0, 1.0]));
        let step = Duration::from_millis(20);
        let t = Instant::now();
        for _ in 0..5 {
            let _p = permits.acquire(Priority::Interactive);
            spin(step);
        }
        let elapsed = t.elapsed();
        // 5 busy steps of 20 ms plus 4 gaps of 20 ms = 180 ms (a duty of 0.1 would take 820 ms;
        // the upper bound leaves room for a loaded machine's oversleep).
        assert!(elapsed >= Duration::from_millis(178), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
    }

    #[test]
    fn a_paused_class_waits_until_its_duty_rises() {
        let permits = Permits::new(4);
        permits.apply(&decision([1.0, 0.0, 1.0]));
        assert!(permits.try_acquire(Priority::Training).is_err());
        let p2 = permits.clone();
        let waiter = std::thread::spawn(move || {
            let _p = p2.acquire(Priority::Training);
            Instant::now()
        });
        std::thread::sleep(Duration::from_millis(30));
        let unpaused_at = Instant::now();
        permits.apply(&decision([1.0, 1.0, 1.0]));
        let acquired_at = waiter
            .join()
            .unwrap_or(unpaused_at - Duration::from_secs(1));
        assert!(
            acquired_at >= unpaused_at,
            "acquired before the pause ended"
        );
        assert!(permits.stats().waited[1] > Duration::ZERO);
    }

    #[test]
    fn a_held_class_gets_no_permit_until_released_whatever_the_pacing() {
        let permits = Permits::new(4);
        permits.hold(Priority::Training, true);
        permits.apply(&decision([1.0, 1.0, 1.0]));
        assert!(permits.is_held(Priority::Training));
        assert!(permits.try_acquire(Priority::Training).is_err());
        assert!(permits.try_acquire(Priority::Batch).is_ok());
        permits.hold(Priority::Training, false);
        assert!(permits.try_acquire(Priority::Training).is_ok());
    }

    #[test]
    fn a_held_class_waiting_for_a_permit_gives_up_when_told_to_stop() {
        let permits = Permits::new(2);
        permits.hold(Priority::Training, true);
        let stop = AtomicBool::new(false);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(120));
                stop.store(true, Ordering::Relaxed);
            });
            assert!(permits.acquire_unless(Priority::Training, &stop).is_none());
        });
        assert!(t0.elapsed() >= Duration::from_millis(120));
        let waited = permits.stats().waited[Priority::Training.index()];
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        permits.hold(Priority::Training, false);
        assert!(permits.acquire_unless(Priority::Training, &stop).is_some());
    }

    #[test]
    fn training_yields_while_generation_is_mid_step() {
        let permits = Permits::new(4);
        let token = permits.acquire(Priority::Interactive);
        assert!(permits.try_acquire(Priority::Training).is_err());
        assert!(permits.try_acquire(Priority::Interactive).is_ok());
        drop(token);
        std::thread::sleep(ACTIVE_GRACE * 3);
        assert!(permits.try_acquire(Priority::Training).is_ok());
    }

    #[test]
    fn stats_report_occupancy_and_demand() {
        let permits = Permits::new(4);
        let before = permits.stats();
        {
            let _p = permits.acquire(Priority::Batch);
            spin(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(20));
        let after = permits.stats();
        let occ = after.occupancy_since(&before);
        // About half; wide bounds for a loaded machine.
        assert!(occ[2] > 0.2 && occ[2] < 0.9, "{occ:?}");
        assert_eq!(occ[0], 0.0);
        assert!(after.utilisation_since(&before) >= occ[2]);
        assert_eq!(permits.threads(), 4);
    }
}
