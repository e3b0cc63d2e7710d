//! The Prometheus `/metrics` page. Token and request counters follow llama.cpp's server
//! (`llamacpp:prompt_tokens_total`, `llamacpp:tokens_predicted_total`, ...); temperatures
//! follow node_exporter's thermal collector (`node_thermal_zone_temp{zone,type}`, °C); the
//! governor, sensor and footprint figures are `thermo_*`. Counters are atomics the workers
//! bump; [`render`] is a pure function of a [`MetricsView`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use sensor_drivers::sensor_set::Snapshot;

use crate::governor::Priority;
use crate::pacing::GovernorStatus;
use crate::telemetry::{TelemetryHealth, TelemetryStats};

/// Counters of the service, bumped by workers and handlers.
#[derive(Debug, Default)]
pub struct Metrics {
    prompt_tokens: AtomicU64,
    prompt_us: AtomicU64,
    predicted_tokens: AtomicU64,
    predicted_us: AtomicU64,
    decode_passes: AtomicU64,
    energy_uj: AtomicU64,
    requests_ok: AtomicU64,
    requests_rejected: AtomicU64,
    requests_disconnected: AtomicU64,
    requests_invalid: AtomicU64,
    requests_failed: AtomicU64,
    tokens_after_disconnect: AtomicU64,
    tokens_after_disconnect_max: AtomicU64,
    guard_stops: [AtomicU64; GUARD_KINDS.len()],
    guard_avoided_uj: AtomicU64,
    agent_loop_refusals: [AtomicU64; 2],
}

/// The guard's stop kinds, as `thermo_guard_stops_total{reason}` labels.
pub const GUARD_KINDS: [&str; 8] = [
    "cycle",
    "stuck_token",
    "entropy_collapse",
    "no_new_content",
    "token_budget",
    "time_budget",
    "energy_budget",
    "carbon_budget",
];

/// Why the agent-loop detector refused a request, `thermo_agent_loop_refusals_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopRefusal {
    /// The same request too often.
    RepeatedRequest,
    /// The same error too often.
    RepeatedError,
}

/// How a request ended, for `thermo_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// 429: queue full, or 503 while shutting down.
    Rejected,
    /// The client went away before the answer was complete.
    Disconnected,
    /// 4xx for the request's content.
    Invalid,
    /// 5xx.
    Failed,
}

impl Metrics {
    /// Counts one prompt pass: `tokens` run in `us` microseconds.
    pub fn add_prompt(&self, tokens: usize, us: u64) {
        self.prompt_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
        self.prompt_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Counts one generated token (its decode pass) and the time it took.
    pub fn add_predicted(&self, us: u64) {
        self.predicted_tokens.fetch_add(1, Ordering::Relaxed);
        self.predicted_us.fetch_add(us, Ordering::Relaxed);
        self.decode_passes.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds energy attributed to requests, in J.
    pub fn add_energy_j(&self, j: f64) {
        if j.is_finite() && j > 0.0 {
            self.energy_uj
                .fetch_add((j * 1e6) as u64, Ordering::Relaxed);
        }
    }

    /// Counts a finished request.
    pub fn add_request(&self, outcome: Outcome) {
        let c = match outcome {
            Outcome::Ok => &self.requests_ok,
            Outcome::Rejected => &self.requests_rejected,
            Outcome::Disconnected => &self.requests_disconnected,
            Outcome::Invalid => &self.requests_invalid,
            Outcome::Failed => &self.requests_failed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a generation whose client went away: `tokens` were generated after the
    /// service learnt of it.
    pub fn add_disconnect(&self, tokens: usize) {
        let t = tokens as u64;
        self.tokens_after_disconnect.fetch_add(t, Ordering::Relaxed);
        self.tokens_after_disconnect_max
            .fetch_max(t, Ordering::Relaxed);
    }

    /// Counts a guard stop of `kind` (a [`GUARD_KINDS`] label) and the energy it avoided, J.
    pub fn add_guard_stop(&self, kind: &str, avoided_j: Option<f64>) {
        if let Some(i) = GUARD_KINDS.iter().position(|k| *k == kind) {
            self.guard_stops[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(j) = avoided_j.filter(|j| j.is_finite() && *j > 0.0) {
            self.guard_avoided_uj
                .fetch_add((j * 1e6) as u64, Ordering::Relaxed);
        }
    }

    /// Counts a request the agent-loop detector refused.
    pub fn add_loop_refusal(&self, why: LoopRefusal) {
        let i = match why {
            LoopRefusal::RepeatedRequest => 0,
            LoopRefusal::RepeatedError => 1,
        };
        self.agent_loop_refusals[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Guard stops of `kind` so far.
    pub fn guard_stops(&self, kind: &str) -> u64 {
        GUARD_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.guard_stops[i].load(Ordering::Relaxed))
    }

    /// Generated tokens so far.
    pub fn tokens_predicted(&self) -> u64 {
        self.predicted_tokens.load(Ordering::Relaxed)
    }
}

/// Everything one scrape shows.
#[derive(Debug)]
pub struct MetricsView<'a> {
    /// The counters.
    pub metrics: &'a Metrics,
    /// Generations running.
    pub processing: usize,
    /// Requests waiting for a worker.
    pub deferred: usize,
    /// The governor's status.
    pub governor: &'a GovernorStatus,
    /// Seconds since the governor last ticked.
    pub governor_tick_age_s: f64,
    /// The sensors at the governor's last tick.
    pub snapshot: Option<&'a Snapshot>,
    /// Thermal zone index by zone type, from sysfs (empty on the simulated SoC).
    pub zone_index: &'a [(String, u32)],
    /// True when the readings are the simulated SoC's.
    pub simulated: bool,
    /// Today's (UTC) eco totals from the ledger, shared with `run` and `chat`.
    pub today: Option<crate::eco::ledger::DayTotals>,
    /// The telemetry counters and health, when telemetry runs.
    pub telemetry: Option<(TelemetryStats, TelemetryHealth)>,
}

/// `label` escaped for a Prometheus label value.
pub(super) fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: f64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

fn rate(tokens: u64, us: u64) -> f64 {
    if us == 0 {
        0.0
    } else {
        tokens as f64 / (us as f64 / 1e6)
    }
}

/// A family with one unlabelled sample.
/// Largest headroom `/metrics` reports, s: flat out below the setpoint for good reads as a day.
const HEADROOM_CAP_S: f64 = 86_400.0;

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    head(out, name, kind, help);
    sample(out, name, "", value);
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// The Prometheus text exposition (format 0.0.4) of `v`.
pub fn render(v: &MetricsView<'_>) -> String {
    let mut out = String::new();
    render_llamacpp(&mut out, v);
    render_requests(&mut out, v.metrics);
    if let Some((stats, health)) = &v.telemetry {
        render_telemetry(&mut out, stats, health);
    }
    render_eco(&mut out, v);
    if let Some(snap) = v.snapshot {
        render_sensors(&mut out, v, snap);
    }
    render_governor(&mut out, v);
    out
}

/// The families llama.cpp's server exposes, under its names.
fn render_llamacpp(out: &mut String, v: &MetricsView<'_>) {
    let m = v.metrics;
    let (pt, pus) = (load(&m.prompt_tokens), load(&m.prompt_us));
    let (gt, gus) = (load(&m.predicted_tokens), load(&m.predicted_us));
    let families: [(&str, &str, &str, f64); 9] = [
        (
            "llamacpp:prompt_tokens_total",
            "counter",
            "Number of prompt tokens processed.",
            pt as f64,
        ),
        (
            "llamacpp:prompt_seconds_total",
            "counter",
            "Prompt process time",
            pus as f64 / 1e6,
        ),
        (
            "llamacpp:tokens_predicted_total",
            "counter",
            "Number of generation tokens processed.",
            gt as f64,
        ),
        (
            "llamacpp:tokens_predicted_seconds_total",
            "counter",
            "Predict process time",
            gus as f64 / 1e6,
        ),
        (
            "llamacpp:n_decode_total",
            "counter",
            "Total number of llama_decode() calls",
            load(&m.decode_passes) as f64,
        ),
        (
            "llamacpp:prompt_tokens_seconds",
            "gauge",
            "Average prompt throughput in tokens/s.",
            rate(pt, pus),
        ),
        (
            "llamacpp:predicted_tokens_seconds",
            "gauge",
            "Average generation throughput in tokens/s.",
            rate(gt, gus),
        ),
        (
            "llamacpp:requests_processing",
            "gauge",
            "Number of requests processing.",
            v.processing as f64,
        ),
        (
            "llamacpp:requests_deferred",
            "gauge",
            "Number of requests deferred.",
            v.deferred as f64,
        ),
    ];
    for (name, kind, help, value) in families {
        single(out, name, kind, help, value);
    }
}

/// Requests by outcome, tokens after a disconnect, and the energy of answered requests.
fn render_requests(out: &mut String, m: &Metrics) {
    head(
        out,
        "thermo_requests_total",
        "counter",
        "Requests by outcome.",
    );
    for (outcome, c) in [
        ("ok", &m.requests_ok),
        ("rejected", &m.requests_rejected),
        ("disconnected", &m.requests_disconnected),
        ("invalid", &m.requests_invalid),
        ("failed", &m.requests_failed),
    ] {
        sample(
            out,
            "thermo_requests_total",
            &format!("outcome=\"{outcome}\""),
            load(c) as f64,
        );
    }
    single(
        out,
        "thermo_tokens_after_disconnect_total",
        "counter",
        "Tokens generated after the service learnt that the client had gone.",
        load(&m.tokens_after_disconnect) as f64,
    );
    single(
        out,
        "thermo_tokens_after_disconnect_max",
        "gauge",
        "Most tokens one generation ran after its client had gone.",
        load(&m.tokens_after_disconnect_max) as f64,
    );
    single(
        out,
        "thermo_energy_joules_total",
        "counter",
        "Energy attributed to answered requests, J.",
        load(&m.energy_uj) as f64 / 1e6,
    );
}

/// Today's eco totals, the guard's stops and what they avoided, and the agent-loop refusals.
fn render_eco(out: &mut String, v: &MetricsView<'_>) {
    let m = v.metrics;
    if let Some(today) = &v.today {
        head(
            out,
            "thermo_eco_today",
            "gauge",
            "Today's (UTC) totals of every thermo job on this host: the measured figures \
             (joules, g_co2e, ml_water, mg_nox, ..., requests, training_steps) and apart from \
             them the hidden layers: memory_* and indexing_* (retrieval and its index), \
             upstream_* (declared, not measured), wasted_*, and deferred_* (jobs run \
             by the agent in their planned hours and their expected saving, not measured).",
        );
        for (figure, value) in today.figures() {
            sample(
                out,
                "thermo_eco_today",
                &format!("figure=\"{figure}\""),
                value,
            );
        }
    }
    head(
        out,
        "thermo_guard_stops_total",
        "counter",
        "Answers the zombie-compute guard stopped, by reason.",
    );
    for (kind, c) in GUARD_KINDS.iter().zip(&m.guard_stops) {
        sample(
            out,
            "thermo_guard_stops_total",
            &format!("reason=\"{kind}\""),
            load(c) as f64,
        );
    }
    single(
        out,
        "thermo_guard_avoided_joules_total",
        "counter",
        "Energy the guard's stops avoided (remaining budget at the observed rate), J.",
        load(&m.guard_avoided_uj) as f64 / 1e6,
    );
    head(
        out,
        "thermo_agent_loop_refusals_total",
        "counter",
        "Requests refused with 429 because a client resubmitted them in a loop, by reason.",
    );
    for (reason, c) in ["repeated_request", "repeated_error"]
        .iter()
        .zip(&m.agent_loop_refusals)
    {
        sample(
            out,
            "thermo_agent_loop_refusals_total",
            &format!("reason=\"{reason}\""),
            load(c) as f64,
        );
    }
}

/// The sensors at the governor's last tick: node_exporter's zone family where the zone's
/// index is known, and every temperature and power reading by sensor and role.
fn render_sensors(out: &mut String, v: &MetricsView<'_>, snap: &Snapshot) {
    let zones: Vec<(String, String, f64)> = snap
        .temps
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let celsius = f64::from(t.value?.celsius());
            let index = match v.zone_index.iter().find(|(kind, _)| *kind == t.name) {
                Some((_, idx)) => idx.to_string(),
                // The simulated SoC models the board's zones; number them in order.
                None if v.simulated => i.to_string(),
                None => return None,
            };
            Some((index, t.name.clone(), celsius))
        })
        .collect();
    if !zones.is_empty() {
        head(
            out,
            "node_thermal_zone_temp",
            "gauge",
            "Zone temperature in Celsius",
        );
        for (zone, kind, c) in &zones {
            sample(
                out,
                "node_thermal_zone_temp",
                &format!("type=\"{}\",zone=\"{zone}\"", escape(kind)),
                *c,
            );
        }
    }
    head(
        out,
        "thermo_sensor_temp_celsius",
        "gauge",
        "Every temperature the governor reads, °C.",
    );
    for t in &snap.temps {
        if let Some(mc) = t.value {
            sample(
                out,
                "thermo_sensor_temp_celsius",
                &format!("sensor=\"{}\",role=\"{}\"", escape(&t.name), t.role),
                f64::from(mc.celsius()),
            );
        }
    }
    head(
        out,
        "thermo_sensor_power_watts",
        "gauge",
        "Every power reading the governor reads, W.",
    );
    for p in &snap.powers {
        if let Some(r) = &p.value {
            sample(
                out,
                "thermo_sensor_power_watts",
                &format!("sensor=\"{}\",role=\"{}\"", escape(&p.name), p.role),
                r.power.watts(),
            );
        }
    }
}

/// The governor: running, ticks and their age, setpoint, temperature, budget, duties and
/// the active limiter.
fn render_governor(out: &mut String, v: &MetricsView<'_>) {
    let g = v.governor;
    single(
        out,
        "thermo_simulated_soc",
        "gauge",
        "1 when the readings come from the simulated SoC.",
        flag(v.simulated),
    );
    single(
        out,
        "thermo_governor_running",
        "gauge",
        "1 while the governor's control loop runs.",
        flag(g.running),
    );
    single(
        out,
        "thermo_governor_ticks_total",
        "counter",
        "Control periods run.",
        g.ticks as f64,
    );
    single(
        out,
        "thermo_governor_last_tick_age_seconds",
        "gauge",
        "Seconds since the governor last ticked.",
        v.governor_tick_age_s,
    );
    single(
        out,
        "thermo_governor_setpoint_celsius",
        "gauge",
        "Temperature the governor holds, °C.",
        f64::from(g.setpoint_c),
    );
    if let Some(h) = g.headroom_s.filter(|h| !h.is_nan()) {
        single(
            out,
            "thermo_governor_headroom_seconds",
            "gauge",
            "Seconds the board could run flat out before reaching its setpoint, by the \
             governor's model (capped at a day).",
            h.clamp(0.0, HEADROOM_CAP_S),
        );
    }
    if let Some(t) = g.temperature_c {
        single(
            out,
            "thermo_governor_temperature_celsius",
            "gauge",
            "Governing temperature, °C.",
            f64::from(t),
        );
    }
    if let Some(c) = &g.eco {
        head(
            out,
            "thermo_governor_eco_g_co2e_per_1k_tokens",
            "gauge",
            "The eco setpoint's estimate of g CO2e per 1000 tokens: at the chosen setpoint \
             (part=grid, part=wear) and at the fixed default setpoint (part=reference).",
        );
        for (part, v) in [
            ("grid", c.chosen.grid_g_per_ktok),
            ("wear", c.chosen.wear_g_per_ktok),
            ("reference", c.reference.g_per_ktok()),
        ] {
            sample(
                out,
                "thermo_governor_eco_g_co2e_per_1k_tokens",
                &format!("part=\"{part}\""),
                v,
            );
        }
        single(
            out,
            "thermo_governor_eco_reference_setpoint_celsius",
            "gauge",
            "The fixed setpoint the eco setpoint's choice is compared with, °C.",
            c.reference.setpoint_c,
        );
    }
    single(
        out,
        "thermo_governor_power_budget_watts",
        "gauge",
        "Power budget of the last decision, W.",
        f64::from(g.power_budget_w),
    );
    head(
        out,
        "thermo_governor_duty_ratio",
        "gauge",
        "Duty per work class (1 unpaced, 0 paused).",
    );
    for c in Priority::ALL {
        sample(
            out,
            "thermo_governor_duty_ratio",
            &format!("class=\"{}\"", c.as_str()),
            f64::from(g.duties[c.index()]),
        );
    }
    head(
        out,
        "thermo_governor_limiter",
        "gauge",
        "What limits work now (1 for the active limiter).",
    );
    sample(
        out,
        "thermo_governor_limiter",
        &format!(
            "limiter=\"{}\",mode=\"{}\"",
            g.limiter.as_str(),
            g.mode.as_str()
        ),
        1.0,
    );
}

/// The telemetry families: records dropped by reason, queue errors, lost replies and
/// oversized commands, and whether telemetry is degraded.
fn render_telemetry(out: &mut String, s: &TelemetryStats, health: &TelemetryHealth) {
    head(
        out,
        "thermo_telemetry_dropped_total",
        "counter",
        "Telemetry records dropped, by reason.",
    );
    for (reason, n) in [
        ("channel_full", s.dropped_channel),
        ("queue_bound", s.dropped_queue),
        ("queue_unwritable", s.dropped_unwritable),
    ] {
        sample(
            out,
            "thermo_telemetry_dropped_total",
            &format!("reason=\"{reason}\""),
            n as f64,
        );
    }
    for (name, help, n) in [
        (
            "thermo_telemetry_queue_errors_total",
            "Disk queue writes, syncs or compactions that failed.",
            s.queue_errors,
        ),
        (
            "thermo_telemetry_replies_dropped_total",
            "Command replies dropped (reply queue full or link lost).",
            s.replies_dropped,
        ),
        (
            "thermo_telemetry_oversized_commands_total",
            "Command messages dropped for their size.",
            s.oversized_commands,
        ),
    ] {
        head(out, name, "counter", help);
        sample(out, name, "", n as f64);
    }
    head(
        out,
        "thermo_telemetry_degraded",
        "gauge",
        "1 while telemetry drops records because its disk queue cannot be written.",
    );
    let degraded = matches!(health, TelemetryHealth::Degraded(_));
    sample(
        out,
        "thermo_telemetry_degraded",
        "",
        f64::from(u8::from(degraded)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eco_candidate(
        setpoint_c: f64,
        grid: f64,
        wear: f64,
    ) -> crate::governor::eco_setpoint::Candidate {
        crate::governor::eco_setpoint::Candidate {
            setpoint_c,
            die_c: setpoint_c,
            power_w: 5.0,
            tokens_per_s: 10.0,
            grid_g_per_ktok: grid,
            wear_g_per_ktok: wear,
        }
    }

    #[test]
    fn counters_render_with_llamacpp_names_and_rates() {
        let m = Metrics::default();
        m.add_prompt(10, 500_000);
        for _ in 0..4 {
            m.add_predicted(250_000);
        }
        m.add_request(Outcome::Ok);
        m.add_request(Outcome::Rejected);
        let status = GovernorStatus {
            controller: "ours",
            ticks: 3,
            at: std::time::Duration::from_secs(1),
            temperature_c: Some(55.0),
            health: crate::governor::types::Health::Fresh,
            power_w: Some(4.0),
            setpoint_c: 70.0,
            mode: crate::governor::types::Mode::Regulating,
            limiter: crate::governor::types::Limiter::None,
            reason: String::new(),
            power_budget_w: 5.0,
            freq_cap_khz: None,
            threads: 2,
            duties: [1.0, 1.0, 1.0],
            fan_level: None,
            steps_per_s: [0.0; 3],
            tokens_per_s: None,
            last_error: None,
            tick_mean: std::time::Duration::ZERO,
            tick_max: std::time::Duration::ZERO,
            running: true,
            eco: Some(crate::governor::SetpointChoice {
                chosen: eco_candidate(66.0, 0.27, 0.04),
                reference: eco_candidate(70.0, 0.30, 0.05),
                base_c: 45.0,
            }),
            headroom_s: Some(12.5),
        };
        let text = render(&MetricsView {
            metrics: &m,
            processing: 1,
            deferred: 2,
            governor: &status,
            governor_tick_age_s: 0.1,
            snapshot: None,
            zone_index: &[],
            simulated: true,
            today: Some(crate::eco::ledger::DayTotals {
                joules: 12.5,
                requests: 3,
                ..Default::default()
            }),
            telemetry: Some((
                TelemetryStats {
                    dropped_unwritable: 7,
                    queue_errors: 2,
                    replies_dropped: 4,
                    ..TelemetryStats::default()
                },
                TelemetryHealth::Degraded("no space".into()),
            )),
        });
        for line in [
            "thermo_eco_today{figure=\"joules\"} 12.5",
            "thermo_eco_today{figure=\"requests\"} 3",
            "llamacpp:prompt_tokens_total 10",
            "llamacpp:tokens_predicted_total 4",
            "llamacpp:prompt_tokens_seconds 20",
            "llamacpp:predicted_tokens_seconds 4",
            "llamacpp:requests_processing 1",
            "llamacpp:requests_deferred 2",
            "thermo_requests_total{outcome=\"ok\"} 1",
            "thermo_requests_total{outcome=\"rejected\"} 1",
            "thermo_simulated_soc 1",
            "thermo_telemetry_dropped_total{reason=\"queue_unwritable\"} 7",
            "thermo_telemetry_queue_errors_total 2",
            "thermo_telemetry_replies_dropped_total 4",
            "thermo_telemetry_degraded 1",
            "thermo_governor_temperature_celsius 55",
            "thermo_governor_headroom_seconds 12.5",
            "thermo_governor_limiter{limiter=\"none\",mode=\"regulating\"} 1",
            "thermo_governor_eco_g_co2e_per_1k_tokens{part=\"grid\"} 0.27",
            "thermo_governor_eco_g_co2e_per_1k_tokens{part=\"wear\"} 0.04",
            "thermo_governor_eco_g_co2e_per_1k_tokens{part=\"reference\"} 0.35",
            "thermo_governor_eco_reference_setpoint_celsius 70",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        // Every sample line belongs to a declared metric family.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap_or_default();
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} undeclared"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
