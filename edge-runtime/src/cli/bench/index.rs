//! `thermo bench index`: a synthetic document index of `--chunks` chunks (random unit vectors
//! in Q8_0, and text whose words follow Zipf's law over a vocabulary whose most frequent words
//! are the search's stop words, as in English prose) built through the store's own insert
//! path in one transaction, then dense, keyword and hybrid searches timed (median and 95th
//! percentile) for queries of words drawn from the same law, and the vectors table's bytes on
//! disk against the raw vector bytes, the file's size and the bytes held in memory. Embedding
//! the query is not timed: `thermo index search` reports that apart.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::process::{peak_rss_bytes, reset_peak_rss};
use edge_runtime::engine::set_compute_threads;
use edge_runtime::index::chunk::Chunk;
use edge_runtime::index::search::{STOP_WORDS, vector_q8};
use edge_runtime::index::store::NewDoc;
use edge_runtime::index::{EncoderId, Index, Mode, Store};

/// Chunks per synthetic document.
const CHUNKS_PER_DOC: usize = 10;
/// Distinct words of the synthetic text.
const VOCABULARY: usize = 20_000;
/// Words per chunk (about 900 bytes, the indexer's largest chunk).
const WORDS_PER_CHUNK: usize = 130;
/// Words per keyword query.
const QUERY_WORDS: usize = 4;

/// Flags of `thermo bench index`.
#[derive(Debug, Args)]
pub struct IndexBenchArgs {
    /// Chunks in the synthetic index.
    #[arg(long, default_value_t = 100_000)]
    pub chunks: usize,
    /// Vector width (a multiple of 32; all-MiniLM-L6-v2's is 384).
    #[arg(long, default_value_t = 384)]
    pub dim: usize,
    /// Timed queries per search mode.
    #[arg(long, default_value_t = 50)]
    pub queries: usize,
    /// Chunks each search returns.
    #[arg(short, default_value_t = 5)]
    pub k: usize,
    /// Compute threads the dense search is split over.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seed of the synthetic vectors, texts and queries.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the synthetic index to this new file and keep it (default: a file in the temp
    /// folder, removed after).
    #[arg(long, value_name = "FILE")]
    pub index: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Median and 95th percentile of one mode's search times.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Search mode.
    pub mode: Mode,
    /// Median, milliseconds.
    pub median_ms: f64,
    /// 95th percentile, milliseconds.
    pub p95_ms: f64,
}

/// What `thermo bench index` measured.
#[derive(Debug, Serialize)]
pub struct IndexBenchResult {
    /// Chunks indexed.
    pub chunks: u64,
    /// Vector width.
    pub dim: usize,
    /// Compute threads of the dense search.
    pub threads: usize,
    /// Seconds to build the synthetic index (one transaction).
    pub build_s: f64,
    /// Seconds to open it for searching (the vectors read into memory).
    pub open_s: f64,
    /// Search times per mode.
    pub search: Vec<Timing>,
    /// Bytes of the vectors table's pages (dbstat).
    pub vector_table_bytes: u64,
    /// Bytes of the vectors themselves.
    pub raw_vector_bytes: u64,
    /// `vector_table_bytes / raw_vector_bytes`.
    pub vector_overhead: f64,
    /// Bytes of the database file and its WAL.
    pub file_bytes: u64,
    /// Bytes the open index holds in memory for dense search.
    pub resident_bytes: u64,
    /// Peak resident memory of the process while the index was opened and searched (bytes).
    pub search_peak_rss_bytes: Option<u64>,
}

/// Runs the benchmark and prints its result.
pub fn bench(args: &IndexBenchArgs) -> Result<()> {
    ensure!(
        args.dim > 0 && args.dim.is_multiple_of(32),
        "--dim must be a positive multiple of 32"
    );
    ensure!(
        args.chunks > 0 && args.queries > 0,
        "--chunks and --queries must be above 0"
    );
    set_compute_threads(args.threads.max(1));
    let (path, keep) = match &args.index {
        Some(p) if p.exists() => bail!("{} exists: name a new file", p.display()),
        Some(p) => (p.clone(), true),
        None => (
            std::env::temp_dir().join(format!("thermo-bench-index-{}.sqlite", std::process::id())),
            false,
        ),
    };
    let result = run(args, &path);
    if !keep {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
    let r = result?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print_table(&r);
    }
    Ok(())
}

fn run(args: &IndexBenchArgs, path: &Path) -> Result<IndexBenchResult> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let words = vocabulary(&mut rng);
    let zipf = Zipf::new(VOCABULARY);
    let started = Instant::now();
    build(args, path, &words, &zipf, &mut rng)
        .with_context(|| format!("building the synthetic index {}", path.display()))?;
    let build_s = started.elapsed().as_secs_f64();
    log::info!("built {} chunks in {build_s:.1} s", args.chunks);

    reset_peak_rss();
    let started = Instant::now();
    let index = Index::open(path)?;
    let open_s = started.elapsed().as_secs_f64();
    let queries: Vec<(String, Vec<f32>)> = (0..args.queries)
        .map(|_| {
            let mut text: Vec<&str> = Vec::with_capacity(QUERY_WORDS);
            while text.len() < QUERY_WORDS {
                let rank = zipf.sample(&mut rng);
                if rank >= STOP_WORDS.len() && !text.contains(&words[rank].as_str()) {
                    text.push(&words[rank]);
                }
            }
            (text.join(" "), unit_vector(&mut rng, args.dim))
        })
        .collect();
    let mut search = Vec::new();
    for mode in [Mode::Dense, Mode::Keyword, Mode::Hybrid] {
        // One untimed pass warms the page cache and the statement cache.
        index.search(&queries[0].0, Some(&queries[0].1), mode, args.k)?;
        let mut ms = Vec::with_capacity(queries.len());
        for (text, vector) in &queries {
            let t = Instant::now();
            let hits = index.search(text, Some(vector), mode, args.k)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            ensure!(
                !hits.is_empty() || mode == Mode::Keyword,
                "a {} search found nothing",
                mode.name()
            );
        }
        search.push(Timing {
            mode,
            median_ms: percentile(&mut ms, 0.5),
            p95_ms: percentile(&mut ms, 0.95),
        });
    }
    let s = index.store().status()?;
    Ok(IndexBenchResult {
        chunks: s.chunks,
        dim: args.dim,
        threads: args.threads.max(1),
        build_s,
        open_s,
        search,
        vector_table_bytes: s.vector_table_bytes,
        raw_vector_bytes: s.raw_vector_bytes,
        vector_overhead: s.vector_table_bytes as f64 / s.raw_vector_bytes.max(1) as f64,
        file_bytes: s.disk_bytes,
        resident_bytes: index.resident_bytes() as u64,
        search_peak_rss_bytes: peak_rss_bytes(),
    })
}

/// Writes `args.chunks` chunks in documents of [`CHUNKS_PER_DOC`], all in one transaction.
fn build(
    args: &IndexBenchArgs,
    path: &Path,
    words: &[String],
    zipf: &Zipf,
    rng: &mut StdRng,
) -> Result<()> {
    let encoder = EncoderId {
        name: "synthetic".into(),
        dim: args.dim,
    };
    let mut store = Store::open(path, &encoder)?;
    let paths: Vec<String> = (0..args.chunks.div_ceil(CHUNKS_PER_DOC))
        .map(|d| format!("/bench/doc-{d:06}.txt"))
        .collect();
    let mut docs = Vec::with_capacity(paths.len());
    let mut left = args.chunks;
    for (d, path) in paths.iter().enumerate() {
        let n = left.min(CHUNKS_PER_DOC);
        left -= n;
        let mut chunks = Vec::with_capacity(n);
        for i in 0..n {
            let text = sentence(rng, words, zipf, WORDS_PER_CHUNK);
            let line = (i * 8 + 1) as u32;
            let hash = tag((d * CHUNKS_PER_DOC + i) as u64);
            let q8 = vector_q8(&unit_vector(rng, args.dim))?;
            let chunk = Chunk {
                line_start: line,
                line_end: line + 6,
                text,
            };
            chunks.push((chunk, hash, q8));
        }
        docs.push(NewDoc {
            path,
            sha256: tag(d as u64),
            bytes: chunks.iter().map(|c| c.0.text.len() as u64 + 1).sum(),
            mtime_ns: 0,
            kind: "text",
            chunks,
        });
    }
    store.replace_all(&docs)?;
    Ok(())
}

/// A distinct 32-byte tag standing for a content hash.
fn tag(n: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(&n.to_le_bytes());
    h
}

/// [`VOCABULARY`] distinct words by rank: the stop words first, then pronounceable words of
/// three to five syllables.
fn vocabulary(rng: &mut StdRng) -> Vec<String> {
    const SYLLABLES: [&str; 24] = [
        "ka", "to", "ri", "men", "sa", "lo", "vi", "pun", "de", "mar", "os", "ti", "ber", "na",
        "gu", "fel", "po", "ra", "shi", "el", "tor", "qua", "ni", "bo",
    ];
    let mut out: Vec<String> = STOP_WORDS.iter().map(|w| w.to_string()).collect();
    let mut seen: std::collections::HashSet<String> = out.iter().cloned().collect();
    while out.len() < VOCABULARY {
        let n = rng.random_range(3..=5);
        let w: String = (0..n)
            .map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())])
            .collect();
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

/// Word ranks drawn with probability proportional to `1 / rank` (Zipf's law of prose).
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Zipf {
        let mut sum = 0.0;
        let cumulative = (1..=n)
            .map(|r| {
                sum += 1.0 / r as f64;
                sum
            })
            .collect();
        Zipf { cumulative }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.random::<f64>() * total;
        self.cumulative
            .partition_point(|&c| c < x)
            .min(self.cumulative.len() - 1)
    }
}

/// `n` words in sentences of eight to twenty words.
fn sentence(rng: &mut StdRng, words: &[String], zipf: &Zipf, n: usize) -> String {
    let mut out = String::with_capacity(n * 8);
    let mut left_in_sentence = 0;
    for i in 0..n {
        if left_in_sentence == 0 {
            if i > 0 {
                out.push_str(". ");
            }
            left_in_sentence = rng.random_range(8..=20);
        } else {
            out.push(' ');
        }
        out.push_str(&words[zipf.sample(rng)]);
        left_in_sentence -= 1;
    }
    out.push('.');
    out
}

/// A random unit vector of `dim` values (normal coordinates, scaled).
fn unit_vector(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            // Box-Muller: a normal value from two uniform ones.
            let (u1, u2) = (rng.random::<f64>().max(1e-12), rng.random::<f64>());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// The `q` quantile of `values` (nearest rank).
fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len().max(1));
    values.get(rank - 1).copied().unwrap_or(f64::NAN)
}

fn print_table(r: &IndexBenchResult) {
    println!(
        "{} chunks of {} dimensions: built in {:.1} s, opened in {:.2} s; dense search on {} \
         threads",
        r.chunks, r.dim, r.build_s, r.open_s, r.threads
    );
    println!("| mode | median ms | p95 ms |\n| --- | --- | --- |");
    for t in &r.search {
        println!(
            "| {} | {:.2} | {:.2} |",
            t.mode.name(),
            t.median_ms,
            t.p95_ms
        );
    }
    println!(
        "vectors table {} bytes for {} bytes of vectors ({:.3}x); file {} bytes; {} bytes \
         resident for dense search; peak RSS while searching {}",
        r.vector_table_bytes,
        r.raw_vector_bytes,
        r.vector_overhead,
        r.file_bytes,
        r.resident_bytes,
        r.search_peak_rss_bytes
            .map_or_else(|| "unknown".into(), |b| format!("{b} bytes"))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut v: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.5), 10.0);
        assert_eq!(percentile(&mut v, 0.95), 19.0);
        assert_eq!(percentile(&mut [3.0], 0.95), 3.0);
    }

    #[test]
    fn a_small_synthetic_index_is_searched_in_every_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = IndexBenchArgs {
            chunks: 45,
            dim: 64,
            queries: 3,
            k: 5,
            threads: 1,
            seed: 3,
            index: None,
            json: true,
        };
        let r = run(&args, &dir.path().join("b.sqlite")).expect("bench");
        assert_eq!(r.chunks, 45);
        assert_eq!(r.raw_vector_bytes, 45 * 2 * 34);
        assert!(r.vector_table_bytes >= r.raw_vector_bytes, "{r:?}");
        assert_eq!(r.search.len(), 3);
        assert!(r.search.iter().all(|t| t.p95_ms >= t.median_ms), "{r:?}");
    }

    #[test]
    fn word_ranks_follow_zipf() {
        let z = Zipf::new(100);
        let mut rng = StdRng::seed_from_u64(9);
        let mut counts = [0usize; 100];
        for _ in 0..20_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        // Rank 1 is drawn about twice as often as rank 2 and ten times as often as rank 10.
        let ratio = counts[0] as f64 / counts[9] as f64;
        assert!((7.0..14.0).contains(&ratio), "{ratio} {counts:?}");
        assert!(counts[0] > counts[1] && counts[1] > counts[4]);
    }
}
