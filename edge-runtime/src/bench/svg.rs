//! Hand-written SVG for the benchmarks' reports, with no plotting dependency: stacked panels
//! of one run sharing the time axis, each a polyline with optional horizontal reference lines
//! (the setpoint, the firmware throttle point), and the text escaping every SVG here shares.

use std::fmt::Write as _;

/// One stacked panel.
#[derive(Clone, Debug, Default)]
pub struct Panel {
    /// Axis label, with its unit.
    pub label: String,
    /// Stroke colour of the series.
    pub colour: &'static str,
    /// `(t_s, value)` points in time order.
    pub points: Vec<(f64, f64)>,
    /// Horizontal reference lines: `(value, label)`.
    pub references: Vec<(f64, String)>,
}

const WIDTH: f64 = 900.0;
const PANEL_H: f64 = 160.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const GAP: f64 = 30.0;

/// Renders `panels` stacked under `title`; the time axis spans `0..=duration_s`.
pub fn render(title: &str, duration_s: f64, panels: &[Panel]) -> String {
    render_over(title, (0.0, duration_s.max(1e-9)), "s", panels, &[])
}

/// A point marked on a panel: `(panel index, x, y, label)`.
pub type Mark = (usize, f64, f64, String);

/// Renders `panels` stacked under `title` over the x range `span` (labelled in `unit`), with
/// `marks` drawn as labelled dots.
pub fn render_over(
    title: &str,
    span: (f64, f64),
    unit: &str,
    panels: &[Panel],
    marks: &[Mark],
) -> String {
    let height = TOP + panels.len() as f64 * (PANEL_H + GAP) + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="14">{}</text>"#,
        escape(title)
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let (x0, x1) = (span.0, span.1.max(span.0 + 1e-9));
    for (i, p) in panels.iter().enumerate() {
        let here: Vec<&Mark> = marks.iter().filter(|m| m.0 == i).collect();
        draw_panel(&mut s, TOP + i as f64 * (PANEL_H + GAP), p, (x0, x1), &here);
    }
    let axis_y = TOP + panels.len() as f64 * (PANEL_H + GAP) - GAP + 14.0;
    for k in 0..=6 {
        let t = x0 + (x1 - x0) * f64::from(k) / 6.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{axis_y:.1}" text-anchor="middle">{t:.0} {}</text>"#,
            LEFT + (t - x0) / (x1 - x0) * plot_w,
            escape(unit)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Draws panel `p` with its top edge at `y0` over the x range `(x0, x1)`, with `marks`.
fn draw_panel(s: &mut String, y0: f64, p: &Panel, (x0, x1): (f64, f64), marks: &[&Mark]) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(_, v) in p.points.iter().filter(|(_, v)| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    for &(v, _) in &p.references {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    for m in marks.iter().filter(|m| m.2.is_finite()) {
        lo = lo.min(m.2);
        hi = hi.max(m.2);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08)
        .max(hi.abs().max(lo.abs()) * 0.02)
        .max(1e-6);
    let (lo, hi) = (lo - pad, hi + pad);
    let y_of = |v: f64| y0 + PANEL_H - (v - lo) / (hi - lo) * PANEL_H;
    let x_of = |t: f64| LEFT + (t - x0) / (x1 - x0) * plot_w;
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#888"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="8" y="{:.1}">{}</text>"#,
        y0 + PANEL_H / 2.0,
        escape(&p.label)
    );
    let digits = if hi - lo < 1.0 { 3 } else { 1 };
    for (v, text) in [(hi, hi), (lo, lo)] {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{text:.digits$}</text>"#,
            LEFT - 4.0,
            y_of(v) + 4.0
        );
    }
    for (v, text) in &p.references {
        let y = y_of(*v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#c33" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="#c33" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT + plot_w - 4.0,
            y - 3.0,
            escape(text)
        );
    }
    let mut pts = String::new();
    for &(t, v) in p.points.iter().filter(|(_, v)| v.is_finite()) {
        let _ = write!(pts, "{:.1},{:.1} ", x_of(t), y_of(v));
    }
    let _ = writeln!(
        s,
        r#"<polyline fill="none" stroke="{}" stroke-width="1.2" points="{}"/>"#,
        p.colour,
        pts.trim_end()
    );
    for (_, x, y, label) in marks.iter().map(|m| &**m).filter(|m| m.2.is_finite()) {
        let (cx, cy) = (x_of(*x), y_of(*y));
        let _ = writeln!(
            s,
            r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="4" fill="#c33"/><text x="{:.1}" y="{:.1}" fill="#c33">{}</text>"##,
            cx + 6.0,
            cy - 6.0,
            escape(label)
        );
    }
}

/// `text` made safe inside an SVG (XML) text node or attribute value.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_polyline_per_panel_with_reference_lines() {
        let panel = Panel {
            label: "die °C".to_string(),
            colour: "#d60",
            points: vec![(0.0, 40.0), (10.0, 60.0), (20.0, f64::NAN), (30.0, 70.0)],
            references: vec![(70.0, "setpoint".to_string())],
        };
        let svg = render("rpi5 <sustained>", 30.0, &[panel.clone(), panel]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("stroke-dasharray").count(), 2);
        assert!(svg.contains("rpi5 &lt;sustained&gt;"));
        assert!(!svg.contains("NaN"));
    }
}
