//! `thermo serve --fleet` against a real broker, on the tiny model and the simulated actively
//! cooled Pi 5: the service joins the shared queue once its governor predicts headroom,
//! answers a queued request as chunks on the request's response topic with its correlation
//! data, and answers a malformed and an oversized request with an error chunk instead of
//! crashing; a valid request after them is still answered.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e_tests::mosquitto::Mosquitto;
use e2e_tests::{terminate, thermo, tiny_model};
use edge_runtime::engine::WeightFormat;
use edge_runtime::telemetry::work::AnswerChunk;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PublishProperties};
use rumqttc::v5::{Client, Connection, Event, MqttOptions};

const QUEUE: &str = "thermo/requests/tiny";
const ANSWERS: &str = "test/fleet/answers";

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A front: publishes to the queue and collects the chunks on [`ANSWERS`].
struct Front {
    client: Client,
    conn: Connection,
}

impl Front {
    fn connect(port: u16) -> Result<Self> {
        let mut o = MqttOptions::new("fleet-test-front", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(Some(1 << 20));
        let (client, mut conn) = Client::new(o, 64);
        client.subscribe(ANSWERS, QoS::AtLeastOnce)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Ok(Event::Incoming(Packet::SubAck(_)))) =
                conn.recv_timeout(Duration::from_millis(200))
            {
                return Ok(Self { client, conn });
            }
        }
        bail!("no SUBACK")
    }

    /// Publishes `payload` with `id` as correlation data; whether a board was subscribed.
    fn request(&mut self, payload: Vec<u8>, id: &str) -> Result<bool> {
        let props = PublishProperties {
            response_topic: Some(ANSWERS.to_string()),
            correlation_data: Some(id.as_bytes().to_vec().into()),
            ..PublishProperties::default()
        };
        self.client
            .publish_with_properties(QUEUE, QoS::AtLeastOnce, false, payload, props)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Ok(Event::Incoming(Packet::PubAck(a)))) =
                self.conn.recv_timeout(Duration::from_millis(200))
            {
                return Ok(!matches!(a.reason, PubAckReason::NoMatchingSubscribers));
            }
        }
        bail!("no PUBACK")
    }

    /// The chunks correlated with `id` up to the last one.
    fn answer(&mut self, id: &str) -> Result<Vec<AnswerChunk>> {
        let mut chunks = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
                self.conn.recv_timeout(Duration::from_millis(200))
            else {
                continue;
            };
            let props = p.properties.unwrap_or_default();
            if props.correlation_data.as_deref() != Some(id.as_bytes()) {
                continue;
            }
            let chunk = AnswerChunk::parse(&p.payload)?;
            let done = chunk.done;
            chunks.push(chunk);
            if done {
                return Ok(chunks);
            }
        }
        bail!("no last chunk for {id} (got {chunks:?})")
    }
}

#[test]
fn a_fleet_board_answers_queued_requests_and_refuses_malformed_ones_without_crashing() -> Result<()>
{
    let broker = Mosquitto::start()?;
    let home = tempfile::tempdir()?;
    let port = free_port()?;
    let mut service = Service(
        Command::new(thermo()?)
            .args(["serve", "--fleet", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--model")
            .arg(tiny_model(WeightFormat::F32))
            .args(["--threads", "1", "--sim", "rpi5-active"])
            .args(["--mqtt", &broker.url(), "--device-id", "fleet-board-1"])
            .env("THERMO_HOME", home.path())
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(home.path().join("stderr.log"))?)
            .spawn()?,
    );
    let log = || std::fs::read_to_string(home.path().join("stderr.log")).unwrap_or_default();
    let mut front = Front::connect(broker.port())?;

    // The board joins the queue once its governor has read the sensor and sees headroom.
    let valid = br#"{"messages":[{"role":"user","content":"Hello"}],"max_tokens":6}"#.to_vec();
    let t = Instant::now();
    while !front.request(valid.clone(), "ok-1")? {
        if let Some(status) = service.0.try_wait()? {
            bail!("thermo serve exited with {status}: {}", log());
        }
        ensure!(
            t.elapsed() < Duration::from_secs(120),
            "never joined: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ok = front.answer("ok-1")?;
    let last = ok.last().context("no chunk")?;
    ensure!(last.error.is_none() && last.tokens > 0, "{ok:?}");
    ensure!(last.board == "fleet-board-1", "{last:?}");
    ensure!(
        ok.iter().enumerate().all(|(i, c)| c.seq as usize == i),
        "chunks out of order: {ok:?}"
    );

    for (payload, id) in [
        (b"{not json".to_vec(), "bad-json"),
        (br#"{"messages":[],"max_tokens":0}"#.to_vec(), "bad-tokens"),
        (vec![b' '; 70 * 1024], "too-large"),
    ] {
        ensure!(
            front.request(payload, id)?,
            "{id}: the board left the queue"
        );
        let chunks = front.answer(id)?;
        ensure!(
            chunks.len() == 1 && chunks[0].error.is_some() && chunks[0].done,
            "{id}: {chunks:?}"
        );
    }
    ensure!(service.0.try_wait()?.is_none(), "crashed: {}", log());

    ensure!(front.request(valid, "ok-2")?, "the board left the queue");
    let again = front.answer("ok-2")?;
    ensure!(again.last().is_some_and(|c| c.error.is_none()), "{again:?}");
    let status = terminate(&mut service.0, Duration::from_secs(20))?;
    ensure!(status.success(), "exit {status}: {}", log());
    Ok(())
}
