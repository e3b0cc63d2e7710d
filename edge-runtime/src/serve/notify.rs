//! systemd's notify protocol (`Type=notify`): READY once serving, STATUS lines, STOPPING on
//! shutdown, and WATCHDOG pets while — and only while — the governor's control loop ticks,
//! so a hung governor gets the service restarted. Every call is a no-op outside systemd
//! (no `NOTIFY_SOCKET`).

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use super::http::Freshness;
use super::metrics::Metrics;
use super::queue::Scheduler;
use super::worker::Job;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        log::warn!("sd_notify: {e}");
    }
}

/// Tells systemd the service is up, with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Updates the status line `systemctl status` shows.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Tells systemd the service is stopping.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("shutting down: draining in-flight requests"),
    ]);
}

/// The watchdog period systemd asks for (`WATCHDOG_USEC`), when it is meant for this process
/// (`WATCHDOG_PID` unset or ours), as `sd_watchdog_enabled` decides.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pets the watchdog every half period while the governor is healthy, and refreshes the
/// status line; stops petting (and says why) when the governor stops ticking.
pub async fn pet_while_healthy(
    every: Duration,
    freshness: Arc<Freshness>,
    scheduler: Arc<Scheduler<Job>>,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(every / 2);
    let mut warned = false;
    loop {
        tick.tick().await;
        if freshness.healthy() {
            warned = false;
            let load = scheduler.load();
            let line = format!(
                "{} | {} running, {} waiting | {} tokens generated",
                freshness.governor().status().line(),
                load.running,
                load.waiting,
                metrics.tokens_predicted()
            );
            send(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
        } else if !warned {
            warned = true;
            let age = freshness.tick_age().as_secs_f64();
            log::error!(
                "the governor has not ticked for {age:.1} s: no longer petting the watchdog"
            );
            send(&[NotifyState::Status(&format!(
                "governor hung ({age:.1} s without a tick); waiting for the watchdog"
            ))]);
        }
    }
}
