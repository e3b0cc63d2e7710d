//! `thermo bench fleet`: simulated boards under our governor behind one real Mosquitto on
//! loopback (started here from the `mosquitto` binary, or an existing plain `--broker`),
//! three dispatchers on one workload; prints the Markdown table and writes `fleet.md`,
//! `fleet.json` and `fleet.svg` into `--out`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use edge_runtime::bench::fleet::board::BoardSetup;
use edge_runtime::bench::fleet::mosquitto::mosquitto_bin;
use edge_runtime::bench::fleet::wire::Wire;
use edge_runtime::bench::fleet::{
    DEFAULT_BOARDS, Dispatcher, FleetOptions, run_fleet_bench, write_report,
};
use edge_runtime::telemetry::broker::BrokerUrl;

/// Flags of `thermo bench fleet`.
#[derive(Debug, Args)]
pub struct FleetBenchArgs {
    /// Boards as PROFILE@AMBIENT_C, comma-separated (profiles: rpi4, rpi5, rpi5-active,
    /// jetson-orin-nano).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_BOARDS.map(String::from))]
    pub boards: Vec<String>,
    /// Dispatchers to compare, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = Dispatcher::ALL.map(|d| d.name().to_string()))]
    pub dispatchers: Vec<String>,
    /// Simulated minutes over which requests arrive.
    #[arg(long, default_value_t = 20.0)]
    pub minutes: f64,
    /// Offered load as a share of the boards' summed sustainable tokens/s.
    #[arg(long, default_value_t = 0.8)]
    pub load: f64,
    /// Seed of the arrivals and token counts.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Headroom pull: tokens of headroom beyond its taken answers a board needs to stay on
    /// the shared queue.
    #[arg(long, default_value_t = 32.0)]
    pub min_headroom_tokens: f64,
    /// Headroom pull: answers a board holds at most (generating and waiting).
    #[arg(long, default_value_t = 2)]
    pub max_in_flight: usize,
    /// Use this running broker (plain `mqtt://host:port`) instead of starting Mosquitto.
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// The Mosquitto binary to start (default: `$MOSQUITTO`, `/usr/sbin/mosquitto`, or
    /// `mosquitto` on the PATH).
    #[arg(long, value_name = "PATH")]
    pub mosquitto: Option<PathBuf>,
    /// Folder for fleet.md, fleet.json and fleet.svg.
    #[arg(long, value_name = "DIR", default_value = "bench-results")]
    pub out: PathBuf,
}

/// Maps the flags onto the library's options.
fn options(args: &FleetBenchArgs) -> Result<FleetOptions> {
    let mut boards = Vec::with_capacity(args.boards.len());
    for b in &args.boards {
        boards.push(BoardSetup::parse(b)?);
    }
    let mut dispatchers = Vec::new();
    for d in &args.dispatchers {
        dispatchers.push(Dispatcher::from_name(d).with_context(|| {
            format!("unknown dispatcher {d:?} (round_robin, least_connections, headroom_pull)")
        })?);
    }
    if !(args.minutes.is_finite() && args.minutes > 0.0 && args.minutes <= 24.0 * 60.0) {
        bail!("--minutes must be between 0 and 1440");
    }
    Ok(FleetOptions {
        boards,
        dispatchers,
        span: Duration::from_secs_f64(args.minutes * 60.0),
        load: args.load,
        seed: args.seed,
        min_headroom_tokens: args.min_headroom_tokens,
        max_in_flight: args.max_in_flight,
        ..FleetOptions::default()
    })
}

/// Runs `thermo bench fleet`.
pub fn bench(args: &FleetBenchArgs) -> Result<()> {
    let opts = options(args)?;
    let (broker, host, port) = match &args.broker {
        Some(url) => {
            let url: BrokerUrl = url.parse().context("--broker")?;
            if url.tls {
                bail!("--broker: the fleet benchmark speaks plain MQTT (mqtt://)");
            }
            (None, url.host, url.port)
        }
        None => {
            let m = LoopbackMosquitto::start(args.mosquitto.as_deref())?;
            let port = m.port;
            (Some(m), "127.0.0.1".to_string(), port)
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let prefix = format!("thermo-fleet-bench-{}", std::process::id());
    let links = opts.boards.len() + 1;
    let started = Instant::now();
    let report = rt.block_on(async {
        let (mut wire, drivers) = Wire::new(&host, port, &prefix, links, opts.broker_bound);
        for d in drivers {
            tokio::spawn(d.run());
        }
        let report = run_fleet_bench(&mut wire, &opts).await;
        wire.close().await;
        report
    });
    drop(broker);
    let report = report?;
    let table = edge_runtime::bench::fleet::report::markdown(&report);
    print!("{table}");
    write_report(&args.out, &report)?;
    eprintln!(
        "wrote fleet.md, fleet.json and fleet.svg into {} in {:.1} s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A Mosquitto started for the run on a free loopback port, stopped when dropped.
struct LoopbackMosquitto {
    port: u16,
    child: Child,
    dir: PathBuf,
}

impl LoopbackMosquitto {
    fn start(bin: Option<&Path>) -> Result<Self> {
        let bin = bin.map(Path::to_path_buf).unwrap_or_else(mosquitto_bin);
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free loopback port")?
            .port();
        let dir = std::env::temp_dir().join(format!("thermo-fleet-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\nmax_inflight_messages 0\nlog_dest none\n"
            ),
        )
        .with_context(|| conf.display().to_string())?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {}: the fleet benchmark needs Mosquitto (install the mosquitto \
                     package, pass --mosquitto PATH, or --broker URL of a running broker)",
                    bin.display()
                )
            })?;
        let mut m = Self { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(m);
            }
            if let Ok(Some(status)) = m.child.try_wait() {
                bail!("{} exited at start: {status}", bin.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "{} did not listen on port {port} within 10 s",
            bin.display()
        )
    }
}

impl Drop for LoopbackMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
