//! Commands over a real broker: each bad command gets an error reply that says why and
//! changes nothing; good ones are applied and acknowledged with the new status.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e_tests::mosquitto::{Mosquitto, Subscriber, publish_burst, publish_once};
use edge_runtime::telemetry::{
    BrokerConfig, CommandName, CommandTarget, Reply, SinkConfig, StatusSnapshot, Telemetry,
    TelemetryDriver, TelemetryOptions,
};

const DEVICE: &str = "cmd-dev";

/// A device's state as the commands see it: setpoint and training switch, plus every call.
#[derive(Default)]
struct Device {
    setpoint_c: Mutex<f32>,
    paused: Mutex<bool>,
    calls: Mutex<Vec<String>>,
}

impl CommandTarget for Device {
    fn set_setpoint_c(&self, celsius: f32) -> Result<(), String> {
        self.calls
            .lock()
            .map_err(|e| e.to_string())?
            .push(format!("setpoint {celsius}"));
        *self.setpoint_c.lock().map_err(|e| e.to_string())? = celsius;
        Ok(())
    }
    fn pause_training(&self) -> Result<(), String> {
        self.calls
            .lock()
            .map_err(|e| e.to_string())?
            .push("pause".into());
        *self.paused.lock().map_err(|e| e.to_string())? = true;
        Ok(())
    }
    fn resume_training(&self) -> Result<(), String> {
        self.calls
            .lock()
            .map_err(|e| e.to_string())?
            .push("resume".into());
        *self.paused.lock().map_err(|e| e.to_string())? = false;
        Ok(())
    }
    fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot {
            setpoint_c: self.setpoint_c.lock().map(|g| *g).unwrap_or(f32::NAN),
            ceiling_c: 85.0,
            ambient_c: Some(25.0),
            training_paused: self.paused.lock().map(|g| *g).unwrap_or(false),
            ..StatusSnapshot::default()
        }
    }
}

struct Rig {
    broker: Mosquitto,
    device: Arc<Device>,
    telemetry: Telemetry,
    thread: Option<std::thread::JoinHandle<Result<(), edge_runtime::telemetry::TelemetryError>>>,
    replies: Subscriber,
    _queue: tempfile::TempDir,
}

impl Rig {
    fn new(allowed: Vec<CommandName>) -> Result<Self> {
        let broker = Mosquitto::start()?;
        let replies = Subscriber::start(
            broker.port(),
            "cmd-watcher",
            &["thermo/+/cmd/+/reply", "thermo/+/status"],
            false,
        )?;
        let device = Arc::new(Device {
            setpoint_c: Mutex::new(70.0),
            ..Device::default()
        });
        let queue = tempfile::tempdir()?;
        let opts = TelemetryOptions::new(
            DEVICE,
            SinkConfig::Mqtt {
                broker: BrokerConfig::new(broker.url().parse()?, "cmd-device"),
                queue_dir: queue.path().to_path_buf(),
            },
        )
        .with_interval(Duration::from_millis(500))
        .with_allowed_commands(allowed);
        let target: Arc<dyn CommandTarget> = device.clone();
        let (telemetry, driver): (Telemetry, TelemetryDriver) = Telemetry::new(opts, Some(target))?;
        let thread = Some(std::thread::spawn(move || driver.run()));
        // Ready once the retained birth message is there (subscriptions go out just before).
        ensure!(
            replies.wait_for(Duration::from_secs(10), |m| m
                .iter()
                .any(|(t, p, _)| t == "thermo/cmd-dev/status" && p == b"online")),
            "the device never came online"
        );
        Ok(Self {
            broker,
            device,
            telemetry,
            thread,
            replies,
            _queue: queue,
        })
    }

    /// Sends `payload` to `topic` and returns the reply on `reply_topic`.
    fn ask(&self, topic: &str, reply_topic: &str, payload: &str) -> Result<Reply> {
        let before = self.replies.messages().len();
        publish_once(self.broker.port(), topic, payload.as_bytes())?;
        let got = self.replies.wait_for(Duration::from_secs(10), |m| {
            m.iter().skip(before).any(|(t, _, _)| t == reply_topic)
        });
        ensure!(got, "no reply on {reply_topic}");
        let msgs = self.replies.messages();
        let (_, p, _) = msgs
            .iter()
            .skip(before)
            .find(|(t, _, _)| t == reply_topic)
            .context("reply vanished")?;
        Ok(serde_json::from_slice(p)?)
    }

    fn command(&self, name: &str, payload: &str) -> Result<Reply> {
        self.ask(
            &format!("thermo/{DEVICE}/cmd/{name}"),
            &format!("thermo/{DEVICE}/cmd/{name}/reply"),
            payload,
        )
    }

    /// Asserts the command was refused with a reason containing `why` and nothing changed.
    fn refused(&self, name: &str, payload: &str, why: &str) -> Result<()> {
        let r = self.command(name, payload)?;
        ensure!(!r.ok, "{name} {payload} was accepted: {r:?}");
        let e = r.error.unwrap_or_default();
        ensure!(e.contains(why), "reason {e:?} lacks {why:?}");
        self.unchanged()
    }

    fn unchanged(&self) -> Result<()> {
        let calls = self
            .device
            .calls
            .lock()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(calls.is_empty(), "the device was touched: {calls:?}");
        ensure!(self.device.snapshot().setpoint_c == 70.0);
        ensure!(self.telemetry.interval() == Duration::from_millis(500));
        Ok(())
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.telemetry.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn an_unknown_command_is_refused_and_changes_nothing() -> Result<()> {
    Rig::new(CommandName::ALL.to_vec())?.refused("reboot", "{}", "unknown command")
}

#[test]
fn malformed_json_is_refused_and_changes_nothing() -> Result<()> {
    Rig::new(CommandName::ALL.to_vec())?.refused("setpoint", "{\"celsius\": 6", "malformed JSON")
}

#[test]
fn a_setpoint_of_the_wrong_type_is_refused_and_changes_nothing() -> Result<()> {
    Rig::new(CommandName::ALL.to_vec())?.refused(
        "setpoint",
        r#"{"celsius": "60"}"#,
        "must be a number",
    )
}

#[test]
fn a_setpoint_above_the_hard_ceiling_is_refused_and_changes_nothing() -> Result<()> {
    Rig::new(CommandName::ALL.to_vec())?.refused(
        "setpoint",
        r#"{"celsius": 95}"#,
        "above the hard ceiling",
    )
}

#[test]
fn a_setpoint_below_the_ambient_is_refused_and_changes_nothing() -> Result<()> {
    Rig::new(CommandName::ALL.to_vec())?.refused(
        "setpoint",
        r#"{"celsius": 10}"#,
        "below the ambient",
    )
}

#[test]
fn an_out_of_range_interval_is_refused_and_changes_nothing() -> Result<()> {
    Rig::new(CommandName::ALL.to_vec())?.refused("interval", r#"{"seconds": 0}"#, "outside")
}

#[test]
fn an_unknown_field_is_refused_and_changes_nothing() -> Result<()> {
    Rig::new(CommandName::ALL.to_vec())?.refused(
        "setpoint",
        r#"{"celsius": 60, "force": true}"#,
        "unknown field",
    )
}

#[test]
fn a_command_outside_the_allow_list_is_refused_and_changes_nothing() -> Result<()> {
    Rig::new(vec![CommandName::Status])?.refused("pause_training", "{}", "not allowed")
}

#[test]
fn a_command_on_another_devices_topic_is_ignored() -> Result<()> {
    let rig = Rig::new(CommandName::ALL.to_vec())?;
    publish_once(
        rig.broker.port(),
        "thermo/other-dev/cmd/setpoint",
        br#"{"celsius": 60}"#,
    )?;
    // A status request afterwards is answered; the foreign command changed nothing.
    let r = rig.command("status", "{}")?;
    ensure!(r.ok);
    rig.unchanged()
}

#[test]
fn the_agents_grid_topic_gets_no_reply_and_changes_nothing() -> Result<()> {
    let rig = Rig::new(CommandName::ALL.to_vec())?;
    publish_once(
        rig.broker.port(),
        &format!("thermo/{DEVICE}/cmd/grid"),
        br#"{"g_co2e_per_kwh": 120}"#,
    )?;
    // The status reply comes after it (one link, in order); no reply came for `grid`.
    let r = rig.command("status", "{}")?;
    ensure!(r.ok);
    ensure!(
        replies_on(&rig, &format!("thermo/{DEVICE}/cmd/grid/reply")).is_empty(),
        "the runtime answered thermo agent's grid topic"
    );
    rig.unchanged()
}

#[test]
fn valid_commands_are_applied_and_acknowledged_with_the_new_status() -> Result<()> {
    let rig = Rig::new(CommandName::ALL.to_vec())?;
    let r = rig.command("setpoint", r#"{"celsius": 62.5, "id": "a1"}"#)?;
    ensure!(r.ok && r.id.as_deref() == Some("a1"), "{r:?}");
    ensure!(
        r.status.as_ref().map(|s| s.setpoint_c) == Some(62.5),
        "{r:?}"
    );
    ensure!(rig.command("pause_training", "")?.ok);
    ensure!(rig.telemetry.training_paused());
    ensure!(rig.command("resume_training", "{}")?.ok);
    ensure!(!rig.telemetry.training_paused());
    let r = rig.command("interval", r#"{"seconds": 2}"#)?;
    ensure!(
        r.ok && rig.telemetry.interval() == Duration::from_secs(2),
        "{r:?}"
    );
    let calls = rig
        .device
        .calls
        .lock()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .clone();
    ensure!(calls == ["setpoint 62.5", "pause", "resume"], "{calls:?}");
    Ok(())
}

/// The replies among the subscriber's messages on `topic`, decoded.
fn replies_on(rig: &Rig, topic: &str) -> Vec<Reply> {
    rig.replies
        .messages()
        .iter()
        .filter(|(t, _, _)| t == topic)
        .filter_map(|(_, p, _)| serde_json::from_slice(p).ok())
        .collect()
}

#[test]
fn a_burst_of_commands_gets_every_reply_or_a_counted_drop() -> Result<()> {
    let rig = Rig::new(CommandName::ALL.to_vec())?;
    let topic = format!("thermo/{DEVICE}/cmd/setpoint");
    // Valid setpoints between valid-but-refused ones (above the ceiling) and malformed ones.
    let burst: Vec<(String, Vec<u8>)> = (0..1001)
        .map(|i| {
            let payload = match i % 4 {
                0 => format!(r#"{{"celsius": 60.5, "id": "b{i}"}}"#),
                1 => format!(r#"{{"celsius": 99, "id": "b{i}"}}"#),
                2 => format!(r#"{{"celsius": "x", "id": "b{i}"}}"#),
                _ => format!(r#"{{"celsius": 61, "id": "b{i}", "extra": 1}}"#),
            };
            (topic.clone(), payload.into_bytes())
        })
        .collect();
    publish_burst(rig.broker.port(), &burst, Duration::from_secs(30))?;
    let reply_topic = format!("{topic}/reply");
    let settled = rig.replies.wait_for(Duration::from_secs(30), |_| {
        let got = replies_on(&rig, &reply_topic).len() as u64;
        got + rig.telemetry.stats().replies_dropped >= 1001
    });
    let replies = replies_on(&rig, &reply_topic);
    let dropped = rig.telemetry.stats().replies_dropped;
    eprintln!(
        "burst of 1001: {} replies, {dropped} counted drops",
        replies.len()
    );
    ensure!(
        settled,
        "{} replies and {dropped} counted drops for 1001 commands",
        replies.len()
    );
    let ids: std::collections::HashSet<String> =
        replies.iter().filter_map(|r| r.id.clone()).collect();
    ensure!(
        ids.len() == replies.len(),
        "a reply came twice or without id"
    );
    ensure!(replies.len() as u64 + dropped == 1001);
    let applied = rig
        .device
        .calls
        .lock()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .len();
    ensure!(
        applied == 251,
        "{applied} setpoints applied, 251 were valid"
    );
    ensure!(replies.iter().filter(|r| r.ok).count() <= 251);
    ensure!(
        rig.telemetry.stats().connects == 1,
        "the device reconnected"
    );
    Ok(())
}

#[test]
fn oversized_commands_are_refused_and_counted_without_dropping_the_link() -> Result<()> {
    let rig = Rig::new(CommandName::ALL.to_vec())?;
    let big = |i: usize| {
        let mut p = format!(r#"{{"id": "big{i}", "pad": ""#).into_bytes();
        p.resize(p.len() + (2 << 20) + i * 4096, b'x');
        p.extend_from_slice(b"\"}");
        p
    };
    let mut burst: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("thermo/{DEVICE}/cmd/setpoint"), big(i)))
        .collect();
    // Status requests sent just after the oversized ones must all be answered.
    burst.extend((0..5).map(|i| {
        (
            format!("thermo/{DEVICE}/cmd/status"),
            format!(r#"{{"id": "s{i}"}}"#).into_bytes(),
        )
    }));
    publish_burst(rig.broker.port(), &burst, Duration::from_secs(30))?;
    let status_topic = format!("thermo/{DEVICE}/cmd/status/reply");
    let answered = rig.replies.wait_for(Duration::from_secs(20), |_| {
        replies_on(&rig, &status_topic).len() >= 5
    });
    ensure!(
        answered,
        "status replies: {:?}",
        replies_on(&rig, &status_topic)
    );
    ensure!(replies_on(&rig, &status_topic).iter().all(|r| r.ok));
    let refused = replies_on(&rig, &format!("thermo/{DEVICE}/cmd/setpoint/reply"));
    ensure!(refused.len() == 5, "{refused:?}");
    ensure!(
        refused
            .iter()
            .all(|r| !r.ok && r.error.as_deref().unwrap_or("").contains("byte limit"))
    );
    let stats = rig.telemetry.stats();
    ensure!(stats.oversized_commands == 5, "{stats:?}");
    ensure!(
        stats.connects == 1 && stats.connected,
        "the link flapped: {stats:?}"
    );
    let offline = rig
        .replies
        .messages()
        .iter()
        .filter(|(t, p, _)| t == "thermo/cmd-dev/status" && p == b"offline")
        .count();
    ensure!(offline == 0, "{offline} offline status message(s)");
    rig.unchanged()
}
