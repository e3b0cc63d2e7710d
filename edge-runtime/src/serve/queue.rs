//! Admission and fair queueing of generation jobs between the HTTP handlers (async) and the
//! worker threads (blocking). Waiting jobs are grouped per client and served round-robin, so
//! one client's burst cannot starve another's request; a bound on waiting jobs turns excess
//! load into an immediate rejection with a retry hint instead of an ever-growing queue.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Round-robin queue over clients: [`FairQueue::pop`] takes the oldest job of the client
/// whose turn it is, then moves that client to the back.
#[derive(Debug)]
pub struct FairQueue<T> {
    lanes: VecDeque<(String, VecDeque<T>)>,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            lanes: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    /// Adds `item` at the back of `client`'s lane.
    pub fn push(&mut self, client: &str, item: T) {
        match self.lanes.iter_mut().find(|(c, _)| c == client) {
            Some((_, lane)) => lane.push_back(item),
            None => self
                .lanes
                .push_back((client.to_string(), VecDeque::from([item]))),
        }
        self.len += 1;
    }

    /// The next job in round-robin order.
    pub fn pop(&mut self) -> Option<T> {
        let (client, mut lane) = self.lanes.pop_front()?;
        let item = lane.pop_front();
        if !lane.is_empty() {
            self.lanes.push_back((client, lane));
        }
        if item.is_some() {
            self.len -= 1;
        }
        item
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes and returns every waiting job.
    pub fn drain(&mut self) -> Vec<T> {
        let mut all = vec![];
        while let Some(item) = self.pop() {
            all.push(item);
        }
        all
    }
}

/// Why a job was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The queue is at its bound; retry after this many seconds.
    Full {
        /// Suggested wait, s.
        retry_after_s: u64,
    },
    /// The scheduler is closed (shutting down).
    Closed,
}

#[derive(Debug)]
struct State<T> {
    queue: FairQueue<T>,
    running: usize,
    closed: bool,
    mean_job_s: f64,
}

/// Counts of the scheduler at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Jobs a worker is running.
    pub running: usize,
    /// Jobs waiting for a worker.
    pub waiting: usize,
}

/// The bounded fair queue shared by handlers and `workers` worker threads.
#[derive(Debug)]
pub struct Scheduler<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    idle: Condvar,
    workers: usize,
    bound: usize,
}

impl<T> Scheduler<T> {
    /// A scheduler for `workers` threads that lets at most `bound` jobs wait.
    pub fn new(workers: usize, bound: usize) -> Self {
        Scheduler {
            state: Mutex::new(State {
                queue: FairQueue::default(),
                running: 0,
                closed: false,
                mean_job_s: 1.0,
            }),
            ready: Condvar::new(),
            idle: Condvar::new(),
            workers: workers.max(1),
            bound,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job` for `client`, or refuses it when it would have to wait behind `bound`
    /// others (an idle worker takes it at once, so it does not count as waiting).
    pub fn submit(&self, client: &str, job: T) -> Result<(), (Rejected, T)> {
        let mut st = self.lock();
        if st.closed {
            return Err((Rejected::Closed, job));
        }
        let idle = self.workers.saturating_sub(st.running);
        let waiting_after = (st.queue.len() + 1).saturating_sub(idle);
        if waiting_after > self.bound {
            // Jobs ahead of this one drain `workers` at a time, one mean job time per round.
            let rounds = (st.queue.len() + 1).div_ceil(self.workers) as f64;
            let wait = (rounds * st.mean_job_s).ceil().clamp(1.0, 60.0) as u64;
            return Err((
                Rejected::Full {
                    retry_after_s: wait,
                },
                job,
            ));
        }
        st.queue.push(client, job);
        drop(st);
        self.ready.notify_one();
        Ok(())
    }

    /// Blocks until a job is ready and marks it running; `None` once closed and drained.
    pub fn next(&self) -> Option<T> {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.queue.pop() {
                st.running += 1;
                return Some(job);
            }
            if st.closed {
                return None;
            }
            st = self.ready.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Marks a running job finished after `took`.
    pub fn done(&self, took: Duration) {
        let mut st = self.lock();
        st.running = st.running.saturating_sub(1);
        st.mean_job_s = 0.8 * st.mean_job_s + 0.2 * took.as_secs_f64();
        drop(st);
        self.idle.notify_all();
    }

    /// Running and waiting jobs now.
    pub fn load(&self) -> Load {
        let st = self.lock();
        Load {
            running: st.running,
            waiting: st.queue.len(),
        }
    }

    /// Refuses new jobs from now on and returns the ones still waiting (their clients are
    /// told the server is shutting down); workers return once their job is done.
    pub fn close(&self) -> Vec<T> {
        let mut st = self.lock();
        st.closed = true;
        let waiting = st.queue.drain();
        drop(st);
        self.ready.notify_all();
        waiting
    }

    /// Waits until no job runs, at most `timeout`; true when none runs.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let st = self.lock();
        let (st, _) = self
            .idle
            .wait_timeout_while(st, timeout, |s| s.running > 0)
            .unwrap_or_else(|e| e.into_inner());
        st.running == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_take_turns_whatever_order_they_arrived_in() {
        let mut q = FairQueue::default();
        for i in 0..3 {
            q.push("a", format!("a{i}"));
        }
        q.push("b", "b0".to_string());
        q.push("c", "c0".to_string());
        q.push("b", "b1".to_string());
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["a0", "b0", "c0", "a1", "b1", "a2"]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_queue_rejects_with_a_retry_hint() {
        let s = Scheduler::new(1, 2);
        assert!(s.submit("x", 1).is_ok(), "taken by the idle worker");
        assert_eq!(s.next(), Some(1));
        assert!(s.submit("x", 2).is_ok());
        assert!(s.submit("y", 3).is_ok());
        match s.submit("z", 4) {
            Err((Rejected::Full { retry_after_s }, 4)) => assert!(retry_after_s >= 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.load(),
            Load {
                running: 1,
                waiting: 2
            }
        );
    }

    #[test]
    fn a_zero_bound_still_admits_work_for_idle_workers() {
        let s = Scheduler::new(2, 0);
        assert!(s.submit("a", 1).is_ok());
        assert!(s.submit("b", 2).is_ok());
        assert!(s.submit("c", 3).is_err());
    }

    #[test]
    fn closing_wakes_workers_and_returns_the_waiting_jobs() {
        let s = std::sync::Arc::new(Scheduler::<u32>::new(1, 4));
        let s2 = s.clone();
        let worker = std::thread::spawn(move || s2.next());
        std::thread::sleep(Duration::from_millis(20));
        assert!(s.close().is_empty());
        assert_eq!(worker.join().ok().flatten(), None);
        assert!(matches!(s.submit("a", 1), Err((Rejected::Closed, 1))));
    }

    #[test]
    fn wait_idle_returns_when_the_last_job_is_done() {
        let s = std::sync::Arc::new(Scheduler::new(1, 1));
        assert!(s.submit("a", ()).is_ok());
        assert_eq!(s.next(), Some(()));
        assert!(!s.wait_idle(Duration::from_millis(10)));
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            s2.done(Duration::from_millis(20));
        });
        assert!(s.wait_idle(Duration::from_secs(5)));
        let _ = t.join();
    }
}
