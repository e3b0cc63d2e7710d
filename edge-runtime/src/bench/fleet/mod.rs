//! The fleet benchmark: N simulated boards (the governor benchmark's twins at their own
//! ambients, each under our governor), one real MQTT 5 broker, one stream of chat requests,
//! and three dispatchers: round robin, least connections, and headroom pull.
//!
//! Round robin and least connections are decided by the front, which publishes each request
//! to the chosen board's own topic. With headroom pull the front publishes every request to
//! the shared queue `thermo/requests/<model>` and the broker hands it to one of the boards
//! subscribed to `$share/thermo/requests/<model>`; a board is subscribed only while its
//! governor predicts headroom ([`board::FleetBoard::wants_work`]) and unsubscribes as soon as
//! it has none. A request no board takes (the PUBACK says no subscriber matched) waits at the
//! front for the next control period. An answer finishes on the board that took it.
//!
//! Clocking: the boards' thermal clocks are simulated and advance in lock-step, one control
//! period at a time; between two periods the runner performs that period's messages on the
//! broker and waits (bounded) for each to arrive before going on ([`wire`]). So the messages
//! are real while the outcome does not depend on how fast the machine is, and a run of
//! twenty simulated minutes per dispatcher takes seconds.
//!
//! Figures per dispatcher: fleet tokens/s (tokens answered over the time from the first
//! arrival to the last answer), answers during which the die went over the board's
//! setpoint, max temperature and wear-hours per board, latency percentiles (arrival at the
//! front to the last token). [`mosquitto`] finds the broker binary a run starts on loopback.

pub mod board;
pub mod mosquitto;
pub mod report;
pub mod wire;

mod run;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use thiserror::Error;

use self::board::BoardSetup;
use self::wire::Wire;
use crate::bench::governor::limit::{Condition, physical_limit};
use crate::bench::governor::{BenchError, TwinBoard};
use crate::governor::GovernorConfig;

/// Why the fleet benchmark could not run.
#[derive(Debug, Error)]
pub enum FleetError {
    /// A board could not be built or the options are unusable.
    #[error(transparent)]
    Bench(#[from] BenchError),
    /// The broker refused, went away or did not answer within the bound.
    #[error("broker: {0}")]
    Broker(String),
    /// Writing a result file failed.
    #[error("writing {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
}

impl From<crate::governor::ConfigError> for FleetError {
    fn from(e: crate::governor::ConfigError) -> Self {
        FleetError::Bench(BenchError::Config(e))
    }
}

/// How requests reach boards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dispatcher {
    /// The front sends request k to board k mod N.
    RoundRobin,
    /// The front sends each request to the board with the fewest answers in flight.
    LeastConnections,
    /// Boards take requests from the shared queue while their governor predicts headroom.
    HeadroomPull,
}

impl Dispatcher {
    /// Every dispatcher, in table order.
    pub const ALL: [Dispatcher; 3] = [
        Dispatcher::RoundRobin,
        Dispatcher::LeastConnections,
        Dispatcher::HeadroomPull,
    ];

    /// Name used in tables and flags.
    pub fn name(self) -> &'static str {
        match self {
            Dispatcher::RoundRobin => "round_robin",
            Dispatcher::LeastConnections => "least_connections",
            Dispatcher::HeadroomPull => "headroom_pull",
        }
    }

    /// Parses [`Dispatcher::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// The default fleet: passive Pi 4 and Pi 5 and actively cooled Pi 5, each in a cool and a
/// warm room.
pub const DEFAULT_BOARDS: [&str; 6] = [
    "rpi4@25",
    "rpi4@40",
    "rpi5@25",
    "rpi5@35",
    "rpi5-active@25",
    "rpi5-active@35",
];

/// What to run.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetOptions {
    /// The boards.
    pub boards: Vec<BoardSetup>,
    /// The dispatchers, each run on the same requests.
    pub dispatchers: Vec<Dispatcher>,
    /// Simulated time over which requests arrive.
    pub span: Duration,
    /// Offered tokens per second over the sum of the boards' sustainable tokens per second
    /// at their setpoints and ambients.
    pub load: f64,
    /// Seed of the arrivals and token counts.
    pub seed: u64,
    /// Governor control period (the lock-step of the boards).
    pub period: Duration,
    /// Integration step of the twins.
    pub sim_step: Duration,
    /// Simulated idle time before the first request, so every board starts in its idle steady
    /// state at its ambient.
    pub warmup: Duration,
    /// Headroom in tokens, beyond what it has taken, a board needs to stay on the shared
    /// queue.
    pub min_headroom_tokens: f64,
    /// Answers a board takes at most at once with headroom pull (the one generating and
    /// those waiting).
    pub max_in_flight: usize,
    /// A run stops at this multiple of `span` even with requests unanswered.
    pub max_span_factor: f64,
    /// How long to wait for the broker's answer to one action.
    pub broker_bound: Duration,
}

impl Default for FleetOptions {
    /// [`DEFAULT_BOARDS`], every dispatcher, 20 simulated minutes of arrivals at 80 % of the
    /// fleet's sustainable rate, seed 1, 250 ms period, 50 ms step, 10 minutes of warm-up,
    /// 32 tokens of headroom, two answers in flight, stop at 4× the span, 10 s broker bound.
    fn default() -> Self {
        Self {
            boards: DEFAULT_BOARDS
                .iter()
                .filter_map(|b| BoardSetup::parse(b).ok())
                .collect(),
            dispatchers: Dispatcher::ALL.to_vec(),
            span: Duration::from_secs(20 * 60),
            load: 0.8,
            seed: 1,
            period: Duration::from_millis(250),
            sim_step: Duration::from_millis(50),
            warmup: Duration::from_secs(10 * 60),
            min_headroom_tokens: 32.0,
            max_in_flight: 2,
            max_span_factor: 4.0,
            broker_bound: Duration::from_secs(10),
        }
    }
}

impl FleetOptions {
    fn validate(&self) -> Result<(), BenchError> {
        if self.boards.is_empty() || self.dispatchers.is_empty() {
            return Err(BenchError::Empty);
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !(positive(self.load)
            && positive(self.span.as_secs_f64())
            && positive(self.period.as_secs_f64())
            && positive(self.sim_step.as_secs_f64())
            && self.sim_step <= self.period
            && self.min_headroom_tokens.is_finite()
            && self.min_headroom_tokens >= 0.0
            && self.max_in_flight >= 1
            && self.max_span_factor >= 1.0)
        {
            return Err(BenchError::Invalid(
                "fleet options: load, span, period and step must be positive, the step at most \
                 the period, the headroom non-negative, at least one answer in flight, and the \
                 stop factor at least 1"
                    .to_string(),
            ));
        }
        if self.boards.len() > 64 {
            return Err(BenchError::Invalid("at most 64 boards".to_string()));
        }
        Ok(())
    }
}

/// One chat request of the workload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Request {
    /// Id, from 1.
    pub id: u64,
    /// Arrival at the front, simulated s.
    pub at_s: f64,
    /// Tokens to generate.
    pub tokens: u32,
}

/// Requests arriving as a Poisson stream at `per_s` per second over `span_s`, token counts
/// uniform in 32..=256, drawn from `seed`.
pub fn requests(seed: u64, per_s: f64, span_s: f64) -> Vec<Request> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut t = 0.0;
    if !(per_s.is_finite() && per_s > 0.0) {
        return out;
    }
    loop {
        let u: f64 = rng.random_range(1e-9..1.0);
        t += -u.ln() / per_s;
        if t > span_s {
            return out;
        }
        out.push(Request {
            id: out.len() as u64 + 1,
            at_s: t,
            tokens: rng.random_range(32..=256),
        });
    }
}

/// Mean tokens of a request of [`requests`].
pub const MEAN_REQUEST_TOKENS: f64 = (32.0 + 256.0) / 2.0;

/// Tokens per second `setup` sustains with its die at its governor's setpoint (the governor
/// benchmark's physical limit at the board's ambient).
pub fn sustainable_tokens_per_s(setup: &BoardSetup) -> Result<f64, FleetError> {
    let board = setup.twin_board()?;
    let spec = board.spec();
    let cfg = GovernorConfig::builder(spec.platform.clone(), spec.firmware_throttle_c).build()?;
    let limit = physical_limit(
        &board,
        f64::from(cfg.setpoint_c()),
        Condition {
            ambient_c: setup.ambient_c,
            fan_ok: true,
        },
    );
    Ok(limit.tokens_per_s)
}

/// Figures of one board under one dispatcher.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BoardFigures {
    /// `profile@ambient`.
    pub label: String,
    /// The governor's setpoint, °C.
    pub setpoint_c: f64,
    /// Sustainable tokens/s at the setpoint.
    pub sustainable_tokens_per_s: f64,
    /// Answers it generated.
    pub answers: u64,
    /// Tokens it generated.
    pub tokens: u64,
    /// Highest true die temperature, °C.
    pub max_temp_c: f64,
    /// Hours at the wear reference temperature that aged the die as much as the run.
    pub wear_hours: f64,
}

/// Figures of one dispatcher.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DispatcherRun {
    /// The dispatcher.
    pub dispatcher: Dispatcher,
    /// Tokens answered per second from the first arrival to the last answer.
    pub fleet_tokens_per_s: f64,
    /// Requests answered.
    pub answered: u64,
    /// Requests still unanswered when the run stopped.
    pub unanswered: u64,
    /// Answers a client received twice (must be zero).
    pub duplicates: u64,
    /// Answers during which the die of their board went over its setpoint.
    pub answers_over_setpoint: u64,
    /// Median latency, arrival to last token, s.
    pub p50_latency_s: f64,
    /// 99th-percentile latency, s.
    pub p99_latency_s: f64,
    /// Simulated time of the last answer, s.
    pub end_s: f64,
    /// Messages the broker carried for this run (requests, answers, subscriptions).
    pub messages: u64,
    /// Per board.
    pub boards: Vec<BoardFigures>,
    /// `(t_s, fleet tokens/s)` over 10 s windows.
    pub tokens_series: Vec<(f64, f64)>,
    /// `(t_s, hottest board's die − its setpoint)` every 10 s.
    pub margin_series: Vec<(f64, f64)>,
}

/// Every dispatcher's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FleetReport {
    /// One per dispatcher, in the order run.
    pub runs: Vec<DispatcherRun>,
    /// Requests in the workload.
    pub requests: usize,
    /// Offered tokens per second.
    pub offered_tokens_per_s: f64,
    /// Sum of the boards' sustainable tokens per second.
    pub sustainable_tokens_per_s: f64,
    /// Simulated span of the arrivals, s.
    pub span_s: f64,
}

impl FleetReport {
    /// The run of `d`.
    pub fn run(&self, d: Dispatcher) -> Option<&DispatcherRun> {
        self.runs.iter().find(|r| r.dispatcher == d)
    }
}

/// Runs every dispatcher of `opts` on the same workload through `wire`, whose links are one
/// per board plus the front's (the last), already driven by the caller.
pub async fn run_fleet_bench(
    wire: &mut Wire,
    opts: &FleetOptions,
) -> Result<FleetReport, FleetError> {
    opts.validate()?;
    let mut sustainable = Vec::with_capacity(opts.boards.len());
    for b in &opts.boards {
        sustainable.push(sustainable_tokens_per_s(b)?);
    }
    let total: f64 = sustainable.iter().sum();
    let offered = opts.load * total;
    let span_s = opts.span.as_secs_f64();
    let reqs = requests(opts.seed, offered / MEAN_REQUEST_TOKENS, span_s);
    wire.connected().await?;
    let mut runs = Vec::new();
    for &d in &opts.dispatchers {
        runs.push(run::run_dispatcher(wire, opts, d, &reqs, &sustainable).await?);
    }
    Ok(FleetReport {
        runs,
        requests: reqs.len(),
        offered_tokens_per_s: offered,
        sustainable_tokens_per_s: total,
        span_s,
    })
}

/// Writes `fleet.md`, `fleet.json` and `fleet.svg` into `dir` (created if needed).
pub fn write_report(dir: &Path, report: &FleetReport) -> Result<(), FleetError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| FleetError::Io { path, cause }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let md = dir.join("fleet.md");
    std::fs::write(&md, report::markdown(report)).map_err(io(&md))?;
    let json = dir.join("fleet.json");
    let text = serde_json::to_string_pretty(report).map_err(|e| FleetError::Io {
        path: json.clone(),
        cause: std::io::Error::other(e),
    })?;
    std::fs::write(&json, text).map_err(io(&json))?;
    let svg = dir.join("fleet.svg");
    std::fs::write(&svg, report::svg(report)).map_err(io(&svg))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_seeded_and_come_at_the_asked_rate() {
        let a = requests(3, 0.5, 2000.0);
        assert_eq!(a, requests(3, 0.5, 2000.0));
        let rate = a.len() as f64 / 2000.0;
        assert!((rate - 0.5).abs() < 0.08, "{rate}");
        assert!(a.iter().all(|r| (32..=256).contains(&r.tokens)));
        assert!(requests(3, f64::NAN, 10.0).is_empty());
    }

    #[test]
    fn a_passive_board_in_a_warm_room_sustains_less_than_an_active_one() -> Result<(), FleetError> {
        let hot = sustainable_tokens_per_s(&BoardSetup::parse("rpi4@40")?)?;
        let cool = sustainable_tokens_per_s(&BoardSetup::parse("rpi5-active@25")?)?;
        assert!(hot > 0.0 && hot < cool * 0.7, "{hot} vs {cool}");
        Ok(())
    }
}
