//! `thermo index add` as a user runs it, on the harness's tiny encoder folder (so no model is
//! fetched): killed with SIGKILL part way, it leaves every committed document whole and the
//! next run goes on from there; a 1 GiB file, an unreadable file, a pipe, a binary file and
//! invalid UTF-8 each get their reason, in a process whose address space is capped well below
//! what reading the large file would take.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e_tests::{TINY_ENCODER_WORDS, thermo, tiny_encoder};
use rusqlite::{Connection, OpenFlags};

/// Files of the folder the kill test indexes: enough that the run is far from done when the
/// first commit shows.
const FILES: usize = 1500;

/// Bytes of one Q8_0 vector of the tiny encoder (32 values: a 2-byte scale and 32 bytes).
const TINY_VECTOR_BYTES: i64 = 34;

/// `thermo index --index INDEX add` with the tiny encoder and no governor, as a command; its
/// thermo home (and so its day ledger) is the index's folder.
fn add_cmd(index: &Path, args: &[&str]) -> Result<Command> {
    let mut cmd = Command::new(thermo()?);
    cmd.env("THERMO_HOME", index.parent().context("index folder")?)
        .arg("index")
        .arg("--index")
        .arg(index)
        .arg("add")
        .args(args)
        .arg("--encoder")
        .arg(tiny_encoder())
        .args(["--no-governor", "--threads", "1", "--json"]);
    Ok(cmd)
}

/// Runs `cmd` to its end and parses the JSON report it prints.
fn report(mut cmd: Command) -> Result<serde_json::Value> {
    let out = cmd.stderr(Stdio::piped()).output()?;
    ensure!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).with_context(|| format!("the report {line:?}"))
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(u64::MAX)
}

/// `FILES` distinct text files of three paragraphs each.
fn corpus(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for f in 0..FILES {
        let paras: Vec<String> = (0..3)
            .map(|p| {
                let words: Vec<&str> = (0..60)
                    .map(|i| {
                        TINY_ENCODER_WORDS[(f * 7 + p * 13 + i * i) % TINY_ENCODER_WORDS.len()]
                    })
                    .collect();
                format!("File {f} paragraph {p}: {}.", words.join(" "))
            })
            .collect();
        std::fs::write(dir.join(format!("note-{f:05}.txt")), paras.join("\n\n"))?;
    }
    Ok(())
}

/// Each document's path with its chunks' (ordinal, sha256, text, vector).
type Rows = BTreeMap<String, Vec<(i64, Vec<u8>, String, Vec<u8>)>>;

fn rows(conn: &Connection) -> Result<Rows> {
    let mut q = conn.prepare(
        "SELECT d.path, c.ordinal, c.sha256, c.text, v.q8 FROM documents d
         JOIN chunks c ON c.doc_id = d.id JOIN vectors v ON v.chunk_id = c.id
         ORDER BY d.path, c.ordinal",
    )?;
    let mut out = Rows::new();
    let mut r = q.query([])?;
    while let Some(row) = r.next()? {
        out.entry(row.get(0)?).or_default().push((
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
        ));
    }
    Ok(out)
}

fn scalar(conn: &Connection, sql: &str) -> Result<i64> {
    Ok(conn.query_row(sql, [], |r| r.get(0))?)
}

/// Documents committed so far, read the way another process would; `None` before the file
/// and its tables exist.
fn committed_documents(index: &Path) -> Option<i64> {
    let conn = Connection::open_with_flags(index, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    conn.query_row("SELECT count(*) FROM documents", [], |r| r.get(0))
        .ok()
}

/// Every chunk has its vector of the right size and its keyword rows, every vector and
/// document its chunk, and FTS5's own check of the keyword index against the chunks passes.
fn check_whole(conn: &Connection) -> Result<()> {
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    ensure!(check == "ok", "integrity_check: {check}");
    for (what, sql) in [
        (
            "chunks without a vector",
            "SELECT count(*) FROM chunks c LEFT JOIN vectors v ON v.chunk_id = c.id
             WHERE v.chunk_id IS NULL",
        ),
        (
            "vectors without a chunk",
            "SELECT count(*) FROM vectors v LEFT JOIN chunks c ON c.id = v.chunk_id
             WHERE c.id IS NULL",
        ),
        (
            "chunks without a document",
            "SELECT count(*) FROM chunks c LEFT JOIN documents d ON d.id = c.doc_id
             WHERE d.id IS NULL",
        ),
        (
            "documents without chunks",
            "SELECT count(*) FROM documents d WHERE NOT EXISTS
             (SELECT 1 FROM chunks c WHERE c.doc_id = d.id)",
        ),
        (
            "vectors of the wrong size",
            &format!("SELECT count(*) FROM vectors WHERE length(q8) != {TINY_VECTOR_BYTES}"),
        ),
    ] {
        ensure!(scalar(conn, sql)? == 0, "{what}");
    }
    ensure!(
        scalar(conn, "SELECT count(*) FROM chunks_fts_docsize")?
            == scalar(conn, "SELECT count(*) FROM chunks")?,
        "keyword rows and chunks differ"
    );
    conn.execute(
        "INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)",
        [],
    )
    .context("FTS5 integrity-check of the keyword index against the chunks")?;
    Ok(())
}

#[test]
fn a_kill_9_during_add_keeps_committed_documents_whole_and_the_next_add_goes_on() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let docs = tmp.path().join("docs");
    corpus(&docs)?;
    let docs_arg = docs.to_str().context("temp path")?;

    // The reference: one run from start to end.
    let clean_index = tmp.path().join("clean.sqlite");
    let clean = report(add_cmd(&clean_index, &[docs_arg])?)?;
    ensure!(count(&clean, "indexed") == FILES as u64, "{clean}");
    let clean_rows = rows(&Connection::open(&clean_index)?)?;

    // The same run, killed once the first documents are committed.
    let index = tmp.path().join("killed.sqlite");
    let mut child = add_cmd(&index, &[docs_arg])?
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if committed_documents(&index).is_some_and(|n| n > 0) {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("add ended ({status}) before a document was seen committed");
        }
        ensure!(Instant::now() < deadline, "no document committed in 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill()?;
    let status = child.wait()?;
    ensure!(!status.success(), "add finished before the kill: {status}");

    let conn = Connection::open(&index)?;
    check_whole(&conn)?;
    let committed = rows(&conn)?;
    ensure!(
        !committed.is_empty() && committed.len() < FILES,
        "{} of {FILES} documents committed: the kill did not land part way",
        committed.len()
    );
    for (path, chunks) in &committed {
        ensure!(
            clean_rows.get(path) == Some(chunks),
            "{path} is not what a clean run commits"
        );
    }
    let committed_chunks: usize = committed.values().map(Vec::len).sum();
    drop(conn);

    // The next run reuses what was committed and indexes the rest.
    let again = report(add_cmd(&index, &[docs_arg])?)?;
    let n = committed.len() as u64;
    ensure!(count(&again, "files") == FILES as u64, "{again}");
    ensure!(count(&again, "unchanged") == n, "{again}");
    ensure!(count(&again, "indexed") == FILES as u64 - n, "{again}");
    ensure!(
        count(&again, "embedded_chunks") + committed_chunks as u64
            == count(&clean, "embedded_chunks"),
        "chunks embedded again: {again} after {committed_chunks} committed, clean {clean}"
    );
    ensure!(
        again["skipped"].as_array().is_some_and(Vec::is_empty),
        "{again}"
    );
    let conn = Connection::open(&index)?;
    check_whole(&conn)?;
    ensure!(
        rows(&conn)? == clean_rows,
        "the resumed index differs from a clean run's"
    );

    // The day ledger holds the two runs that ended, not the killed one.
    let ledger: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        tmp.path().join("eco-ledger.json"),
    )?)?;
    let days = ledger["days"].as_object().context("ledger days")?;
    let runs: u64 = days.values().map(|d| count(d, "indexing_runs")).sum();
    let chunks: u64 = days.values().map(|d| count(d, "indexing_chunks")).sum();
    ensure!(runs == 2, "{runs} indexing runs in the ledger: {ledger}");
    ensure!(
        chunks == count(&clean, "embedded_chunks") + count(&again, "embedded_chunks"),
        "{chunks} chunks in the ledger: {ledger}"
    );
    Ok(())
}

/// Address space the odd-files run may take (KiB): well below what reading the 1 GiB file
/// would add to the process, and well above what indexing takes without reading it.
const ADDRESS_SPACE_KIB: u64 = 1 << 20;

/// `cmd` run with its address space capped at [`ADDRESS_SPACE_KIB`]: an allocation for the
/// whole 1 GiB file would fail and abort the process.
fn capped(cmd: &Command) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(cmd.get_program())
        .args(cmd.get_args());
    sh
}

/// Expected reason fragment per file name, `None` for a file that is indexed.
fn odd_files(dir: &Path) -> Result<Vec<(&'static str, Option<&'static str>)>> {
    use std::os::unix::fs::{PermissionsExt, symlink};
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("good.txt"),
        "The pump runs at 40 litres per minute.",
    )?;
    std::fs::File::create(dir.join("huge.txt"))?.set_len(1 << 30)?;
    std::fs::write(dir.join("binary.txt"), b"text\0more text")?;
    std::fs::write(dir.join("latin1.txt"), b"caf\xe9 au lait")?;
    symlink(dir.join("no-such-target.txt"), dir.join("dangling.txt"))?;
    let fifo = Command::new("mkfifo").arg(dir.join("pipe.txt")).status()?;
    ensure!(fifo.success(), "mkfifo failed");
    let locked = dir.join("locked.txt");
    std::fs::write(&locked, "The fan keeps the chip cool.")?;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000))?;
    // Root (and CAP_DAC_OVERRIDE) reads a mode-000 file, so there it is a document; the
    // dangling symlink is the unreadable file every user has.
    let locked_reason = match std::fs::read(&locked) {
        Ok(_) => None,
        Err(_) => Some("unreadable: Permission denied"),
    };
    Ok(vec![
        ("good.txt", None),
        (
            "huge.txt",
            Some("1073741824 bytes, above the 33554432-byte limit"),
        ),
        ("binary.txt", Some("binary (a NUL byte at offset 4)")),
        (
            "latin1.txt",
            Some("not UTF-8 text (invalid bytes at offset 3)"),
        ),
        (
            "dangling.txt",
            Some("unreadable: No such file or directory"),
        ),
        ("pipe.txt", Some("not a regular file")),
        ("locked.txt", locked_reason),
    ])
}

fn skipped(report: &serde_json::Value) -> BTreeMap<String, String> {
    report["skipped"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e[0].as_str()?.to_string(), e[1].as_str()?.to_string())))
        .collect()
}

fn check_reasons(
    dir: &Path,
    expected: &[(&str, Option<&str>)],
    got: &BTreeMap<String, String>,
) -> Result<()> {
    for (name, reason) in expected {
        let path = dir.join(name).display().to_string();
        match (reason, got.get(&path)) {
            (Some(want), Some(why)) => ensure!(why.contains(want), "{name}: {why:?}, not {want:?}"),
            (None, None) => {}
            (want, why) => bail!("{name}: skipped {why:?}, expected {want:?}"),
        }
    }
    Ok(())
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn huge_unreadable_binary_and_invalid_utf8_files_get_their_reasons_in_bounded_memory() -> Result<()>
{
    let tmp = tempfile::tempdir()?;
    let dir: PathBuf = std::fs::canonicalize(tmp.path())?.join("odd");
    let mut expected = odd_files(&dir)?;
    let dir_arg = dir.to_str().context("temp path")?;
    let index = tmp.path().join("i.sqlite");

    let first = report(capped(&add_cmd(&index, &[dir_arg])?))?;
    let indexed = expected.iter().filter(|(_, r)| r.is_none()).count() as u64;
    ensure!(count(&first, "indexed") == indexed, "{first}");
    check_reasons(&dir, &expected, &skipped(&first))?;

    // `status --skipped` gives the same reasons from the index.
    let status = Command::new(thermo()?)
        .arg("index")
        .arg("--index")
        .arg(&index)
        .args(["status", "--skipped"])
        .output()?;
    ensure!(status.status.success(), "status failed: {status:?}");
    let listed: BTreeMap<String, String> = stdout(&status)
        .lines()
        .filter_map(|l| l.strip_prefix("skipped "))
        .filter_map(|l| l.split_once(": "))
        .map(|(p, why)| (p.to_string(), why.to_string()))
        .collect();
    check_reasons(&dir, &expected, &listed)?;

    // With a limit above its size the 1 GiB file (sparse, so all NUL bytes) is refused as
    // binary from its head, still within the capped address space.
    let raised = report(capped(&add_cmd(
        &index,
        &[dir_arg, "--max-file-mb", "2048"],
    )?))?;
    expected[1].1 = Some("binary (a NUL byte at offset 0)");
    check_reasons(&dir, &expected, &skipped(&raised))?;
    Ok(())
}
