//! A real Mosquitto broker for the tests: started from the Debian package's binary on a free
//! loopback port with its own config file and persistence directory, stoppable and
//! restartable on the same port (so clients reconnect to the same address after an outage).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use edge_runtime::bench::fleet::mosquitto::mosquitto_bin;

/// A free TCP port on 127.0.0.1 (bound and released; a race with other processes is possible
/// but unlikely on a test machine).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(l.local_addr()?.port())
}

/// A running (or stopped) Mosquitto with its own directory.
pub struct Mosquitto {
    port: u16,
    extra: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
}

impl Mosquitto {
    /// Starts a broker on a free loopback port: anonymous access, persistence on, no limit on
    /// queued messages per client.
    pub fn start() -> Result<Self> {
        Self::start_with("")
    }

    /// Like [`Mosquitto::start`], with `extra` appended to the config (more listeners, TLS).
    pub fn start_with(extra: &str) -> Result<Self> {
        let dir = tempfile::tempdir().context("broker dir")?;
        let mut m = Self {
            port: free_port()?,
            extra: extra.to_string(),
            dir,
            child: None,
            starts: 0,
        };
        m.write_config()?;
        m.spawn()?;
        Ok(m)
    }

    fn write_config(&self) -> Result<()> {
        let d = self.dir.path();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {dir}/\nmax_queued_messages 0\nmax_inflight_messages 0\n\
             user root\nlog_dest file {dir}/mosquitto.log\nlog_type error\nlog_type warning\n{extra}\n",
            port = self.port,
            dir = d.display(),
            extra = self.extra
        );
        std::fs::write(d.join("mosquitto.conf"), conf).context("writing mosquitto.conf")
    }

    fn spawn(&mut self) -> Result<()> {
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (apt-get install mosquitto)",
                    mosquitto_bin().display()
                )
            })?;
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!("mosquitto exited at start: {status}; log: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("mosquitto did not listen on {} within 10 s", self.port)
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Stops the broker with SIGTERM (it saves its persistence database) and waits.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let pid = c.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if c.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Starts the broker again on the same port with the same persistence.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Whether the broker process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One received message: topic, payload, retained flag.
pub type Message = (String, Vec<u8>, bool);

/// A test subscriber: its own thread, a rumqttc client subscribed to `filters` at QoS 1,
/// collecting every message in arrival order. With `persistent`, the session survives a
/// broker restart (clean session off, fixed client id) so nothing published while it
/// reconnects is lost.
pub struct Subscriber {
    messages: std::sync::Arc<std::sync::Mutex<Vec<Message>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    subscribed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Connects to the broker on `port` as `client_id` and subscribes; waits for the SUBACK.
    pub fn start(port: u16, client_id: &str, filters: &[&str], persistent: bool) -> Result<Self> {
        use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};
        use std::sync::atomic::Ordering;
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(!persistent);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = Client::new(o, 64);
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let subscribed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let (m, s, sub) = (messages.clone(), stop.clone(), subscribed.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match conn.recv_timeout(Duration::from_millis(100)) {
                    Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {
                        for f in &filters {
                            let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Ok(Event::Incoming(Incoming::SubAck(_)))) => {
                        sub.store(true, Ordering::Relaxed);
                    }
                    Ok(Ok(Event::Incoming(Incoming::Publish(p)))) => {
                        m.lock().unwrap_or_else(|e| e.into_inner()).push((
                            p.topic.clone(),
                            p.payload.to_vec(),
                            p.retain,
                        ));
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(200)),
                    Err(rumqttc::RecvTimeoutError::Timeout) => {}
                    Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                }
            }
            let _ = client.try_disconnect();
        });
        let me = Self {
            messages,
            stop,
            subscribed,
            thread: Some(thread),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !me.subscribed.load(Ordering::Relaxed) {
            if Instant::now() > deadline {
                bail!("the test subscriber got no SUBACK within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(me)
    }

    /// Every message so far: topic, payload, retained flag.
    pub fn messages(&self) -> Vec<Message> {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until `pred` holds on the messages or `timeout` passes; returns whether it held.
    pub fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&[Message]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.messages()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sequence numbers of `device`'s records among `messages` (telemetry and event topics),
/// deduplicated by sequence number keeping first arrivals, in arrival order.
pub fn dedup_seqs(messages: &[Message], device: &str) -> Vec<u64> {
    use edge_runtime::telemetry::{Encoding, Record};
    let mut seen = std::collections::HashSet::new();
    let tele = format!("thermo/{device}/telemetry");
    let event = format!("thermo/{device}/event");
    messages
        .iter()
        .filter(|(t, _, _)| *t == tele || *t == event)
        .filter_map(|(_, p, _)| Record::decode(p, Encoding::Json).ok())
        .filter(|r| r.device == device)
        .map(|r| r.seq)
        .filter(|s| seen.insert(*s))
        .collect()
}

/// Publishes one QoS 1 message and waits for the broker's PUBACK.
pub fn publish_once(port: u16, topic: &str, payload: &[u8]) -> Result<()> {
    use rumqttc::{Client, Event as E, Incoming, MqttOptions, QoS};
    let mut o = MqttOptions::new(format!("pub-{}", std::process::id()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(o, 10);
    client.publish(topic, QoS::AtLeastOnce, false, payload.to_vec())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Ok(E::Incoming(Incoming::PubAck(_)))) =
            conn.recv_timeout(Duration::from_millis(200))
        {
            let _ = client.disconnect();
            return Ok(());
        }
    }
    bail!("no PUBACK for {topic}")
}

/// Publishes every `(topic, payload)` at QoS 1 from one connection as fast as the broker
/// takes them (payloads up to 32 MiB) and waits for all PUBACKs, within `timeout`.
pub fn publish_burst(port: u16, messages: &[(String, Vec<u8>)], timeout: Duration) -> Result<()> {
    use rumqttc::{Client, Event as E, Incoming, MqttOptions, QoS};
    let mut o = MqttOptions::new(format!("burst-{}", std::process::id()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(1 << 20, 32 << 20);
    o.set_inflight(100);
    let (client, mut conn) = Client::new(o, messages.len().max(1));
    for (topic, payload) in messages {
        client.try_publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())?;
    }
    let deadline = Instant::now() + timeout;
    let mut acked = 0;
    while acked < messages.len() {
        if Instant::now() > deadline {
            bail!("{acked} of {} PUBACKs within {timeout:?}", messages.len());
        }
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(E::Incoming(Incoming::PubAck(_)))) => acked += 1,
            Ok(Err(e)) => bail!("burst publisher: {e}"),
            _ => {}
        }
    }
    let _ = client.disconnect();
    Ok(())
}

/// A throw-away PKI made with the `openssl` command: a CA, a server certificate for
/// 127.0.0.1 and a client certificate, all PEM files in `dir`.
pub struct TestPki {
    /// Holds the files.
    pub dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes the CA, the server and the client certificates.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let run = |args: &[&str]| -> Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .context("running openssl (apt-get install openssl)")?;
            if !out.status.success() {
                bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=thermo-test-ca",
        ])?;
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )?;
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
        for (name, cn) in [("server", "localhost"), ("client", "thermo-device")] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ])?;
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ])?;
        }
        Ok(Self { dir })
    }

    /// A file of the PKI (`ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Mosquitto config lines for a TLS listener on `port` that requires a client
    /// certificate signed by the CA.
    pub fn listener(&self, port: u16) -> String {
        format!(
            "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            self.path("ca.pem").display(),
            self.path("server.pem").display(),
            self.path("server.key").display()
        )
    }
}
