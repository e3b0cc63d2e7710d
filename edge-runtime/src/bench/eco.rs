//! The eco-benchmark's results and report: one [`EcoEntry`] per model or weight format with
//! quality (perplexity on the held-out text, exact match on the question set), speed, energy
//! and footprint per 1000 tokens, temperatures under the governor and peak RSS; the Pareto
//! rating (quality against energy per token) and the Markdown, JSON and SVG renderings. The
//! measuring itself is the command line's `bench eco`.

use serde::Serialize;

use super::svg::escape;

/// How an entry rates against the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rating {
    /// On the Pareto front: nothing is at least as good on every axis and cheaper.
    Pareto,
    /// Another entry is at least as good on every axis and strictly better on one.
    Dominated,
    /// Another entry costs at most half the energy per token for at most a marginal quality
    /// loss (perplexity within 5 %, exact match within 10 points).
    MarginalGain,
}

impl Rating {
    fn label(self) -> &'static str {
        match self {
            Rating::Pareto => "Pareto front",
            Rating::Dominated => "dominated",
            Rating::MarginalGain => "dominated (marginal gain for the energy)",
        }
    }
}

/// One measured entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EcoEntry {
    /// Name, e.g. `SmolLM2-135M f32`.
    pub name: String,
    /// Perplexity on the held-out text.
    pub perplexity: f64,
    /// Chunk size of the perplexity run.
    pub ppl_ctx: usize,
    /// Exact-match share on the question set, 0 to 1.
    pub exact_match: f64,
    /// Questions asked.
    pub questions: usize,
    /// Prefill tokens per second.
    pub prefill_tps: f64,
    /// Decode tokens per second.
    pub decode_tps: f64,
    /// Board energy per generated token (J).
    pub j_per_token: f64,
    /// Where the energy figure came from.
    pub energy_source: String,
    /// Operational carbon per 1000 generated tokens (g CO2e).
    pub g_co2e_per_1k: f64,
    /// Water per 1000 generated tokens (mL).
    pub water_ml_per_1k: f64,
    /// NOx per 1000 generated tokens (mg).
    pub nox_mg_per_1k: f64,
    /// Hottest die temperature under the governor (°C).
    pub peak_c: f64,
    /// Seconds the die spent above the governor's setpoint.
    pub above_setpoint_s: f64,
    /// The governor's setpoint (°C).
    pub setpoint_c: f64,
    /// Peak resident set size while this entry ran (MB).
    pub peak_rss_mb: f64,
    /// The rating against the other entries.
    pub rating: Rating,
}

fn at_least_as_good(b: &EcoEntry, a: &EcoEntry) -> bool {
    b.j_per_token <= a.j_per_token && b.perplexity <= a.perplexity && b.exact_match >= a.exact_match
}

fn strictly_better_somewhere(b: &EcoEntry, a: &EcoEntry) -> bool {
    b.j_per_token < a.j_per_token || b.perplexity < a.perplexity || b.exact_match > a.exact_match
}

/// Rates every entry: [`Rating::Dominated`] when strictly Pareto-dominated (energy per
/// token, perplexity, exact match), [`Rating::MarginalGain`] when another entry spends at
/// most half the energy per token for a marginal quality loss, else [`Rating::Pareto`].
pub fn rate(entries: &mut [EcoEntry]) {
    let snapshot = entries.to_vec();
    for (i, a) in entries.iter_mut().enumerate() {
        let others = snapshot.iter().enumerate().filter(|(j, _)| *j != i);
        let mut rating = Rating::Pareto;
        for (_, b) in others {
            if at_least_as_good(b, a) && strictly_better_somewhere(b, a) {
                rating = Rating::Dominated;
                break;
            }
            if b.j_per_token * 2.0 <= a.j_per_token
                && a.perplexity * 1.05 >= b.perplexity
                && a.exact_match <= b.exact_match + 0.10
            {
                rating = Rating::MarginalGain;
            }
        }
        a.rating = rating;
    }
}

/// The Markdown report.
pub fn markdown(entries: &[EcoEntry], notes: &str) -> String {
    let mut s = String::from(
        "| entry | PPL | exact match | prefill tok/s | decode tok/s | J/token | source | g CO2e /1k tok | mL water /1k tok | mg NOx /1k tok | peak °C | s above setpoint | peak RSS MB | rating |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for e in entries {
        s.push_str(&format!(
            "| {} | {:.2} | {}/{} | {:.1} | {:.1} | {:.3} | {} | {:.4} | {:.2} | {:.3} | {:.1} | {:.1} (set {:.0}) | {:.0} | {} |\n",
            e.name,
            e.perplexity,
            (e.exact_match * e.questions as f64).round(),
            e.questions,
            e.prefill_tps,
            e.decode_tps,
            e.j_per_token,
            e.energy_source,
            e.g_co2e_per_1k,
            e.water_ml_per_1k,
            e.nox_mg_per_1k,
            e.peak_c,
            e.above_setpoint_s,
            e.setpoint_c,
            e.peak_rss_mb,
            e.rating.label(),
        ));
    }
    s.push('\n');
    s.push_str(notes);
    s
}

/// An SVG scatter of perplexity (log scale, lower is better) against energy per token (log
/// scale): Pareto entries filled and joined by the front line, dominated ones hollow.
pub fn svg(entries: &[EcoEntry]) -> String {
    let pts: Vec<(f64, f64)> = entries
        .iter()
        .map(|e| {
            (
                e.j_per_token.max(1e-9).log10(),
                e.perplexity.max(1.0).log10(),
            )
        })
        .collect();
    let chart = Chart {
        w: 720.0,
        h: 440.0,
        m: 70.0,
        x: span(pts.iter().map(|p| p.0)),
        y: span(pts.iter().map(|p| p.1)),
    };
    let mut s = chart.frame();
    let mut front: Vec<(f64, f64)> = entries
        .iter()
        .zip(&pts)
        .filter(|(e, _)| e.rating == Rating::Pareto)
        .map(|(_, p)| (chart.px(p.0), chart.py(p.1)))
        .collect();
    front.sort_by(|a, b| a.0.total_cmp(&b.0));
    if front.len() > 1 {
        let path: Vec<String> = front
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        s.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"seagreen\" stroke-width=\"2\" stroke-dasharray=\"6 4\"/>\n",
            path.join(" ")
        ));
    }
    for (i, (e, p)) in entries.iter().zip(&pts).enumerate() {
        s.push_str(&chart.point(i, e, (chart.px(p.0), chart.py(p.1))));
    }
    s.push_str("</svg>\n");
    s
}

/// The range of `values` with a tenth of it as margin on each side (one unit around a single
/// value; `0..1` without any).
fn span(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() && hi > lo {
        (lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
    } else if lo.is_finite() {
        (lo - 0.5, lo + 0.5)
    } else {
        (0.0, 1.0)
    }
}

/// The scatter's size, margin and axis ranges (log10 of J/token across, of perplexity up).
struct Chart {
    w: f64,
    h: f64,
    m: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Chart {
    fn px(&self, x: f64) -> f64 {
        self.m + (x - self.x.0) / (self.x.1 - self.x.0) * (self.w - 2.0 * self.m)
    }

    fn py(&self, y: f64) -> f64 {
        self.h - self.m - (y - self.y.0) / (self.y.1 - self.y.0) * (self.h - 2.0 * self.m)
    }

    /// The opening tag, background, title, axes with their labels and a label per decade.
    fn frame(&self) -> String {
        let (w, h, m) = (self.w, self.h, self.m);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">Quality vs energy per token (lower-left is better)</text>\n\
             <line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
             <line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">energy per generated token, J (log)</text>\n\
             <text x=\"18\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">perplexity on held-out text (log)</text>\n",
            w / 2.0,
            h - m,
            w - m,
            h - m,
            h - m,
            w / 2.0,
            h - 25.0,
            h / 2.0,
            h / 2.0
        );
        for ((lo, hi), horizontal) in [(self.x, true), (self.y, false)] {
            let mut k = lo.ceil() as i32;
            while f64::from(k) <= hi {
                let v = f64::from(k);
                let label = format!("{}", 10f64.powi(k));
                if horizontal {
                    s.push_str(&format!(
                        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n",
                        self.px(v),
                        h - m + 16.0
                    ));
                } else {
                    s.push_str(&format!(
                        "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>\n",
                        m - 6.0,
                        self.py(v) + 4.0
                    ));
                }
                k += 1;
            }
        }
        s
    }

    /// Entry `i` as a circle at `(x, y)` with its name and rating beside it.
    fn point(&self, i: usize, e: &EcoEntry, (x, y): (f64, f64)) -> String {
        // Alternate labels above and below so neighbours with equal quality stay legible.
        let label_dy = if i.is_multiple_of(2) { -8.0 } else { 20.0 };
        // Labels of points in the right half run leftwards so they stay inside the chart.
        let (label_x, anchor) = if x > self.w / 2.0 {
            (x - 9.0, "end")
        } else {
            (x + 9.0, "start")
        };
        let (fill, stroke) = match e.rating {
            Rating::Pareto => ("seagreen", "seagreen"),
            _ => ("white", "firebrick"),
        };
        format!(
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"6\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"2\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{} ({})</text>\n",
            label_x,
            y + label_dy,
            escape(&e.name),
            e.rating.label()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, j: f64, ppl: f64, em: f64) -> EcoEntry {
        EcoEntry {
            name: name.into(),
            perplexity: ppl,
            ppl_ctx: 128,
            exact_match: em,
            questions: 10,
            prefill_tps: 0.0,
            decode_tps: 0.0,
            j_per_token: j,
            energy_source: "test".into(),
            g_co2e_per_1k: 0.0,
            water_ml_per_1k: 0.0,
            nox_mg_per_1k: 0.0,
            peak_c: 0.0,
            above_setpoint_s: 0.0,
            setpoint_c: 70.0,
            peak_rss_mb: 0.0,
            rating: Rating::Pareto,
        }
    }

    #[test]
    fn rates_the_front_the_dominated_and_the_marginal() {
        let mut e = vec![
            entry("small", 0.1, 30.0, 0.5),
            // Dearer and worse on every axis: dominated.
            entry("worse", 0.2, 40.0, 0.4),
            // Four times the energy for 2 % lower perplexity: marginal.
            entry("big", 0.4, 29.4, 0.5),
            // Much better perplexity for more energy: on the front.
            entry("good", 0.8, 15.0, 0.9),
        ];
        rate(&mut e);
        let r: Vec<Rating> = e.iter().map(|x| x.rating).collect();
        assert_eq!(
            r,
            [
                Rating::Pareto,
                Rating::Dominated,
                Rating::MarginalGain,
                Rating::Pareto
            ]
        );
        let md = markdown(&e, "");
        assert!(md.contains("| worse |") && md.contains("dominated (marginal"));
        let svg = svg(&e);
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("<polyline"));
        assert_eq!(
            svg.matches("fill=\"white\" stroke=\"firebrick\"").count(),
            2
        );
    }
}
