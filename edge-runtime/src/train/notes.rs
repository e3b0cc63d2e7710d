//! A note file (plain text, one note per line) turned into training and held-out examples:
//! each note as text plus its derived question/answer pairs in the chat template, and, by
//! default, one further generated question per note held out, so that no note is kept from
//! training and recall can be measured on wording the training data does not hold.

use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::augment::NotePlan;
use super::data::{DataProblem, Example, RawExample, TextSide, parse_file, tokenize};
use crate::engine::chat::{Message, Role};

/// What is held out of a note file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HoldOut {
    /// One generated question per note (every note is trained on).
    Questions,
    /// A seeded share of whole notes with their pairs: these notes are never learned.
    Notes {
        /// Share of notes held out.
        fraction: f32,
        /// Seed of the choice.
        seed: u64,
    },
    /// Nothing (the held-out data comes from another file).
    Nothing,
}

/// The notes of a plain-text file with their lines, and the problems of reading it.
pub fn read_notes(path: &Path) -> (Vec<(usize, String)>, Vec<DataProblem>) {
    let (raw, problems) = parse_file(path);
    let notes = raw
        .into_iter()
        .filter_map(|(line, ex)| match ex {
            RawExample::Text(t) => Some((line, t.trim().to_string())),
            RawExample::Chat(_) => None,
        })
        .collect();
    (notes, problems)
}

/// Lines of the notes `hold` keeps out of training (seeded, at least one of two or more).
pub fn held_notes(notes: &[(usize, String)], hold: HoldOut) -> Vec<usize> {
    let HoldOut::Notes { fraction, seed } = hold else {
        return vec![];
    };
    let n = notes.len();
    if n < 2 {
        return vec![];
    }
    let k = ((n as f32 * fraction).round() as usize).clamp(1, n - 1);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(
        seed ^ 0x005e_ed0f_5911,
    ));
    idx.into_iter().take(k).map(|i| notes[i].0).collect()
}

/// Training and held-out examples of a note file.
#[derive(Debug, Default)]
pub struct NoteSets {
    /// Notes as text and their pairs in the chat template.
    pub train: Vec<Example>,
    /// Held-out generated questions or held-out notes.
    pub held: Vec<Example>,
    /// Generated pairs left out because they do not fit a training sequence.
    pub dropped_pairs: usize,
}

/// Tokenizes the notes of `plan` and their pairs for `seq_len`; the notes whose lines are
/// in `held_lines` (and their pairs) go to the held-out set, and with
/// [`HoldOut::Questions`] each note's held-out question does. A note that does not tokenize
/// is a problem; a generated pair that does not is dropped and counted.
pub fn note_sets(
    path: &Path,
    side: &TextSide,
    seq_len: usize,
    plan: &NotePlan,
    hold: HoldOut,
    held_lines: &[usize],
) -> (NoteSets, Vec<DataProblem>) {
    let mut out = NoteSets::default();
    let mut problems = vec![];
    let example = |line: usize, raw: &RawExample| {
        tokenize(side, raw, seq_len).map(|(ids, scored_from, key)| Example {
            file: path.to_path_buf(),
            line,
            ids,
            scored_from,
            key,
        })
    };
    let chat = |q: &str, a: &str| {
        RawExample::Chat(vec![
            Message::new(Role::User, q),
            Message::new(Role::Assistant, a),
        ])
    };
    for n in &plan.notes {
        let to_held = held_lines.contains(&n.line);
        match example(n.line, &RawExample::Text(n.note.clone())) {
            Ok(e) if to_held => out.held.push(e),
            Ok(e) => out.train.push(e),
            Err(message) => problems.push(DataProblem {
                file: path.to_path_buf(),
                line: Some(n.line),
                message,
            }),
        }
        for p in &n.train {
            match example(n.line, &chat(&p.question, &p.answer)) {
                Ok(e) if to_held => out.held.push(e),
                Ok(e) => out.train.push(e),
                Err(_) => out.dropped_pairs += 1,
            }
        }
        if hold == HoldOut::Questions
            && let Some(p) = &n.held
        {
            match example(n.line, &chat(&p.question, &p.answer)) {
                Ok(e) => out.held.push(e),
                Err(_) => out.dropped_pairs += 1,
            }
        }
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_notes_are_a_seeded_share_and_never_all() {
        let notes: Vec<(usize, String)> = (1..=20).map(|i| (i, format!("note {i}"))).collect();
        let a = held_notes(
            &notes,
            HoldOut::Notes {
                fraction: 0.1,
                seed: 3,
            },
        );
        assert_eq!(a.len(), 2);
        assert_eq!(
            a,
            held_notes(
                &notes,
                HoldOut::Notes {
                    fraction: 0.1,
                    seed: 3
                }
            )
        );
        assert!(held_notes(&notes, HoldOut::Questions).is_empty());
        let all = held_notes(
            &notes,
            HoldOut::Notes {
                fraction: 1.0,
                seed: 3,
            },
        );
        assert_eq!(all.len(), 19);
    }
}
