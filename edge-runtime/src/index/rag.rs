//! Retrieval in an answer: the best chunks put before the question within a token budget,
//! numbered, with the instruction to cite them by number, and the list of sources printed
//! after the answer.

use super::Hit;

/// Passages used by default.
pub const DEFAULT_PASSAGES: usize = 3;

/// The prompt for `question` with as many of `hits` (best first) as fit in `budget` tokens
/// by `count_tokens`, and the hits it used. A passage that does not fit whole is cut to fit
/// when it is the first; later ones are left out. Without hits the question is the prompt.
pub fn prompt(
    question: &str,
    hits: &[Hit],
    budget: usize,
    count_tokens: &dyn Fn(&str) -> usize,
) -> (String, Vec<Hit>) {
    let head = "Answer the question using the sources below. Cite the sources you use by their number, like [1].\n\n";
    let tail = format!("Question: {question}");
    let mut used: Vec<Hit> = Vec::new();
    let mut body = String::new();
    let fixed = count_tokens(head) + count_tokens(&tail);
    for hit in hits {
        let n = used.len() + 1;
        let label = format!("[{n}] {}\n", short_citation(hit));
        let passage = format!("{label}{}\n\n", hit.text.trim());
        let total = fixed + count_tokens(&body) + count_tokens(&passage);
        if total <= budget {
            body.push_str(&passage);
            used.push(hit.clone());
            continue;
        }
        if used.is_empty() {
            let room = budget.saturating_sub(fixed + count_tokens(&label) + 2);
            let cut = cut_to_tokens(hit.text.trim(), room, count_tokens);
            if !cut.is_empty() {
                body.push_str(&format!("{label}{cut}\n\n"));
                used.push(hit.clone());
            }
        }
        break;
    }
    if used.is_empty() {
        return (question.to_string(), used);
    }
    (format!("{head}{body}{tail}"), used)
}

/// The longest prefix of `text`, cut at whitespace, that takes at most `tokens` tokens.
fn cut_to_tokens(text: &str, tokens: usize, count_tokens: &dyn Fn(&str) -> usize) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (mut lo, mut hi) = (0, words.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if count_tokens(&words[..mid].join(" ")) <= tokens {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    words[..lo].join(" ")
}

/// `name:lines`: the file name and the lines, what the model reads.
fn short_citation(hit: &Hit) -> String {
    let name = std::path::Path::new(&hit.path)
        .file_name()
        .map_or(hit.path.clone(), |n| n.to_string_lossy().into_owned());
    if hit.line_start == hit.line_end {
        format!("{name}:{}", hit.line_start)
    } else {
        format!("{name}:{}-{}", hit.line_start, hit.line_end)
    }
}

/// The sources list printed after an answer: `[n] path:lines`, one per line.
pub fn sources(used: &[Hit]) -> String {
    used.iter()
        .enumerate()
        .map(|(i, h)| format!("[{}] {}", i + 1, h.citation()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(path: &str, lines: (u32, u32), text: &str) -> Hit {
        Hit {
            chunk_id: 1,
            path: path.into(),
            line_start: lines.0,
            line_end: lines.1,
            score: 1.0,
            text: text.into(),
        }
    }

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn passages_are_numbered_and_stop_at_the_budget() {
        let hits = [
            hit(
                "/d/pump.md",
                (3, 5),
                "The pump runs at 40 litres per minute.",
            ),
            hit("/d/valve.txt", (9, 9), "The valve opens at 2 bar."),
            hit("/d/long.txt", (1, 80), &"filler ".repeat(200)),
        ];
        let (p, used) = prompt("How fast is the pump?", &hits, 60, &words);
        assert_eq!(used.len(), 2);
        assert!(p.contains("[1] pump.md:3-5\nThe pump runs"), "{p}");
        assert!(p.contains("[2] valve.txt:9\n"), "{p}");
        assert!(p.ends_with("Question: How fast is the pump?"));
        assert!(words(&p) <= 60);
        assert_eq!(sources(&used), "[1] /d/pump.md:3-5\n[2] /d/valve.txt:9");
    }

    #[test]
    fn a_first_passage_too_long_is_cut_to_fit_and_no_hits_leave_the_question_alone() {
        let hits = [hit("/d/long.txt", (1, 80), &"filler ".repeat(200))];
        let (p, used) = prompt("Why?", &hits, 50, &words);
        assert_eq!(used.len(), 1);
        assert!(words(&p) <= 50, "{}", words(&p));
        assert!(p.contains("filler"));
        assert_eq!(prompt("Why?", &[], 50, &words).0, "Why?");
        assert_eq!(prompt("Why?", &hits, 5, &words).0, "Why?");
    }
}
