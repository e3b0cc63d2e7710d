//! The fleet benchmark's Markdown table and SVG plot.

use std::fmt::Write as _;

use super::{Dispatcher, FleetReport};
use crate::bench::svg::{Panel, render};

/// The report: one row per dispatcher, the ratio to round robin, then one row per board and
/// dispatcher.
pub fn markdown(r: &FleetReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Fleet benchmark\n\n{} requests over {:.0} simulated s, offered {:.2} tokens/s \
         ({:.0} % of the boards' {:.2} sustainable tokens/s at their setpoints).\n",
        r.requests,
        r.span_s,
        r.offered_tokens_per_s,
        100.0 * r.offered_tokens_per_s / r.sustainable_tokens_per_s.max(1e-9),
        r.sustainable_tokens_per_s,
    );
    let rr = r
        .run(Dispatcher::RoundRobin)
        .map(|x| x.fleet_tokens_per_s)
        .filter(|v| *v > 0.0);
    let _ = writeln!(
        s,
        "| dispatcher | fleet tokens/s | × round robin | answered | unanswered | duplicated | \
         answers over setpoint | hottest board max °C | wear-hours | p50 latency s | p99 latency s | messages |"
    );
    let _ = writeln!(
        s,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for run in &r.runs {
        let ratio = rr.map_or("—".to_string(), |b| {
            format!("{:.2}", run.fleet_tokens_per_s / b)
        });
        let hottest = run
            .boards
            .iter()
            .map(|b| b.max_temp_c)
            .fold(f64::NEG_INFINITY, f64::max);
        let wear: f64 = run.boards.iter().map(|b| b.wear_hours).sum();
        let _ = writeln!(
            s,
            "| {} | {:.2} | {ratio} | {} | {} | {} | {} | {hottest:.1} | {wear:.3} | {:.1} | {:.1} | {} |",
            run.dispatcher.name(),
            run.fleet_tokens_per_s,
            run.answered,
            run.unanswered,
            run.duplicates,
            run.answers_over_setpoint,
            run.p50_latency_s,
            run.p99_latency_s,
            run.messages,
        );
    }
    let _ = writeln!(
        s,
        "\n| board | setpoint °C | sustainable tokens/s | dispatcher | answers | tokens | max °C | wear-hours |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |");
    for (i, first) in r
        .runs
        .first()
        .map_or(&[][..], |x| &x.boards[..])
        .iter()
        .enumerate()
    {
        for run in &r.runs {
            let Some(b) = run.boards.get(i) else {
                continue;
            };
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.2} | {} | {} | {} | {:.1} | {:.4} |",
                first.label,
                b.setpoint_c,
                b.sustainable_tokens_per_s,
                run.dispatcher.name(),
                b.answers,
                b.tokens,
                b.max_temp_c,
                b.wear_hours,
            );
        }
    }
    s
}

/// Two panels per dispatcher: fleet tokens/s over 10 s windows against the offered rate, and
/// the hottest board's die temperature relative to its setpoint.
pub fn svg(r: &FleetReport) -> String {
    const COLOURS: [&str; 3] = ["#1f5fa8", "#d04a02", "#2a8a3e"];
    let mut panels = Vec::new();
    let mut end = r.span_s;
    for (k, run) in r.runs.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        end = run.tokens_series.last().map_or(end, |p| end.max(p.0));
        panels.push(Panel {
            label: format!("{} tok/s", run.dispatcher.name()),
            colour,
            points: run.tokens_series.clone(),
            references: vec![(r.offered_tokens_per_s, "offered".to_string())],
        });
        panels.push(Panel {
            label: format!("{} hottest − setpoint K", run.dispatcher.name()),
            colour,
            points: run.margin_series.clone(),
            references: vec![(0.0, "setpoint".to_string())],
        });
    }
    let title = r
        .runs
        .iter()
        .map(|x| format!("{} {:.2} tok/s", x.dispatcher.name(), x.fleet_tokens_per_s))
        .collect::<Vec<_>>()
        .join(" · ");
    render(&format!("fleet: {title}"), end, &panels)
}
