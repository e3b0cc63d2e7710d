//! The agent-loop detector for request-serving callers (the HTTP service): an agent that
//! resubmits the same request, or keeps hitting the same error, within a time window is
//! refused after a configurable count instead of burning energy on the same answer again.
//! Requests are compared by a digest of their normalised text (whitespace collapsed), per
//! client. Pure state: the caller passes the clock.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use sha2::{Digest, Sha256};
use thiserror::Error;

/// Limits of the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AgentLoopConfig {
    /// Identical requests allowed within `window`; the next one is refused.
    pub max_repeats: usize,
    /// Identical errors allowed within `window`; the next request of that client is refused.
    pub max_errors: usize,
    /// How far back submissions count.
    pub window: Duration,
}

impl Default for AgentLoopConfig {
    fn default() -> Self {
        AgentLoopConfig {
            max_repeats: 3,
            max_errors: 3,
            window: Duration::from_secs(300),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// The same request came too often.
    #[error(
        "the same request was submitted {count} times within {window_s} s; refusing to compute it again"
    )]
    RepeatedRequest {
        /// Submissions in the window, this one included.
        count: usize,
        /// The window (s).
        window_s: u64,
    },
    /// The same error came back too often.
    #[error(
        "the same error occurred {count} times within {window_s} s ({error}); refusing until the request changes"
    )]
    RepeatedError {
        /// Errors in the window.
        count: usize,
        /// The window (s).
        window_s: u64,
        /// The error text.
        error: String,
    },
}

type Key = [u8; 32];

/// Most request and error keys remembered at once: past it, requests of new keys are served
/// without being remembered (the detector fails open, it never grows without bound).
pub const MAX_KEYS: usize = 65_536;

fn digest(client: &str, text: &str) -> Key {
    let normalised = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut h = Sha256::new();
    h.update(client.as_bytes());
    h.update([0]);
    h.update(normalised.as_bytes());
    h.finalize().into()
}

/// Remembers recent requests and errors per client.
#[derive(Debug, Default)]
pub struct AgentLoopDetector {
    cfg: AgentLoopConfig,
    requests: HashMap<Key, VecDeque<Duration>>,
    errors: HashMap<Key, (String, VecDeque<Duration>)>,
    last_request: HashMap<String, Key>,
}

impl AgentLoopDetector {
    /// A detector with `cfg`.
    pub fn new(cfg: AgentLoopConfig) -> Self {
        AgentLoopDetector {
            cfg,
            ..Self::default()
        }
    }

    fn prune(q: &mut VecDeque<Duration>, now: Duration, window: Duration) {
        while q.front().is_some_and(|&t| now.saturating_sub(t) > window) {
            q.pop_front();
        }
    }

    /// Records a request by `client` at `now` and says whether to serve it.
    pub fn admit(&mut self, client: &str, request: &str, now: Duration) -> Result<(), Refusal> {
        let window = self.cfg.window;
        let key = digest(client, request);
        if self.last_request.len() < MAX_KEYS || self.last_request.contains_key(client) {
            self.last_request.insert(client.to_string(), key);
        }
        if let Some((error, q)) = self.errors.get_mut(&key) {
            Self::prune(q, now, window);
            if q.len() >= self.cfg.max_errors {
                return Err(Refusal::RepeatedError {
                    count: q.len(),
                    window_s: window.as_secs(),
                    error: error.clone(),
                });
            }
        }
        if self.cfg.max_repeats == usize::MAX
            || (self.requests.len() >= MAX_KEYS && !self.requests.contains_key(&key))
        {
            return Ok(());
        }
        let q = self.requests.entry(key).or_default();
        Self::prune(q, now, window);
        q.push_back(now);
        // Only whether more than `max_repeats` fall in the window matters: older ones go.
        while q.len() > self.cfg.max_repeats.saturating_add(1) {
            q.pop_front();
        }
        if q.len() > self.cfg.max_repeats {
            return Err(Refusal::RepeatedRequest {
                count: q.len(),
                window_s: window.as_secs(),
            });
        }
        Ok(())
    }

    /// Records that the last request of `client` failed with `error` at `now`; the same error
    /// text (normalised) counts towards the same limit.
    pub fn record_error(&mut self, client: &str, error: &str, now: Duration) {
        let Some(&key) = self.last_request.get(client) else {
            return;
        };
        if self.cfg.max_errors == usize::MAX
            || (self.errors.len() >= MAX_KEYS && !self.errors.contains_key(&key))
        {
            return;
        }
        let normalised = error.split_whitespace().collect::<Vec<_>>().join(" ");
        let entry = self
            .errors
            .entry(key)
            .or_insert_with(|| (normalised.clone(), VecDeque::new()));
        if entry.0 != normalised {
            *entry = (normalised, VecDeque::new());
        }
        entry.1.push_back(now);
        while entry.1.len() > self.cfg.max_errors {
            entry.1.pop_front();
        }
    }

    /// Forgets entries older than the window (call now and then on a long-running server).
    pub fn expire(&mut self, now: Duration) {
        let window = self.cfg.window;
        self.requests.retain(|_, q| {
            Self::prune(q, now, window);
            !q.is_empty()
        });
        self.errors.retain(|_, (_, q)| {
            Self::prune(q, now, window);
            !q.is_empty()
        });
        // A client whose last request has expired is forgotten too, so a stream of distinct
        // `user` names cannot grow the map without bound.
        let requests = &self.requests;
        self.last_request
            .retain(|_, key| requests.contains_key(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn refuses_the_fourth_identical_request_within_the_window() {
        let mut d = AgentLoopDetector::new(AgentLoopConfig::default());
        for t in 0..3 {
            assert_eq!(d.admit("agent", "Fix the build", s(t)), Ok(()));
        }
        // Whitespace differences do not make a new request.
        let r = d.admit("agent", "Fix  the\nbuild ", s(4));
        assert!(
            matches!(r, Err(Refusal::RepeatedRequest { count: 4, .. })),
            "{r:?}"
        );
        // Another client, another request, or the same one after the window: served.
        assert_eq!(d.admit("other", "Fix the build", s(5)), Ok(()));
        assert_eq!(d.admit("agent", "Fix the tests", s(5)), Ok(()));
        assert_eq!(d.admit("agent", "Fix the build", s(400)), Ok(()));
    }

    #[test]
    fn refuses_a_request_that_keeps_failing_with_the_same_error() {
        let cfg = AgentLoopConfig {
            max_repeats: 100,
            max_errors: 2,
            window: s(60),
        };
        let mut d = AgentLoopDetector::new(cfg);
        for t in 0..2 {
            assert_eq!(d.admit("a", "call tool X", s(t)), Ok(()));
            d.record_error("a", "tool X: not found", s(t));
        }
        let r = d.admit("a", "call tool X", s(3));
        match r {
            Err(Refusal::RepeatedError { count, error, .. }) => {
                assert_eq!(count, 2);
                assert_eq!(error, "tool X: not found");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let msg = d
            .admit("a", "call tool X", s(3))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("same error occurred 2 times"), "{msg}");
        // After the window the errors have expired.
        d.expire(s(200));
        assert_eq!(d.admit("a", "call tool X", s(200)), Ok(()));
    }

    #[test]
    fn memory_stays_bounded_however_many_requests_arrive() {
        let mut d = AgentLoopDetector::new(AgentLoopConfig::default());
        for t in 0..10_000 {
            let _ = d.admit("agent", "Fix the build", s(t % 100));
            d.record_error("agent", "it failed", s(t % 100));
        }
        assert!(d.requests.values().all(|q| q.len() <= 4));
        assert!(d.errors.values().all(|(_, q)| q.len() <= 3));
        // Off (the service's `0`): nothing is remembered.
        let mut off = AgentLoopDetector::new(AgentLoopConfig {
            max_repeats: usize::MAX,
            max_errors: usize::MAX,
            window: s(300),
        });
        for t in 0..1000 {
            assert_eq!(off.admit("agent", "Fix the build", s(t)), Ok(()));
            off.record_error("agent", "it failed", s(t));
        }
        assert!(off.requests.is_empty() && off.errors.is_empty());
        // Past MAX_KEYS distinct requests, new ones are served and not remembered.
        let mut many = AgentLoopDetector::new(AgentLoopConfig::default());
        for i in 0..MAX_KEYS + 10 {
            assert_eq!(many.admit(&format!("u{i}"), "hello", s(0)), Ok(()));
        }
        assert_eq!(many.requests.len(), MAX_KEYS);
        assert_eq!(many.last_request.len(), MAX_KEYS);
    }

    #[test]
    fn expired_clients_are_forgotten() {
        let mut d = AgentLoopDetector::new(AgentLoopConfig::default());
        for i in 0..1000 {
            let user = format!("user-{i}");
            assert_eq!(d.admit(&user, "hello", s(0)), Ok(()));
        }
        assert_eq!(d.last_request.len(), 1000);
        d.expire(s(1000));
        assert!(d.requests.is_empty());
        assert!(d.last_request.is_empty(), "{}", d.last_request.len());
    }
}
