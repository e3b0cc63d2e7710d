//! The persistent threads that split a quantized product's output rows, built for decode: a
//! one-token step runs about two hundred small products, too short for a pool whose threads
//! sleep between them. The calling thread computes the first share itself; each other share
//! goes to a worker that spins on an atomic for [`SPIN`] after its last job (so a step's next
//! product finds it awake), then parks. How many threads take part follows tract's current
//! executor, which [`ComputeThreads`](crate::engine::ComputeThreads) sets, so the governor's
//! thread actuator moves this pool too; workers are started once, on first use.
//!
//! Jobs own what they read (`Arc`s), and a worker writes into a buffer of its own that the
//! caller copies into place, so the pool needs no `unsafe`. One product uses the pool at a
//! time; a caller that finds it busy computes its product alone.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
pub const SPIN: Duration = Duration::from_micros(200);

/// The most threads a product is split over (the caller and `MAX_THREADS - 1` workers).
pub const MAX_THREADS: usize = 16;

/// A product's rows: `job(first_row, out)` fills `out`, whole rows from `first_row` on.
pub type RowJob = Arc<dyn Fn(usize, &mut [f32]) -> Result<(), String> + Send + Sync>;

const IDLE: u8 = 0;
const POSTED: u8 = 1;
const DONE: u8 = 2;

/// One worker's mailbox.
struct Slot {
    state: AtomicU8,
    work: Mutex<Work>,
    thread: OnceLock<Thread>,
}

/// What a worker is given and gives back (`error` when its share failed); its buffer is kept
/// for the next job.
#[derive(Default)]
struct Work {
    job: Option<RowJob>,
    first_row: usize,
    out: Vec<f32>,
    error: Option<String>,
}

/// The process's row pool.
pub struct RowPool {
    slots: Vec<Arc<Slot>>,
    busy: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker never panics while holding the lock (jobs run outside it, under
    // `catch_unwind`), so a poisoned lock still holds consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RowPool {
    /// The process-wide pool.
    pub fn global() -> &'static RowPool {
        static POOL: OnceLock<RowPool> = OnceLock::new();
        POOL.get_or_init(RowPool::new)
    }

    /// A pool of its own, its workers not started yet.
    fn new() -> RowPool {
        RowPool {
            slots: (1..MAX_THREADS)
                .map(|_| {
                    Arc::new(Slot {
                        state: AtomicU8::new(IDLE),
                        work: Mutex::new(Work::default()),
                        thread: OnceLock::new(),
                    })
                })
                .collect(),
            busy: Mutex::new(()),
        }
    }

    /// Fills `out` (rows of `row_len`) with `job` split over `threads` (clamped to
    /// `1..=MAX_THREADS`, and to one share per `align` rows), shares starting at multiples
    /// of `align` rows. Runs on the calling thread alone when `threads` is 1, or when another
    /// product holds the pool, or when a worker thread cannot be started.
    pub fn run(
        &self,
        out: &mut [f32],
        row_len: usize,
        align: usize,
        threads: usize,
        job: RowJob,
    ) -> Result<(), String> {
        let row_len = row_len.max(1);
        let rows = out.len() / row_len;
        let align = align.max(1);
        let threads = threads
            .clamp(1, MAX_THREADS)
            .min(rows.div_ceil(align))
            .max(1);
        if threads == 1 {
            return job(0, out);
        }
        // A product that panicked on the caller's side poisons the lock without leaving
        // anything half-done in it (the workers' shares finish on their own).
        let _busy = match self.busy.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return job(0, out),
        };
        let share = rows.div_ceil(threads).div_ceil(align) * align;
        let mut posted = 0;
        for (w, slot) in self.slots.iter().take(threads - 1).enumerate() {
            let first_row = (w + 1) * share;
            if first_row >= rows {
                break;
            }
            let len = (share.min(rows - first_row)) * row_len;
            if !slot.start() {
                break;
            }
            {
                let mut work = lock(&slot.work);
                work.job = Some(job.clone());
                work.first_row = first_row;
                work.out.clear();
                work.out.resize(len, 0.0);
            }
            slot.state.store(POSTED, Ordering::Release);
            if let Some(t) = slot.thread.get() {
                t.unpark();
            }
            posted += 1;
        }
        // The caller's share, then whatever no worker took.
        let mut result = job(0, &mut out[..share.min(rows) * row_len]);
        let covered = ((1 + posted) * share).min(rows);
        if result.is_ok() && covered < rows {
            result = job(covered, &mut out[covered * row_len..]);
        }
        for slot in self.slots.iter().take(posted) {
            slot.wait_done();
            let mut work = lock(&slot.work);
            let from = work.first_row * row_len;
            let len = work.out.len();
            out[from..from + len].copy_from_slice(&work.out);
            if let (Some(e), true) = (work.error.take(), result.is_ok()) {
                result = Err(e);
            }
            slot.state.store(IDLE, Ordering::Release);
        }
        result
    }
}

impl Slot {
    /// Starts this slot's worker thread if it is not running; `false` if it cannot start.
    fn start(self: &Arc<Self>) -> bool {
        if self.thread.get().is_some() {
            return true;
        }
        let slot = self.clone();
        match thread::Builder::new()
            .name("thermo-rows".into())
            .spawn(move || slot.serve())
        {
            Ok(handle) => {
                // Only the product holding the pool starts workers, so this is the first set.
                let _ = self.thread.set(handle.thread().clone());
                true
            }
            Err(e) => {
                log::warn!("could not start a compute thread, products run on fewer: {e}");
                false
            }
        }
    }

    /// The worker's loop: wait for a job (spinning, then parked), run it, report.
    fn serve(&self) {
        loop {
            let idle_since = Instant::now();
            let mut spins = 0u32;
            while self.state.load(Ordering::Acquire) != POSTED {
                spins = spins.wrapping_add(1);
                if !spins.is_multiple_of(64) || idle_since.elapsed() < SPIN {
                    std::hint::spin_loop();
                } else {
                    thread::park_timeout(Duration::from_millis(100));
                }
            }
            let mut work = std::mem::take(&mut *lock(&self.work));
            if let Some(job) = work.job.take() {
                let first_row = work.first_row;
                let out = &mut work.out;
                let result = catch_unwind(AssertUnwindSafe(|| job(first_row, out)))
                    .unwrap_or_else(|_| Err("a compute thread panicked".into()));
                work.error = result.err();
            }
            *lock(&self.work) = work;
            self.state.store(DONE, Ordering::Release);
        }
    }

    /// Spins until the posted job is done (the worker is awake or being woken).
    fn wait_done(&self) {
        let mut spins = 0u32;
        while self.state.load(Ordering::Acquire) != DONE {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Threads tract's current executor uses (1 for the single-thread one).
pub fn current_threads() -> usize {
    use tract_linalg::multithread::{Executor, current_tract_executor};
    match current_tract_executor() {
        Executor::MultiThread(pool) => pool.current_num_threads(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill_with_rows(row_len: usize) -> RowJob {
        Arc::new(move |first_row, out: &mut [f32]| {
            for (i, row) in out.chunks_exact_mut(row_len).enumerate() {
                row.fill((first_row + i) as f32);
            }
            Ok(())
        })
    }

    #[test]
    fn every_row_is_written_once_by_its_owner_whatever_the_split() {
        let pool = RowPool::global();
        for threads in [1, 2, 3, 5] {
            for rows in [1, 3, 4, 7, 13, 64] {
                for row_len in [1, 3] {
                    let mut out = vec![f32::NAN; rows * row_len];
                    pool.run(&mut out, row_len, 4, threads, fill_with_rows(row_len))
                        .expect("runs");
                    for (i, row) in out.chunks_exact(row_len).enumerate() {
                        assert!(
                            row.iter().all(|&v| v == i as f32),
                            "{threads} threads, {rows} rows: row {i} is {row:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_failing_or_panicking_share_is_an_error_and_the_pool_keeps_working() {
        // A pool of its own: the global one may be held by another test's product, and a
        // caller that finds it busy computes alone (no worker share to fail).
        let pool = RowPool::new();
        let fails: RowJob = Arc::new(|first_row, _out: &mut [f32]| {
            if first_row > 0 {
                Err(format!("rows from {first_row}"))
            } else {
                Ok(())
            }
        });
        let mut out = vec![0.0; 16];
        assert!(pool.run(&mut out, 1, 4, 2, fails).is_err());
        let panics: RowJob = Arc::new(|first_row, _out: &mut [f32]| {
            assert!(first_row == 0, "a worker's share");
            Ok(())
        });
        assert!(pool.run(&mut out, 1, 4, 2, panics).is_err());
        pool.run(&mut out, 1, 4, 2, fill_with_rows(1))
            .expect("runs again");
        assert_eq!(out[15], 15.0);
    }

    #[test]
    fn a_caller_that_finds_the_pool_busy_computes_alone() {
        let pool = RowPool::global();
        let outer = Arc::new(|_first_row, out: &mut [f32]| {
            // A product started while this one holds the pool.
            let mut inner = vec![0.0; 8];
            RowPool::global().run(&mut inner, 1, 1, 2, fill_with_rows(1))?;
            out.fill(inner[7]);
            Ok(())
        });
        let mut out = vec![0.0; 4];
        pool.run(&mut out, 1, 1, 2, outer).expect("runs");
        assert_eq!(out, [7.0; 4]);
    }
}
