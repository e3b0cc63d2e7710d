//! `thermo agent`: the long-running scheduler of deferred work. Every `--interval` it reads
//! the queue (`deferred-queue.json` in the thermo home), plans the rest of each job on the
//! grid and ambient forecasts, and acts on the library's decision
//! ([`edge_runtime::deferred::decide`]): it starts the job as a child `thermo` process (with
//! `--resume` once a training checkpoint exists) in its planned hours, sends it SIGTERM when
//! its hours end (training checkpoints and exits; indexing keeps what it committed), and runs
//! a job whose deadline is missed or would be at once, saying so. One job runs at a time,
//! the one due first. Every change of state is written to the queue before the agent acts on
//! the next job, so an agent killed with SIGKILL and started again finds the job it was
//! running (stopping a process it left behind first) and resumes it from its checkpoint.
//! SIGTERM stops the agent cleanly: its running job is paused, then it exits.
//!
//! Without `--ambient`, a healthy `ambient_temp` sensor of the board (an I2C sensor of the
//! `[sensors]` configuration) gives the ambient: its reading at each look holds for every
//! hour. With `--mqtt URL` the grid intensity also comes from the broker
//! ([`edge_runtime::deferred::grid`]): from the device's own `thermo/<device>/cmd/grid` topic
//! (`--device-id`, else the configuration's `[telemetry] device_id`, else the host name, as
//! telemetry names the device) and from the region's retained `thermo/grid/<region>` topic.
//! The latest valid message replaces `--grid` and the region's factor until the agent stops;
//! a valid message on the device's topic wins over the region's, and an invalid one is logged
//! and ignored, never replacing a good value.

use std::collections::HashMap;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use edge_runtime::config::TelemetrySection;
use edge_runtime::deferred::decide::summary;
use edge_runtime::deferred::grid::{GridFeed, GridOrigin, device_grid_topic, grid_topic};
use edge_runtime::deferred::queue::{DEFERRED_RECORD, QUEUE_FILE, Queue, update};
use edge_runtime::deferred::{Action, Job, JobKind, JobState, Tick, decide, ended, plan_job};
use edge_runtime::eco::ledger::utc_date;
use edge_runtime::schedule::{Source, Weights};
use edge_runtime::sensing::{Board, open_board};
use edge_runtime::session::accounting::cache_ledger;
use edge_runtime::session::telemetry::{broker_config, default_device_id};
use edge_runtime::shutdown::Shutdown;
use edge_runtime::telemetry::BrokerConfig;
use edge_runtime::train::atomic::write_atomically;
use edge_runtime::train::trainer::{CHECKPOINT, checkpoint_progress};
use sensor_drivers::sensor_set::{Role, Snapshot};

use super::flags::when::{PlanArgs, decision_line, load_config, now_s, show_time, weights};
use super::fleet::FleetTlsArgs;

/// Flags of `thermo agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Configuration file: its `[eco]` section (the region's grid factor when there is no
    /// `--grid`, and the wear weighting) and its `[sensors]` (an ambient sensor); default:
    /// /etc/thermo/thermo.toml when it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Grid region for the constant grid factor (world, us, cn, in, jp, de).
    #[arg(long, value_name = "CODE")]
    pub region: Option<String>,
    /// Seconds between looks at the queue and the clock.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub interval: f64,
    /// Seconds a job's process has to checkpoint and exit after SIGTERM before it is killed.
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    pub stop_timeout: f64,
    /// Take the grid intensity from this broker too (mqtt://host[:port] or mqtts://...):
    /// the messages of thermo/<device>/cmd/grid, which win, and the retained messages of
    /// `--grid-topic`.
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    /// The region's topic of the grid intensity (default: thermo/grid/<region>).
    #[arg(long, value_name = "TOPIC", requires = "mqtt")]
    pub grid_topic: Option<String>,
    /// Name this device as telemetry does, for its grid topic thermo/<ID>/cmd/grid (default:
    /// the configuration's [telemetry] device_id, else the host name).
    #[arg(long, value_name = "ID", requires = "mqtt")]
    pub device_id: Option<String>,
    /// TLS and login flags of `--mqtt`.
    #[command(flatten)]
    pub tls: FleetTlsArgs,
    /// Plan as if the clock were this many seconds ahead (for tests and demonstrations).
    #[arg(long, hide = true, default_value_t = 0, value_name = "SECONDS")]
    pub clock_offset_s: i64,
}

/// How long the agent waits for the broker's retained grid message before its first plan.
const GRID_WAIT: Duration = Duration::from_secs(10);

/// How long, after the first grid message, the agent waits for the device's own before its
/// first plan (both topics' retained messages follow the one subscription at once).
const DEVICE_GRID_WAIT: Duration = Duration::from_millis(500);

/// What the agent holds between looks.
struct Agent {
    queue: PathBuf,
    grid: Source,
    /// The grid intensity followed on the broker, which replaces `grid` once it holds a
    /// valid message.
    sent_grid: Option<Arc<Mutex<GridFeed>>>,
    /// The board, when its ambient sensor gives the ambient.
    board: Option<Board>,
    ambient: Source,
    weights: Weights,
    /// Processes it started, by job id.
    children: HashMap<String, Child>,
    /// Jobs it sent SIGTERM to, and when.
    stopping: HashMap<String, Instant>,
    stop_timeout: Duration,
}

/// `thermo agent`.
pub fn agent(args: AgentArgs) -> Result<()> {
    if !(args.interval.is_finite() && args.interval > 0.0 && args.interval <= 3600.0) {
        bail!("--interval {} is not between 0 and 3600 s", args.interval);
    }
    if !(args.stop_timeout.is_finite() && args.stop_timeout >= 0.0) {
        bail!("--stop-timeout {} is not a time", args.stop_timeout);
    }
    let shutdown = Shutdown::install()?;
    let config = load_config(args.config.as_deref(), args.region.as_deref())?;
    let factors = config.eco.factors()?;
    let has_ambient_sensor = config
        .sensors
        .i2c
        .iter()
        .any(|s| s.role == Role::AmbientTemp);
    let board = if args.plan.ambient.is_none() && has_ambient_sensor {
        open_board(&config.sensors)
            .map_err(|e| log::warn!("agent: the ambient sensor: {e:#}; using --ambient-c"))
            .ok()
    } else {
        None
    };
    let mut agent = Agent {
        queue: edge_runtime::models::cache_root()?.join(QUEUE_FILE),
        grid: args.plan.grid_source(factors.grid_g_co2e_per_kwh[0])?,
        sent_grid: None,
        board,
        ambient: args.plan.ambient_source()?,
        weights: weights(&factors),
        children: HashMap::new(),
        stopping: HashMap::new(),
        stop_timeout: Duration::from_secs_f64(args.stop_timeout),
    };
    log::info!(
        "agent: queue {}, grid {}, ambient {}",
        agent.queue.display(),
        source_name(&agent.grid, args.plan.grid.as_deref(), "g CO2e/kWh"),
        match &agent.board {
            Some(_) => format!(
                "the board's ambient_temp sensor, else {}",
                source_name(&agent.ambient, None, "°C")
            ),
            None => source_name(&agent.ambient, args.plan.ambient.as_deref(), "°C"),
        },
    );
    if let Some(url) = &args.mqtt {
        let t = &args.tls;
        let section = TelemetrySection {
            ca_file: t.mqtt_ca.clone(),
            cert_file: t.mqtt_cert.clone(),
            key_file: t.mqtt_key.clone(),
            username: t.mqtt_username.clone(),
            password_file: t.mqtt_password_file.clone(),
            discovery: false,
            ..TelemetrySection::default()
        };
        let client_id = format!("thermo-agent-{}", std::process::id());
        let broker = broker_config(&section, url, &client_id)?;
        let topic = args
            .grid_topic
            .clone()
            .unwrap_or_else(|| grid_topic(&factors.region));
        if topic.is_empty() || topic.contains(['+', '#']) {
            bail!("--grid-topic {topic:?} must be one topic without wildcards");
        }
        let device = args
            .device_id
            .clone()
            .or_else(|| config.telemetry.device_id.clone())
            .unwrap_or_else(default_device_id);
        let device_topic = device_grid_topic(&device)?;
        let feed = Arc::new(Mutex::new(GridFeed::new(
            device_topic.clone(),
            topic.clone(),
        )));
        agent.sent_grid = Some(Arc::clone(&feed));
        follow_grid(broker, feed, shutdown.clone());
        wait_for_grid(&agent, &shutdown);
        if agent.sent_grid_now().is_none() {
            log::warn!(
                "agent: no grid message on {device_topic} or {topic} within {GRID_WAIT:?}; \
                 planning without"
            );
        }
    }
    agent.recover()?;
    notify_ready();
    let interval = Duration::from_secs_f64(args.interval);
    while !shutdown.is_requested() {
        if let Err(e) = agent.look(now_s().saturating_add(args.clock_offset_s)) {
            log::error!("{e:#}");
        }
        let t = Instant::now();
        while t.elapsed() < interval && !shutdown.is_requested() {
            std::thread::sleep(Duration::from_millis(50).min(interval));
        }
    }
    if agent.children.is_empty() {
        log::info!("agent: stopping");
    } else {
        log::info!("agent: stopping; pausing the running job");
    }
    agent.stop_all()
}

/// Waits, before the first plan, for the retained grid messages that arrive right after
/// subscribing: for a first valid one up to [`GRID_WAIT`], then for the device's own up to
/// [`DEVICE_GRID_WAIT`] more.
fn wait_for_grid(agent: &Agent, shutdown: &Shutdown) {
    let Some(feed) = &agent.sent_grid else {
        return;
    };
    let held = |f: fn(&GridFeed) -> bool| f(&feed.lock().unwrap_or_else(|e| e.into_inner()));
    let t = Instant::now();
    while !held(|f| f.current().is_some()) && t.elapsed() < GRID_WAIT && !shutdown.is_requested() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    while held(|f| f.current().is_some() && !f.has_device())
        && t.elapsed() < DEVICE_GRID_WAIT
        && !shutdown.is_requested()
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Follows the grid intensity on `feed`'s topics until `stop`, passing every message to it;
/// reconnects and resubscribes as the broker comes and goes.
fn follow_grid(broker: BrokerConfig, feed: Arc<Mutex<GridFeed>>, stop: Shutdown) {
    use rumqttc::{Client, Event, Incoming, QoS, SubscribeFilter};
    std::thread::spawn(move || {
        let options = match broker.mqtt_options(None) {
            Ok(o) => o,
            Err(e) => {
                log::error!("agent: grid over MQTT: {e}");
                return;
            }
        };
        let filters: Vec<SubscribeFilter> = feed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .topics()
            .iter()
            .map(|t| SubscribeFilter::new(t.to_string(), QoS::AtLeastOnce))
            .collect();
        let (client, mut conn) = Client::new(options, 16);
        while !stop.is_requested() {
            match conn.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {
                    if let Err(e) = client.try_subscribe_many(filters.clone()) {
                        log::warn!("agent: subscribing to the grid topics: {e}");
                    }
                }
                Ok(Ok(Event::Incoming(Incoming::Publish(p)))) => {
                    let mut f = feed.lock().unwrap_or_else(|e| e.into_inner());
                    match f.receive(&p.topic, &p.payload) {
                        Ok(origin) => log::info!(
                            "agent: grid intensity from {}: {}{}",
                            p.topic,
                            f.latest(origin).map(describe).unwrap_or_default(),
                            if origin == GridOrigin::Region && f.has_device() {
                                "; the device's own still holds"
                            } else {
                                ""
                            }
                        ),
                        Err(e) => log::warn!("agent: {} refused: {e}", p.topic),
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    log::warn!("agent: grid over MQTT: {e}");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(rumqttc::RecvTimeoutError::Timeout) => {}
                Err(rumqttc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = client.try_disconnect();
    });
}

fn describe(s: &Source) -> String {
    match s {
        Source::Constant(v) => format!("{v} g CO2e/kWh every hour"),
        Source::Hourly(series) => format!("{} hour(s) of forecast", series.len()),
    }
}

fn notify_ready() {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready])
    {
        log::warn!("sd_notify: {e}");
    }
}

fn source_name(s: &Source, file: Option<&Path>, unit: &str) -> String {
    match (s, file) {
        (_, Some(f)) => f.display().to_string(),
        (Source::Constant(v), None) => format!("constant {v} {unit}"),
        (Source::Hourly(_), None) => "hourly".into(),
    }
}

/// The ambient of a healthy `ambient_temp` sensor in `snap`, °C.
fn sensor_ambient(snap: &Snapshot) -> Option<f64> {
    snap.temps
        .iter()
        .filter(|t| t.role == Role::AmbientTemp && t.health.is_ok())
        .find_map(|t| t.value)
        .map(|v| f64::from(v.celsius()))
}

/// Units of work `job` has left: a training job's steps past its checkpoint, an indexing
/// job's one run until it is done.
fn steps_left(job: &Job) -> u64 {
    match (job.kind, &job.out) {
        (JobKind::Train, Some(out)) => {
            let ckpt = job.cwd.join(out).join(CHECKPOINT);
            if !ckpt.exists() {
                return job.steps;
            }
            match checkpoint_progress(&ckpt) {
                Ok(p) => job.steps.saturating_sub(p.step as u64),
                Err(e) => {
                    log::warn!("{}: {e:#}; planning every step", job.id);
                    job.steps
                }
            }
        }
        _ if job.state == JobState::Done => 0,
        _ => job.steps,
    }
}

/// True when `pid` is alive and its command line carries `--agent-job <id>`.
fn is_ours(pid: u32, id: &str) -> bool {
    use std::io::Read as _;
    let Ok(f) = std::fs::File::open(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut bytes = vec![];
    if f.take(1 << 20).read_to_end(&mut bytes).is_err() {
        return false;
    }
    let args: Vec<&[u8]> = bytes.split(|b| *b == 0).collect();
    args.windows(2)
        .any(|w| w[0] == b"--agent-job" && w[1] == id.as_bytes())
}

/// A running process whose command line carries `--agent-job <id>`.
fn find_ours(id: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| is_ours(pid, id) && alive(pid))
}

/// Sends SIGTERM to `pid`; false when there is no such process.
fn sigterm(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    rustix::process::kill_process(p, rustix::process::Signal::TERM).is_ok()
}

fn alive(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
}

/// The hourly figures a plan is made on.
struct Forecast<'a> {
    grid: &'a Source,
    ambient: &'a Source,
    weights: &'a Weights,
}

/// Jobs the agent starts and jobs found finished, from one look at the queue.
type Planned = (Vec<(String, Action)>, Vec<Job>, Vec<Job>);

/// Plans every unfinished job in `q` at `now`, due first first, with `busy` processes
/// running: marks the one job that may start as running and jobs with nothing left as done.
/// Returns each job's action, the jobs to start and the jobs finished, and whether the queue
/// changed.
fn plan_queue(q: &mut Queue, now: i64, busy: usize, f: &Forecast<'_>) -> (Planned, bool) {
    let mut order: Vec<usize> = (0..q.jobs.len())
        .filter(|&i| !q.jobs[i].state.is_final())
        .collect();
    order.sort_by_key(|&i| q.jobs[i].deadline_s);
    let (mut actions, mut started, mut finished) = (vec![], vec![], vec![]);
    let mut running = busy;
    let mut changed = false;
    for i in order {
        let job = &mut q.jobs[i];
        let tick = Tick {
            now_s: now,
            steps_left: steps_left(job),
        };
        let (plan, counter) = plan_job(job, tick, f.grid, f.ambient, f.weights);
        if job.decision.is_none() {
            let d = summary(&plan, &counter, f.weights, now);
            log::info!("{}: {}", job.id, decision_line(&d));
            job.decision = Some(d);
            changed = true;
        }
        let action = decide(job.state, &plan, tick, job.deadline_s);
        match action {
            Action::Start { late } if running == 0 => {
                running += 1;
                job.state = JobState::Running;
                job.starts += 1;
                job.note = late.then(|| {
                    format!(
                        "runs late, at once: its deadline {} is missed or would be",
                        show_time(job.deadline_s)
                    )
                });
                started.push(job.clone());
            }
            Action::Finish => {
                job.state = JobState::Done;
                job.ended_s = Some(now);
                job.pid = None;
                finished.push(job.clone());
            }
            _ => {}
        }
        actions.push((job.id.clone(), action));
    }
    changed |= !started.is_empty() || !finished.is_empty();
    ((actions, started, finished), changed)
}

impl Agent {
    /// The grid intensity from the broker: the device's latest valid message, else the
    /// region's.
    fn sent_grid_now(&self) -> Option<Source> {
        let feed = self.sent_grid.as_ref()?;
        feed.lock()
            .unwrap_or_else(|e| e.into_inner())
            .current()
            .cloned()
    }

    /// Jobs a previous agent left running: a process still running for one is stopped (it
    /// checkpoints) and the job is paused, to be resumed in its hours.
    fn recover(&mut self) -> Result<()> {
        let left: Vec<(String, Option<u32>)> = Queue::load(&self.queue)?
            .jobs
            .iter()
            .filter(|j| j.state == JobState::Running)
            .map(|j| (j.id.clone(), j.pid))
            .collect();
        for (id, pid) in left {
            // The recorded process, else one started just before the previous agent could
            // record it.
            let pid = pid.filter(|&p| is_ours(p, &id)).or_else(|| find_ours(&id));
            if let Some(pid) = pid {
                log::warn!("{id}: process {pid} of a previous agent still runs; stopping it");
                sigterm(pid);
                let t = Instant::now();
                while alive(pid) && t.elapsed() < self.stop_timeout {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if alive(pid) {
                    log::warn!("{id}: process {pid} did not stop; killing it");
                    if let Some(p) = i32::try_from(pid)
                        .ok()
                        .and_then(rustix::process::Pid::from_raw)
                    {
                        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                    }
                }
            }
            self.set(&id, |j| {
                j.state = JobState::Paused;
                j.pid = None;
                j.note = Some("paused when the agent restarted".into());
            })?;
            log::info!("{id}: paused after an agent restart; it resumes in its planned hours");
        }
        Ok(())
    }

    /// Changes the job `id` in the queue file.
    fn set(&self, id: &str, change: impl FnOnce(&mut Job)) -> Result<()> {
        update(&self.queue, |q| {
            let found = q.jobs.iter_mut().find(|j| j.id == id);
            let write = found.is_some();
            if let Some(j) = found {
                change(j);
            }
            Ok(((), write))
        })?;
        Ok(())
    }

    /// One look at the queue at `now`: reap ended processes, then act on each job's decision.
    fn look(&mut self, now: i64) -> Result<()> {
        self.reap(now)?;
        self.kill_overdue();
        let busy = self.children.len();
        let sent = self.sent_grid_now();
        let g = sent.as_ref().unwrap_or(&self.grid);
        let measured = self.board.as_mut().and_then(|b| {
            let at_ms = u64::try_from(now.max(0)).unwrap_or(0).saturating_mul(1000);
            sensor_ambient(&b.snapshot(at_ms))
        });
        let measured = measured.map(Source::Constant);
        let a = measured.as_ref().unwrap_or(&self.ambient);
        let w = &self.weights;
        let forecast = Forecast {
            grid: g,
            ambient: a,
            weights: w,
        };
        let (actions, started, finished) =
            update(&self.queue, |q| Ok(plan_queue(q, now, busy, &forecast)))?;
        for job in started {
            self.start(&job, now)?;
        }
        for (id, action) in actions {
            if action == Action::Pause
                && !self.stopping.contains_key(&id)
                && let Some(child) = self.children.get(&id)
            {
                log::info!(
                    "{id}: outside its planned hours at {}; pausing",
                    show_time(now)
                );
                sigterm(child.id());
                self.stopping.insert(id, Instant::now());
            }
        }
        for job in finished {
            self.account(&job);
        }
        Ok(())
    }

    /// Starts the process of `job` (already marked running in the queue) and records its id.
    fn start(&mut self, job: &Job, now: i64) -> Result<()> {
        let exe = std::env::current_exe().context("locating the thermo binary")?;
        let mut cmd = Command::new(exe);
        // Its own process group: a Ctrl-C at the agent's terminal reaches the agent alone,
        // which pauses the job itself.
        cmd.args(&job.argv)
            .arg("--agent-job")
            .arg(&job.id)
            .current_dir(&job.cwd)
            .process_group(0);
        let resume = match (&job.kind, &job.out) {
            (JobKind::Train, Some(out)) => job.cwd.join(out).join(CHECKPOINT).is_file(),
            _ => false,
        };
        if resume && !job.argv.iter().any(|a| a == "--resume") {
            cmd.arg("--resume");
        }
        match &job.note {
            Some(note) => log::warn!("{}: {note}", job.id),
            None => log::info!(
                "{}: in its planned hours at {}; starting",
                job.id,
                show_time(now)
            ),
        }
        match cmd.spawn() {
            Ok(child) => {
                let pid = child.id();
                self.children.insert(job.id.clone(), child);
                self.set(&job.id, |j| j.pid = Some(pid))?;
                log::info!(
                    "{}: process {pid}{}",
                    job.id,
                    if resume {
                        " resumes from its checkpoint"
                    } else {
                        ""
                    }
                );
            }
            Err(e) => {
                let note = format!("could not start: {e}");
                log::error!("{}: {note}", job.id);
                self.set(&job.id, |j| {
                    j.state = JobState::Failed;
                    j.ended_s = Some(now);
                    j.note = Some(note);
                })?;
            }
        }
        self.write_record(job);
        Ok(())
    }

    /// Collects ended processes: paused when the agent stopped them, done when they ended by
    /// themselves with success, failed otherwise.
    fn reap(&mut self, now: i64) -> Result<()> {
        let mut exited = vec![];
        for (id, child) in &mut self.children {
            match child.try_wait() {
                Ok(Some(status)) => exited.push((id.clone(), status)),
                Ok(None) => {}
                Err(e) => log::warn!("{id}: {e}"),
            }
        }
        for (id, status) in exited {
            self.children.remove(&id);
            let paused = self.stopping.remove(&id).is_some();
            let mut done = None;
            let mut state = JobState::Failed;
            self.set(&id, |j| {
                let unfinished = j.kind == JobKind::Train && steps_left(j) > 0;
                state = ended(paused, status.success(), unfinished);
                j.state = state;
                j.pid = None;
                match state {
                    JobState::Paused => {}
                    JobState::Done => {
                        j.ended_s = Some(now);
                        done = Some(j.clone());
                    }
                    _ => {
                        j.ended_s = Some(now);
                        j.note = Some(format!("its process ended with {status}"));
                    }
                }
            })?;
            match state {
                JobState::Paused => log::info!("{id}: paused ({status})"),
                JobState::Done => log::info!("{id}: done"),
                _ => log::error!("{id}: failed: its process ended with {status}"),
            }
            if let Some(job) = done {
                self.account(&job);
            }
        }
        Ok(())
    }

    /// Kills a process that outlived its stop timeout.
    fn kill_overdue(&mut self) {
        for (id, since) in &self.stopping {
            if since.elapsed() > self.stop_timeout
                && let Some(child) = self.children.get_mut(id)
            {
                log::warn!(
                    "{id}: still running {:?} after SIGTERM; killing it",
                    self.stop_timeout
                );
                let _ = child.kill();
            }
        }
    }

    /// A finished job's decision and saving, into the log, the day ledger and its record.
    fn account(&self, job: &Job) {
        let late = job
            .note
            .as_deref()
            .is_some_and(|n| n.starts_with("runs late"));
        let saved = job.decision.map_or(0.0, |d| d.saved_g_co2e);
        if let Some(d) = &job.decision {
            log::info!("{}: finished; {}", job.id, decision_line(d));
        }
        if let Some(ledger) = cache_ledger()
            && let Err(e) =
                ledger.record_deferred(&utc_date(std::time::SystemTime::now()), saved, late)
        {
            log::warn!("{e}");
        }
        self.write_record(job);
    }

    /// Writes the job (its plan, counterfactual and state) as `deferred.json` into a training
    /// job's output folder.
    fn write_record(&self, job: &Job) {
        let (JobKind::Train, Some(out)) = (job.kind, &job.out) else {
            return;
        };
        let dir = job.cwd.join(out);
        if !dir.is_dir() {
            return;
        }
        let current = Queue::load(&self.queue)
            .ok()
            .and_then(|q| q.get(&job.id).cloned())
            .unwrap_or_else(|| job.clone());
        let written = serde_json::to_vec_pretty(&current)
            .map_err(anyhow::Error::from)
            .and_then(|b| write_atomically(&dir.join(DEFERRED_RECORD), &b));
        if let Err(e) = written {
            log::warn!("{}: {e:#}", job.id);
        }
    }

    /// Pauses every running job and waits for its process to end (SIGTERM at the agent).
    fn stop_all(&mut self) -> Result<()> {
        for (id, child) in &self.children {
            if !self.stopping.contains_key(id) {
                sigterm(child.id());
                self.stopping.insert(id.clone(), Instant::now());
            }
        }
        let t = Instant::now();
        while !self.children.is_empty() {
            self.reap(now_s())?;
            if t.elapsed() > self.stop_timeout {
                self.kill_overdue();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_runtime::deferred::HeatModel;
    use edge_runtime::schedule::{HOUR_S, Series};

    fn job(id: &str, deadline_h: i64, cwd: &Path) -> Job {
        Job {
            id: id.into(),
            kind: JobKind::Train,
            argv: vec!["train".into()],
            cwd: cwd.to_path_buf(),
            out: Some(PathBuf::from(id)),
            submit_s: 0,
            deadline_s: deadline_h * HOUR_S,
            steps: 100,
            model: HeatModel {
                setpoint_c: 70.0,
                step_s: 2.0,
                power_w: 4.0,
                idle_rise_c: 10.0,
                reference_c: 55.0,
                activation_ev: 0.7,
            },
            state: JobState::Queued,
            pid: None,
            starts: 0,
            decision: None,
            note: None,
            ended_s: None,
        }
    }

    #[test]
    fn only_a_healthy_ambient_sensor_gives_the_ambient() {
        use sensor_drivers::health::Health;
        use sensor_drivers::sensor_set::TempSample;
        use sensor_drivers::units::MilliCelsius;
        let sample = |role, health, mc| TempSample {
            name: "t".into(),
            role,
            value: Some(MilliCelsius(mc)),
            health,
            error: None,
        };
        let mut snap = Snapshot {
            at_ms: 0,
            temps: vec![
                sample(Role::SocTemp, Health::Ok, 61_000),
                sample(Role::AmbientTemp, Health::Stuck, 40_000),
            ],
            powers: vec![],
            throttle: None,
            throttle_seen: Default::default(),
        };
        assert_eq!(sensor_ambient(&snap), None);
        snap.temps
            .push(sample(Role::AmbientTemp, Health::Ok, 23_500));
        assert_eq!(sensor_ambient(&snap), Some(23.5));
    }

    #[test]
    fn one_job_starts_at_a_time_the_one_due_first_and_a_late_one_says_so() -> Result<()> {
        let dir = tempfile::tempdir()?;
        // Hour 0 at 100 g/kWh, hour 1 at 500, then 50.
        let grid = Source::Hourly(Series::from_points(
            [100.0, 500.0, 50.0, 50.0, 50.0, 50.0]
                .iter()
                .enumerate()
                .map(|(i, &g)| (i as i64 * HOUR_S, g)),
        ));
        let f = Forecast {
            grid: &grid,
            ambient: &Source::Constant(20.0),
            weights: &Weights {
                g_per_wear_hour: 0.0,
            },
        };
        let mut q = Queue {
            jobs: vec![job("later", 2, dir.path()), job("sooner", 1, dir.path())],
        };
        // Both are planned in hour 0 (before their deadlines); the one due first starts.
        let ((actions, started, _), changed) = plan_queue(&mut q, 60, 0, &f);
        assert!(changed);
        assert_eq!(
            started.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            ["sooner"]
        );
        assert_eq!(actions[0], ("sooner".into(), Action::Start { late: false }));
        assert_eq!(actions[1], ("later".into(), Action::Start { late: false }));
        assert_eq!(q.jobs[1].state, JobState::Running);
        assert_eq!(q.jobs[0].state, JobState::Queued);
        assert!(q.jobs.iter().all(|j| j.decision.is_some()));
        // An hour on, "sooner" is past its deadline and keeps running, late; "later" would
        // start in hour 1, its only hour left, but a process runs already.
        let ((actions, started, _), _) = plan_queue(&mut q, HOUR_S + 60, 1, &f);
        assert_eq!(actions[0], ("sooner".into(), Action::Keep));
        assert_eq!(actions[1], ("later".into(), Action::Start { late: false }));
        assert!(started.is_empty());
        // Past both deadlines with "sooner" paused and nothing running: it starts at once,
        // late, with a note.
        q.jobs[1].state = JobState::Paused;
        let ((_, started, _), _) = plan_queue(&mut q, 3 * HOUR_S, 0, &f);
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].id, "sooner");
        assert!(
            started[0]
                .note
                .as_deref()
                .is_some_and(|n| n.starts_with("runs late")),
            "{:?}",
            started[0].note
        );
        Ok(())
    }
}
