//! The queue of deferred jobs: one JSON file (`deferred-queue.json` in the state folder,
//! beside the day ledger) holding each job's command line, its deadline, its submission
//! time, its state (queued, running, paused, done, failed) and the plan it was given. Every
//! change is a read-modify-write under an exclusive lock on `deferred-queue.lock` beside it
//! (so `thermo train --when auto` and the agent never lose each other's updates), written to
//! a temporary file, fsynced and renamed over the old one: a `kill -9` at any point leaves
//! the old queue or the new one. A file that is too large or does not parse is an error that
//! names it; it is never replaced or emptied, so nothing in it is lost.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::train::atomic::write_atomically;

/// The queue's file name in the state folder (`$THERMO_HOME`).
pub const QUEUE_FILE: &str = "deferred-queue.json";

/// The record of a deferred training job in its output folder: the job as the queue holds
/// it (its plan, the run-now counterfactual, the saving, its state and starts).
pub const DEFERRED_RECORD: &str = "deferred.json";

/// Largest queue file read.
pub const MAX_QUEUE_BYTES: u64 = 1 << 20;

/// Most jobs the queue holds; when full, the oldest finished jobs make room, and a queue of
/// unfinished jobs only refuses a new one.
pub const MAX_JOBS: usize = 200;

/// Longest command line a job may hold, in arguments.
pub const MAX_ARGS: usize = 256;

/// Why the queue could not be read or written.
#[derive(Debug, Error)]
pub enum QueueError {
    /// Reading, locking or writing the file failed.
    #[error("deferred queue {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The file is larger than [`MAX_QUEUE_BYTES`].
    #[error(
        "deferred queue {path}: {bytes} bytes, more than the {MAX_QUEUE_BYTES} a queue may take; \
         it was left as it is"
    )]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        bytes: u64,
    },
    /// The file is not a queue.
    #[error("deferred queue {path} is not valid ({message}); it was left as it is")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The job cannot be queued beside the jobs already there.
    #[error("deferred queue {path}: {message}")]
    Refused {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The queue holds [`MAX_JOBS`] unfinished jobs.
    #[error("deferred queue {path} holds {MAX_JOBS} unfinished jobs; no more are taken")]
    Full {
        /// The file.
        path: String,
    },
}

/// What a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// `thermo train`: resumable at any step from its checkpoint.
    Train,
    /// `thermo index add`: a stopped run keeps what it committed, the next goes on.
    Index,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Submitted, never started.
    Queued,
    /// Its process runs (its id is in [`Job::pid`]).
    Running,
    /// Started and stopped at a step boundary; the next start resumes it.
    Paused,
    /// Finished.
    Done,
    /// Its process failed.
    Failed,
}

impl JobState {
    /// True once the job will not run again.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }
}

/// The plan a job was given and its counterfactual, as persisted and logged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// When the plan was made, Unix seconds.
    pub at_s: i64,
    /// Start of the first planned window, Unix seconds.
    pub first_start_s: Option<i64>,
    /// Number of planned windows.
    pub windows: usize,
    /// Expected operational g CO2e of the plan.
    pub g_co2e: f64,
    /// Expected equivalent wear hours of the plan.
    pub wear_hours: f64,
    /// Expected finish of the plan, Unix seconds.
    pub finish_s: Option<i64>,
    /// Run now: g CO2e.
    pub now_g_co2e: f64,
    /// Run now: wear hours.
    pub now_wear_hours: f64,
    /// Run now: finish, Unix seconds.
    pub now_finish_s: Option<i64>,
    /// Run now's g CO2e plus wear in g, less the plan's (the planner's objective).
    pub saved_g_co2e: f64,
    /// True when the job cannot finish by its deadline (it then runs at once).
    pub misses_deadline: bool,
}

/// One deferred job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id (`<kind>-<submit time>-<n>`).
    pub id: String,
    /// What it runs.
    pub kind: JobKind,
    /// The `thermo` arguments that run it (the subcommand first, without `--when` and its
    /// planning flags).
    pub argv: Vec<String>,
    /// Working folder the arguments' relative paths are relative to.
    pub cwd: PathBuf,
    /// The training output folder (for [`JobKind::Train`]), as given.
    pub out: Option<PathBuf>,
    /// Submission time, Unix seconds.
    pub submit_s: i64,
    /// Deadline, Unix seconds.
    pub deadline_s: i64,
    /// Units of work in the whole job (training steps; 1 for an indexing run).
    pub steps: u64,
    /// The heat model it is planned with.
    pub model: super::rate::HeatModel,
    /// Where it stands.
    pub state: JobState,
    /// Its process while running.
    pub pid: Option<u32>,
    /// Processes started for it so far.
    pub starts: u32,
    /// The plan it was given when first planned.
    pub decision: Option<Decision>,
    /// The last thing worth saying about it (why it failed, that it runs late).
    pub note: Option<String>,
    /// When it finished or failed, Unix seconds.
    pub ended_s: Option<i64>,
}

/// The queue file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    /// Jobs in submission order.
    pub jobs: Vec<Job>,
}

fn io(path: &Path, what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Io {
        path: path.display().to_string(),
        message: format!("{what}: {e}"),
    }
}

impl Queue {
    /// Parses a queue file's bytes; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Queue, QueueError> {
        let invalid = |message: String| QueueError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let q: Queue = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        if q.jobs.len() > MAX_JOBS {
            return Err(invalid(format!(
                "{} jobs, more than {MAX_JOBS}",
                q.jobs.len()
            )));
        }
        if let Some(j) = q.jobs.iter().find(|j| j.argv.len() > MAX_ARGS) {
            return Err(invalid(format!(
                "job {} has {} arguments, more than {MAX_ARGS}",
                j.id,
                j.argv.len()
            )));
        }
        Ok(q)
    }

    /// Reads the queue at `path` (empty when the file does not exist), refusing a file over
    /// [`MAX_QUEUE_BYTES`] before reading it.
    pub fn load(path: &Path) -> Result<Queue, QueueError> {
        use std::io::Read as _;
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Queue::default()),
            Err(e) => return Err(io(path, "opening", e)),
        };
        let bytes = file.metadata().map_err(|e| io(path, "reading", e))?.len();
        if bytes > MAX_QUEUE_BYTES {
            return Err(QueueError::TooLarge {
                path: path.display().to_string(),
                bytes,
            });
        }
        let mut text = vec![];
        file.take(MAX_QUEUE_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| io(path, "reading", e))?;
        if text.len() as u64 > MAX_QUEUE_BYTES {
            return Err(QueueError::TooLarge {
                path: path.display().to_string(),
                bytes: text.len() as u64,
            });
        }
        Queue::parse(&text, path)
    }

    /// Writes the queue to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), QueueError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| io(path, "encoding", e))?;
        if bytes.len() as u64 > MAX_QUEUE_BYTES {
            return Err(QueueError::TooLarge {
                path: path.display().to_string(),
                bytes: bytes.len() as u64,
            });
        }
        write_atomically(path, &bytes).map_err(|e| io(path, "writing", format!("{e:#}")))
    }

    /// Adds `job`, dropping the oldest finished jobs while the queue is full; refuses it when
    /// every job is unfinished. `path` names the queue in the error.
    pub fn push(&mut self, job: Job, path: &Path) -> Result<(), QueueError> {
        while self.jobs.len() >= MAX_JOBS {
            match self.jobs.iter().position(|j| j.state.is_final()) {
                Some(i) => {
                    self.jobs.remove(i);
                }
                None => {
                    return Err(QueueError::Full {
                        path: path.display().to_string(),
                    });
                }
            }
        }
        self.jobs.push(job);
        Ok(())
    }

    /// A fresh id for a job of `kind` submitted at `submit_s`.
    pub fn new_id(&self, kind: JobKind, submit_s: i64) -> String {
        let prefix = match kind {
            JobKind::Train => "train",
            JobKind::Index => "index",
        };
        (1..)
            .map(|n| format!("{prefix}-{submit_s}-{n}"))
            .find(|id| self.jobs.iter().all(|j| &j.id != id))
            .unwrap_or_default()
    }

    /// The job with `id`.
    pub fn get(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }
}

/// Reads the queue at `path` under its lock, lets `change` alter it, and writes it back
/// when `change` returns `Ok(true)`. The lock is held until the write is done.
pub fn update<T>(
    path: &Path,
    change: impl FnOnce(&mut Queue) -> Result<(T, bool), QueueError>,
) -> Result<T, QueueError> {
    let _lock = lock(path)?;
    let mut q = Queue::load(path)?;
    let (out, write) = change(&mut q)?;
    if write {
        q.save(path)?;
    }
    Ok(out)
}

/// The exclusive lock on `<queue>.lock`, released when dropped.
fn lock(path: &Path) -> Result<std::fs::File, QueueError> {
    let mut name = path.as_os_str().to_os_string();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io(path, "creating its folder", e))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io(&lock_path, "opening the lock", e))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io(&lock_path, "locking", e))?;
    Ok(f)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::deferred::rate::HeatModel;

    pub(crate) fn job(id: &str, state: JobState) -> Job {
        Job {
            id: id.into(),
            kind: JobKind::Train,
            argv: vec!["train".into(), "--steps".into(), "8".into()],
            cwd: PathBuf::from("/work"),
            out: Some(PathBuf::from("adapter")),
            submit_s: 1000,
            deadline_s: 1000 + 3600 * 10,
            steps: 8,
            model: HeatModel {
                setpoint_c: 70.0,
                step_s: 2.0,
                power_w: 4.0,
                idle_rise_c: 10.0,
                reference_c: 55.0,
                activation_ev: 0.7,
            },
            state,
            pid: None,
            starts: 0,
            decision: None,
            note: None,
            ended_s: None,
        }
    }

    #[test]
    fn a_queue_round_trips_through_its_file_and_leaves_no_temp_behind() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(QUEUE_FILE);
        assert_eq!(Queue::load(&path)?, Queue::default());
        update(&path, |q| {
            q.push(job("a", JobState::Queued), &path)?;
            q.push(job("b", JobState::Paused), &path)?;
            Ok(((), true))
        })?;
        let q = Queue::load(&path)?;
        assert_eq!(q.jobs.len(), 2);
        assert_eq!(q.get("b").map(|j| j.state), Some(JobState::Paused));
        assert_eq!(q.jobs[0], job("a", JobState::Queued));
        let mut names: Vec<String> = std::fs::read_dir(dir.path())?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        assert_eq!(
            names,
            [QUEUE_FILE.to_string(), format!("{QUEUE_FILE}.lock")]
        );
        Ok(())
    }

    #[test]
    fn a_corrupt_queue_is_an_error_naming_the_file_and_is_left_untouched() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(QUEUE_FILE);
        let text = br#"{"jobs": [{"id": "a", "kind": "train""#;
        std::fs::write(&path, text)?;
        let e = update(&path, |q| {
            q.push(job("new", JobState::Queued), &path)?;
            Ok(((), true))
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("not valid"), "{e}");
        assert_eq!(std::fs::read(&path)?, text);
        Ok(())
    }

    #[test]
    fn an_oversized_queue_is_refused_before_it_is_read_and_left_untouched() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(QUEUE_FILE);
        let big = vec![b' '; MAX_QUEUE_BYTES as usize + 1];
        std::fs::write(&path, &big)?;
        let e = Queue::load(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("more than the") && e.contains(QUEUE_FILE), "{e}");
        assert_eq!(std::fs::metadata(&path)?.len(), big.len() as u64);
        Ok(())
    }

    #[test]
    fn a_full_queue_drops_the_oldest_finished_jobs_then_refuses() -> anyhow::Result<()> {
        let path = Path::new("q.json");
        let mut q = Queue::default();
        for i in 0..MAX_JOBS {
            let state = if i < 2 {
                JobState::Done
            } else {
                JobState::Queued
            };
            q.push(job(&format!("j{i}"), state), path)?;
        }
        q.push(job("x", JobState::Queued), path)?;
        assert_eq!(q.jobs.len(), MAX_JOBS);
        assert!(q.get("j0").is_none() && q.get("j1").is_some());
        q.push(job("y", JobState::Queued), path)?;
        assert!(q.get("j1").is_none());
        assert!(matches!(
            q.push(job("z", JobState::Queued), path),
            Err(QueueError::Full { .. })
        ));
        // A file with more jobs than the bound is refused as invalid.
        q.jobs.push(job("over", JobState::Queued));
        let bytes = serde_json::to_vec(&q)?;
        assert!(matches!(
            Queue::parse(&bytes, path),
            Err(QueueError::Invalid { .. })
        ));
        Ok(())
    }

    #[test]
    fn ids_are_unique_per_kind_and_time() {
        let mut q = Queue::default();
        let a = q.new_id(JobKind::Train, 5);
        q.jobs.push(job(&a, JobState::Queued));
        assert_eq!(a, "train-5-1");
        assert_eq!(q.new_id(JobKind::Train, 5), "train-5-2");
        assert_eq!(q.new_id(JobKind::Index, 5), "index-5-1");
    }
}
