//! Search: dense (the query's vector against every chunk's, exact, on the engine's Q8_0
//! integer kernels, split over the compute threads), keyword (FTS5's BM25 over the query's
//! words), and both fused by reciprocal rank.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use crate::engine::kernels::{BlockKind, Isa, Q8Rows, QuantMatrix, matmul_t};
use crate::engine::quant::{GgmlType, QK, quantize};
use crate::engine::row_pool::{RowJob, RowPool, current_threads};

use super::IndexError;

/// Which ranking a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Cosine of the sentence vectors.
    Dense,
    /// FTS5 BM25 over the words.
    Keyword,
    /// Both, fused by reciprocal rank.
    Hybrid,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dense" => Ok(Mode::Dense),
            "keyword" => Ok(Mode::Keyword),
            "hybrid" => Ok(Mode::Hybrid),
            _ => Err(format!("{s:?}: expected dense, keyword or hybrid")),
        }
    }
}

impl Mode {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Dense => "dense",
            Mode::Keyword => "keyword",
            Mode::Hybrid => "hybrid",
        }
    }
}

/// Reciprocal-rank fusion's constant: a hit at rank `r` (1-based) scores `1 / (RRF_K + r)`.
pub const RRF_K: f64 = 60.0;

/// Words that carry no meaning for a keyword search.
pub const STOP_WORDS: &[&str] = &[
    "a", "about", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from",
    "how", "i", "in", "is", "it", "its", "many", "much", "of", "on", "or", "that", "the", "this",
    "to", "was", "what", "when", "where", "which", "who", "why", "will", "with", "you",
];

/// Most words of a query the keyword search uses.
const MAX_QUERY_WORDS: usize = 32;

/// Postings (chunks holding a word, summed over the words) a keyword search reads beyond its
/// rarest word. FTS5 reads every posting of every word it is given, so a word found in a large
/// share of a large index would cost far more than it changes the ranking.
pub const KEYWORD_POSTINGS: u64 = 4096;

/// A user's query as the words a keyword search looks for: letters and digits, lower-cased,
/// without stop words or repeats, at most [`MAX_QUERY_WORDS`].
pub fn query_words(text: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for w in text.split(|c: char| !c.is_alphanumeric()) {
        let w = w.to_lowercase();
        if w.is_empty() || STOP_WORDS.contains(&w.as_str()) || seen.contains(&w) {
            continue;
        }
        seen.push(w);
        if seen.len() == MAX_QUERY_WORDS {
            break;
        }
    }
    seen
}

/// The FTS5 expression for `words`: each quoted, so that no FTS5 syntax comes from the user,
/// joined by OR.
pub fn fts_query(words: &[String]) -> String {
    words
        .iter()
        .map(|w| format!("\"{w}\""))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The words worth reading, given each word with the number of chunks holding it, out of
/// `chunks`: rarest first, as long as the postings read stay within [`KEYWORD_POSTINGS`].
/// The rarest word is kept beyond that unless it is in more than half the chunks, where BM25
/// gives it no weight. Words in no chunk are dropped. Below [`KEYWORD_POSTINGS`] chunks in
/// all, every word the index holds is kept.
pub fn selective_words(mut words: Vec<(String, u64)>, chunks: u64) -> Vec<String> {
    words.retain(|(_, n)| *n > 0);
    words.sort_by_key(|(_, n)| *n);
    let mut read = 0u64;
    let mut kept = Vec::new();
    for (w, n) in words {
        let within = read + n <= KEYWORD_POSTINGS;
        let rarest_with_weight = kept.is_empty() && n.saturating_mul(2) <= chunks;
        if !(within || rarest_with_weight) {
            break;
        }
        read += n;
        kept.push(w);
    }
    kept
}

/// A vector in the Q8_0 blocks the index stores.
pub fn vector_q8(v: &[f32]) -> Result<Vec<u8>, IndexError> {
    if v.is_empty() || !v.len().is_multiple_of(QK) {
        return Err(IndexError::Embed(format!(
            "a vector of {} values is not whole blocks of {QK}",
            v.len()
        )));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(IndexError::Embed(
            "the encoder gave a non-finite value".into(),
        ));
    }
    quantize(GgmlType::Q8_0, v).map_err(|e| IndexError::Embed(e.to_string()))
}

/// Every chunk's vector in memory, one Q8_0 matrix, for exact dense search.
#[derive(Debug, Clone, Default)]
pub struct DenseTable {
    ids: Vec<i64>,
    q8: Arc<[u8]>,
    dim: usize,
}

impl DenseTable {
    /// The table of `ids` (chunk row ids) and their vectors concatenated, `dim` wide.
    pub fn new(ids: Vec<i64>, q8: Vec<u8>, dim: usize) -> Result<Self, IndexError> {
        let table = DenseTable {
            ids,
            q8: q8.into(),
            dim,
        };
        matrix(&table.q8, table.ids.len(), table.dim).map_err(IndexError::Corrupt)?;
        Ok(table)
    }

    /// Chunks held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// No chunks.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bytes resident.
    pub fn resident_bytes(&self) -> usize {
        self.q8.len() + self.ids.len() * std::mem::size_of::<i64>()
    }

    /// The `k` chunks nearest `query` (a unit vector), best first, with their cosines; equal
    /// cosines rank by row order.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(i64, f64)>, IndexError> {
        if self.ids.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        if query.len() != self.dim {
            return Err(IndexError::Embed(format!(
                "a query of {} values against vectors of {}",
                query.len(),
                self.dim
            )));
        }
        let mut q = Q8Rows::default();
        q.quantize(query, 1, self.dim)
            .map_err(|e| IndexError::Embed(e.to_string()))?;
        let (q, table, rows, dim) = (Arc::new(q), Arc::clone(&self.q8), self.ids.len(), self.dim);
        // Each share of the rows is the product of those rows with the query.
        let job: RowJob = Arc::new(move |first, out: &mut [f32]| {
            let w = matrix(&table, rows, dim)?;
            matmul_t(Isa::detect(), &w, first, &q, out).map_err(|e| e.to_string())
        });
        let mut scores = vec![0f32; rows];
        RowPool::global()
            .run(&mut scores, 1, 1, current_threads(), job)
            .map_err(IndexError::Embed)?;
        Ok(top_k(&scores, k)
            .into_iter()
            .map(|(i, s)| (self.ids[i], f64::from(s)))
            .collect())
    }
}

/// The Q8_0 matrix of `rows` vectors `dim` wide in `q8`.
fn matrix(q8: &[u8], rows: usize, dim: usize) -> Result<QuantMatrix<'_>, String> {
    let kind = BlockKind::from_ggml(GgmlType::Q8_0).map_err(|e| e.to_string())?;
    QuantMatrix::new(kind, rows, dim.max(1), q8).map_err(|e| format!("vectors table: {e}"))
}

/// A score in a min-heap of the best: the lowest score (the later row among equals) on top.
#[derive(Debug, PartialEq)]
struct Kept(f32, usize);

impl Eq for Kept {}

impl Ord for Kept {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The positions and values of the `k` highest `scores`, highest first, the earlier
/// position first among equals: one pass with a heap of `k`.
fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut heap: BinaryHeap<Kept> = BinaryHeap::with_capacity(k + 1);
    for (i, &s) in scores.iter().enumerate() {
        if heap.len() < k {
            heap.push(Kept(s, i));
        } else if let Some(mut worst) = heap.peek_mut()
            && s.total_cmp(&worst.0) == Ordering::Greater
        {
            *worst = Kept(s, i);
        }
    }
    heap.into_sorted_vec()
        .into_iter()
        .map(|Kept(s, i)| (i, s))
        .collect()
}

/// Fuses ranked lists by reciprocal rank: each id scores the sum over the lists of
/// `1 / (RRF_K + rank)`; best first, ties by id, at most `k`.
pub fn fuse(lists: &[&[(i64, f64)]], k: usize) -> Vec<(i64, f64)> {
    let mut score: HashMap<i64, f64> = HashMap::new();
    for list in lists {
        for (rank, (id, _)) in list.iter().enumerate() {
            *score.entry(*id).or_default() += 1.0 / (RRF_K + rank as f64 + 1.0);
        }
    }
    let mut out: Vec<(i64, f64)> = score.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out.truncate(k);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &mut [f32]) {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
    }

    #[test]
    fn dense_search_ranks_by_cosine_like_the_exact_f32_product() {
        let dim = 64;
        let mut rng = 12345u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((rng >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let vecs: Vec<Vec<f32>> = (0..300)
            .map(|_| {
                let mut v: Vec<f32> = (0..dim).map(|_| next()).collect();
                unit(&mut v);
                v
            })
            .collect();
        let mut q8 = Vec::new();
        for v in &vecs {
            q8.extend(vector_q8(v).expect("q8"));
        }
        let table = DenseTable::new((100..400).collect(), q8, dim).expect("table");
        let query = vecs[42].clone();
        let hits = table.search(&query, 5).expect("search");
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0].0, 142);
        assert!((hits[0].1 - 1.0).abs() < 0.02, "{hits:?}");
        let mut exact: Vec<(i64, f32)> = vecs
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    100 + i as i64,
                    v.iter().zip(&query).map(|(a, b)| a * b).sum(),
                )
            })
            .collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (hit, ex) in hits.iter().zip(&exact) {
            assert!((hit.1 - f64::from(ex.1)).abs() < 0.02, "{hit:?} {ex:?}");
        }
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(table.search(&query[..32], 5).is_err());
    }

    #[test]
    fn the_top_k_are_the_highest_scores_in_order_with_ties_by_position() {
        let scores = [0.1, 0.9, -0.5, 0.9, 0.3, f32::NEG_INFINITY, 0.7];
        assert_eq!(top_k(&scores, 3), vec![(1, 0.9), (3, 0.9), (6, 0.7)]);
        assert_eq!(top_k(&scores, 1), vec![(1, 0.9)]);
        let all = top_k(&scores, 10);
        assert_eq!(all.len(), scores.len());
        assert_eq!(all.last(), Some(&(5, f32::NEG_INFINITY)));
        assert!(top_k(&scores, 0).is_empty());
    }

    #[test]
    fn dense_search_gives_the_same_hits_on_one_thread_and_on_several() {
        let dim = 64;
        let mut rng = 99u64;
        let mut vecs: Vec<f32> = (0..5000 * dim)
            .map(|_| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((rng >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        vecs.chunks_mut(dim).for_each(unit);
        let q8: Vec<u8> = vecs
            .chunks(dim)
            .flat_map(|v| vector_q8(v).expect("q8"))
            .collect();
        let table = DenseTable::new((0..5000).collect(), q8, dim).expect("table");
        let query = &vecs[1234 * dim..1235 * dim];
        crate::engine::set_compute_threads(1);
        let one = table.search(query, 20).expect("search");
        crate::engine::set_compute_threads(3);
        let three = table.search(query, 20).expect("search");
        crate::engine::set_compute_threads(1);
        assert_eq!(one, three);
        assert_eq!(one[0].0, 1234, "{one:?}");
    }

    #[test]
    fn a_table_whose_bytes_do_not_make_whole_vectors_is_refused() {
        assert!(DenseTable::new(vec![1, 2], vec![0; 34 * 3], 64).is_err());
        assert!(vector_q8(&[0.5; 40]).is_err());
        assert!(vector_q8(&[f32::NAN; 32]).is_err());
    }

    #[test]
    fn reciprocal_rank_fusion_rewards_agreement() {
        let dense = [(1, 0.9), (2, 0.8), (3, 0.7)];
        let keyword = [(3, 5.0), (4, 4.0), (1, 3.0)];
        let fused = fuse(&[&dense, &keyword], 10);
        assert_eq!(fused[0].0, 1, "{fused:?}");
        assert_eq!(fused[1].0, 3);
        assert_eq!(fused.len(), 4);
        let expect = 1.0 / 61.0 + 1.0 / 63.0;
        assert!((fused[0].1 - expect).abs() < 1e-12);
        assert_eq!(fuse(&[&dense, &keyword], 2).len(), 2);
    }

    #[test]
    fn a_query_becomes_quoted_words_without_fts_syntax_or_stop_words() {
        let q = |t: &str| fts_query(&query_words(t));
        assert_eq!(
            q("What is the NEAR(x) \"default\" setpoint? OR -port*"),
            "\"near\" OR \"x\" OR \"default\" OR \"setpoint\" OR \"port\""
        );
        assert_eq!(q("the of a"), "");
        assert_eq!(q(&"w ".repeat(100)), "\"w\"");
    }

    #[test]
    fn common_words_are_left_out_once_the_rarer_ones_fill_the_postings_budget() {
        let words = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
            pairs.iter().map(|(w, n)| (w.to_string(), *n)).collect()
        };
        let b = KEYWORD_POSTINGS;
        // A small index: every word it holds is read.
        assert_eq!(
            selective_words(words(&[("pump", 900), ("flow", 3), ("none", 0)]), 1000),
            ["flow", "pump"]
        );
        // A large one: rarest first while the budget lasts.
        assert_eq!(
            selective_words(
                words(&[
                    ("common", b),
                    ("rare", 10),
                    ("middling", b - 20),
                    ("odd", 5)
                ]),
                100 * b
            ),
            ["odd", "rare", "middling"]
        );
        // The rarest word is read even beyond the budget, unless BM25 gives it no weight.
        assert_eq!(
            selective_words(words(&[("a", 3 * b), ("b", 5 * b)]), 10 * b),
            ["a"]
        );
        assert!(selective_words(words(&[("a", 6 * b), ("b", 7 * b)]), 10 * b).is_empty());
    }
}
