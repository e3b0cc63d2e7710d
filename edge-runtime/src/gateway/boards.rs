//! The boards the gateway knows of, from their retained presence on the broker: which are
//! online and take work for the model, which went offline (their Last Will, a clean stop, or
//! silence longer than [`STALE_AFTER`]), and what each answered. Rendered on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::telemetry::work::Presence;

/// A board not heard from for this long counts as offline (it sends its presence every
/// [`crate::serve::fleet::PRESENCE_EVERY`]).
pub const STALE_AFTER: Duration = Duration::from_secs(20);
/// Most boards followed; presence from more is ignored.
pub const MAX_BOARDS: usize = 4096;

/// One board as the gateway sees it.
#[derive(Clone, Debug)]
pub struct Board {
    /// Its latest presence.
    pub presence: Presence,
    /// When it was last heard from.
    pub seen: Instant,
    /// Answers it completed through this gateway.
    pub answers: u64,
    /// Tokens it generated for them.
    pub tokens: u64,
    /// Times it went offline.
    pub lost: u64,
}

/// A per-board metric: name, help, and its value for a board.
type Series<T> = (&'static str, &'static str, fn(&Board) -> T);

/// The boards, by name.
#[derive(Debug, Default)]
pub struct Boards {
    map: BTreeMap<String, Board>,
}

impl Boards {
    /// Takes a presence heard `now`; the board's name when it went from online to offline.
    pub fn update(&mut self, p: Presence, now: Instant) -> Option<String> {
        if !self.map.contains_key(&p.board) && self.map.len() >= MAX_BOARDS {
            return None;
        }
        let name = p.board.clone();
        let online = p.online;
        match self.map.get_mut(&name) {
            Some(b) => {
                let was = b.presence.online;
                b.presence = p;
                b.seen = now;
                if was && !online {
                    b.lost += 1;
                    return Some(name);
                }
            }
            None => {
                self.map.insert(
                    name,
                    Board {
                        presence: p,
                        seen: now,
                        answers: 0,
                        tokens: 0,
                        lost: 0,
                    },
                );
            }
        }
        None
    }

    /// Marks the boards silent for longer than [`STALE_AFTER`] offline; their names.
    pub fn sweep(&mut self, now: Instant) -> Vec<String> {
        let mut lost = vec![];
        for (name, b) in &mut self.map {
            if b.presence.online && now.saturating_duration_since(b.seen) > STALE_AFTER {
                b.presence.online = false;
                b.presence.taking = false;
                b.lost += 1;
                lost.push(name.clone());
            }
        }
        lost
    }

    /// Boards online for `model`, and those of them taking work.
    pub fn count(&self, model: &str) -> (usize, usize) {
        let online = self
            .map
            .values()
            .filter(|b| b.presence.online && b.presence.model == model);
        online.fold((0, 0), |(o, t), b| {
            (o + 1, t + usize::from(b.presence.taking))
        })
    }

    /// Counts an answer `board` completed.
    pub fn answered(&mut self, board: &str, tokens: u32) {
        if let Some(b) = self.map.get_mut(board) {
            b.answers += 1;
            b.tokens += u64::from(tokens);
        }
    }

    /// The per-board series of `/metrics`.
    pub fn render(&self, out: &mut String) {
        let gauges: [Series<Option<f64>>; 7] = [
            ("online", "1 while the board is online", |b| {
                Some(f64::from(u8::from(b.presence.online)))
            }),
            (
                "taking_work",
                "1 while the board takes requests from the queue",
                |b| Some(f64::from(u8::from(b.presence.taking))),
            ),
            (
                "headroom_seconds",
                "Seconds flat out before the board reaches its setpoint",
                |b| b.presence.headroom_s,
            ),
            ("temperature_celsius", "SoC temperature", |b| {
                b.presence.temperature_c
            }),
            ("setpoint_celsius", "The board governor's setpoint", |b| {
                b.presence.setpoint_c
            }),
            ("running", "Requests generating on the board", |b| {
                Some(f64::from(b.presence.running))
            }),
            (
                "waiting",
                "Requests waiting for a worker on the board",
                |b| Some(f64::from(b.presence.waiting)),
            ),
        ];
        for (name, help, value) in gauges {
            series(
                out,
                &format!("thermo_gateway_board_{name}"),
                "gauge",
                help,
                |s| {
                    for (board, b) in &self.map {
                        if let Some(v) = value(b).filter(|v| v.is_finite()) {
                            let _ =
                                writeln!(s, "thermo_gateway_board_{name}{{board=\"{board}\"}} {v}");
                        }
                    }
                },
            );
        }
        let counters: [Series<u64>; 3] = [
            (
                "answers_total",
                "Answers the board completed through this gateway",
                |b| b.answers,
            ),
            ("tokens_total", "Tokens the board generated for them", |b| {
                b.tokens
            }),
            ("lost_total", "Times the board went offline", |b| b.lost),
        ];
        for (name, help, value) in counters {
            series(
                out,
                &format!("thermo_gateway_board_{name}"),
                "counter",
                help,
                |s| {
                    for (board, b) in &self.map {
                        let _ = writeln!(
                            s,
                            "thermo_gateway_board_{name}{{board=\"{board}\"}} {}",
                            value(b)
                        );
                    }
                },
            );
        }
    }
}

/// A metric's `# HELP` and `# TYPE` lines, then its samples.
pub fn series(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl FnOnce(&mut String),
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    samples(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(board: &str, online: bool, taking: bool) -> Presence {
        Presence {
            online,
            taking,
            headroom_s: Some(30.0),
            ..Presence::offline(board, "tiny")
        }
    }

    #[test]
    fn boards_going_offline_are_reported_once_and_counted_by_model() {
        let t = Instant::now();
        let mut b = Boards::default();
        assert_eq!(b.update(presence("a", true, true), t), None);
        assert_eq!(b.update(presence("b", true, false), t), None);
        assert_eq!(b.count("tiny"), (2, 1));
        assert_eq!(b.count("other"), (0, 0));
        assert_eq!(b.update(presence("a", false, false), t), Some("a".into()));
        assert_eq!(b.update(presence("a", false, false), t), None);
        assert_eq!(b.count("tiny"), (1, 0));
    }

    #[test]
    fn a_silent_board_counts_as_offline() {
        let t = Instant::now();
        let mut b = Boards::default();
        b.update(presence("a", true, true), t);
        assert!(b.sweep(t + Duration::from_secs(1)).is_empty());
        assert_eq!(b.sweep(t + STALE_AFTER + Duration::from_secs(1)), vec!["a"]);
        assert!(b.sweep(t + STALE_AFTER * 2).is_empty());
        assert_eq!(b.count("tiny"), (0, 0));
    }

    #[test]
    fn metrics_name_every_board_with_its_answers() {
        let t = Instant::now();
        let mut b = Boards::default();
        b.update(presence("pi-1", true, true), t);
        b.answered("pi-1", 12);
        let mut out = String::new();
        b.render(&mut out);
        assert!(out.contains("thermo_gateway_board_headroom_seconds{board=\"pi-1\"} 30"));
        assert!(out.contains("thermo_gateway_board_tokens_total{board=\"pi-1\"} 12"));
        assert!(out.contains("# TYPE thermo_gateway_board_answers_total counter"));
    }
}
