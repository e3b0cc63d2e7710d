//! The report of `thermo bench rag`: per question set and retrieval mode, recall@5 of the
//! search, answer accuracy and joules per answer, and the answers after which the index's
//! build cost is repaid; as a Markdown table and an SVG bar chart.

use serde::Serialize;

/// One question set answered in one mode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeRow {
    /// `none`, `dense`, `keyword` or `hybrid`.
    pub mode: String,
    /// `tune` or `held-out`.
    pub set: String,
    /// Questions asked.
    pub questions: usize,
    /// Share of questions whose answer is in one of the five best chunks of the right file;
    /// `None` without retrieval.
    pub recall_at_5: Option<f64>,
    /// Share answered by an exact match (first line equals, begins or ends with an accepted
    /// answer).
    pub exact_match: f64,
    /// Share whose first line contains an accepted answer as whole words.
    pub contains: f64,
    /// Joules per answer: retrieval, prefill and decode.
    pub j_per_answer: f64,
    /// Of which retrieval (embedding the question and the search).
    pub retrieval_j_per_answer: f64,
    /// Mean prompt tokens.
    pub prompt_tokens: f64,
}

impl ModeRow {
    /// Joules per answer that contains an accepted answer; infinite when none does.
    pub fn j_per_correct(&self) -> f64 {
        if self.contains > 0.0 {
            self.j_per_answer / self.contains
        } else {
            f64::INFINITY
        }
    }
}

/// When an index's build cost is repaid, against answering without retrieval.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payback {
    /// Without retrieval no answer is right: every right answer is the index's.
    FirstRightAnswer,
    /// After this many right answers (and this many joules of answering).
    After {
        /// Right answers.
        answers: f64,
        /// Joules spent answering them.
        joules: f64,
    },
    /// A right answer costs more with retrieval than without.
    Never,
}

/// When the `build_j` of an index is repaid by `rag` against `none`: each right answer saves
/// the difference of the joules per right answer.
pub fn payback(build_j: f64, none: &ModeRow, rag: &ModeRow) -> Payback {
    let (without, with) = (none.j_per_correct(), rag.j_per_correct());
    if !with.is_finite() || with >= without {
        return Payback::Never;
    }
    if !without.is_finite() {
        return Payback::FirstRightAnswer;
    }
    let answers = build_j / (without - with);
    Payback::After {
        answers,
        joules: answers * with,
    }
}

impl Payback {
    /// In words, for the table.
    pub fn text(&self) -> String {
        match self {
            Payback::FirstRightAnswer => "from the first right answer".into(),
            Payback::After { answers, joules } => {
                format!("after {answers:.1} right answers ({joules:.0} J)")
            }
            Payback::Never => "never (a right answer costs more)".into(),
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RagReport {
    /// Rows, set by set.
    pub rows: Vec<ModeRow>,
    /// Joules of building the index.
    pub build_j: f64,
    /// Chunks in the index.
    pub chunks: usize,
    /// Documents in the index.
    pub documents: usize,
    /// Per set and retrieval mode, when its build cost is repaid.
    pub payback: Vec<(String, String, Payback)>,
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.0}%", x * 100.0)
    } else {
        "—".into()
    }
}

fn num(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "—".into()
    }
}

/// The Markdown table and the notes under it.
pub fn markdown(r: &RagReport, notes: &str) -> String {
    let mut s = String::from(
        "| set | mode | questions | recall@5 | exact match | contains answer | J/answer | of which retrieval | prompt tokens | index repaid |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for row in &r.rows {
        let repaid = r
            .payback
            .iter()
            .find(|(set, mode, _)| *set == row.set && *mode == row.mode)
            .map_or("—".to_string(), |(_, _, p)| p.text());
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.set,
            row.mode,
            row.questions,
            row.recall_at_5.map_or("—".into(), pct),
            pct(row.exact_match),
            pct(row.contains),
            num(row.j_per_answer, 1),
            num(row.retrieval_j_per_answer, 2),
            num(row.prompt_tokens, 0),
            repaid,
        ));
    }
    s.push_str(&format!(
        "\nIndex: {} documents, {} chunks, built for {:.1} J.\n\n{notes}",
        r.documents, r.chunks, r.build_j
    ));
    s
}

/// A grouped bar chart: per mode, the share of right answers (contains) on each set and the
/// joules per answer, two panels side by side.
pub fn svg(r: &RagReport) -> String {
    let modes: Vec<&str> = {
        let mut m: Vec<&str> = r.rows.iter().map(|x| x.mode.as_str()).collect();
        m.dedup();
        let mut seen = vec![];
        m.retain(|x| {
            let new = !seen.contains(x);
            seen.push(*x);
            new
        });
        m
    };
    let sets = ["tune", "held-out"];
    let colours = ["#4477aa", "#ee6677"];
    let (w, h, top, bottom) = (760.0, 300.0, 40.0, 250.0);
    let panel_w = 340.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    let max_j = r
        .rows
        .iter()
        .map(|x| x.j_per_answer)
        .fold(0.0f64, f64::max)
        .max(1e-9);
    for (p, (title, value, max)) in [
        (
            "right answers (contains)",
            (|x: &ModeRow| x.contains) as fn(&ModeRow) -> f64,
            1.0,
        ),
        ("joules per answer", |x: &ModeRow| x.j_per_answer, max_j),
    ]
    .into_iter()
    .enumerate()
    {
        let x0 = 40.0 + p as f64 * (panel_w + 40.0);
        s.push_str(&format!(
            "<text x=\"{x0}\" y=\"20\" font-weight=\"bold\">{title}</text>\n<line x1=\"{x0}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"#333\"/>\n",
            x0 + panel_w
        ));
        let group = panel_w / modes.len().max(1) as f64;
        for (i, mode) in modes.iter().enumerate() {
            let gx = x0 + i as f64 * group;
            for (k, set) in sets.iter().enumerate() {
                let Some(row) = r.rows.iter().find(|x| x.mode == *mode && x.set == *set) else {
                    continue;
                };
                let v = value(row);
                let bh = if max > 0.0 {
                    (v / max).clamp(0.0, 1.0) * (bottom - top)
                } else {
                    0.0
                };
                let bx = gx + 8.0 + k as f64 * (group - 16.0) / 2.0;
                let bw = (group - 16.0) / 2.0 - 2.0;
                s.push_str(&format!(
                    "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{set} {mode}: {v:.3}</title></rect>\n",
                    bottom - bh,
                    colours[k]
                ));
            }
            s.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{mode}</text>\n",
                gx + group / 2.0,
                bottom + 16.0
            ));
        }
    }
    for (k, set) in sets.iter().enumerate() {
        let x = 40.0 + k as f64 * 110.0;
        s.push_str(&format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{set}</text>\n",
            h - 24.0,
            colours[k],
            x + 16.0,
            h - 14.0
        ));
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mode: &str, contains: f64, j: f64) -> ModeRow {
        ModeRow {
            mode: mode.into(),
            set: "tune".into(),
            questions: 20,
            recall_at_5: None,
            exact_match: contains,
            contains,
            j_per_answer: j,
            retrieval_j_per_answer: 0.0,
            prompt_tokens: 50.0,
        }
    }

    #[test]
    fn payback_compares_joules_per_right_answer() {
        // Without: 10 J / 0.2 = 50 J per right answer; with: 20 J / 0.8 = 25 J.
        let p = payback(500.0, &row("none", 0.2, 10.0), &row("hybrid", 0.8, 20.0));
        assert_eq!(
            p,
            Payback::After {
                answers: 20.0,
                joules: 500.0
            }
        );
        assert_eq!(
            payback(500.0, &row("none", 0.0, 10.0), &row("hybrid", 0.5, 20.0)),
            Payback::FirstRightAnswer
        );
        assert_eq!(
            payback(500.0, &row("none", 0.5, 10.0), &row("hybrid", 0.5, 20.0)),
            Payback::Never
        );
        assert_eq!(
            payback(500.0, &row("none", 0.0, 10.0), &row("hybrid", 0.0, 20.0)),
            Payback::Never
        );
    }

    #[test]
    fn the_table_and_the_chart_show_every_row() {
        let r = RagReport {
            rows: vec![row("none", 0.1, 5.0), row("hybrid", 0.7, 9.0)],
            build_j: 42.0,
            chunks: 30,
            documents: 12,
            payback: vec![(
                "tune".into(),
                "hybrid".into(),
                payback(42.0, &row("none", 0.1, 5.0), &row("hybrid", 0.7, 9.0)),
            )],
        };
        let md = markdown(&r, "notes");
        assert_eq!(md.lines().filter(|l| l.starts_with("| tune |")).count(), 2);
        assert!(md.contains("after "), "{md}");
        assert!(md.contains("built for 42.0 J"));
        let svg = svg(&r);
        assert_eq!(
            svg.matches("<rect").count(),
            4 + 2,
            "two bars per panel, two keys"
        );
        assert!(svg.ends_with("</svg>\n"));
    }
}
