//! `[governor]`: the setpoint every request runs under and when the governor counts as stale.

use serde::{Deserialize, Serialize};

use super::{KeyDoc, Problems, Section, doc, doc_eg};

/// `[governor]`: the thermal governor every request runs under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GovernorSection {
    /// Temperature to hold the SoC at, °C; `None`: 10 °C below the first firmware throttle.
    pub setpoint_c: Option<f32>,
    /// The service reports itself unhealthy (and stops petting the systemd watchdog) when the
    /// governor's last tick is older than this, in seconds.
    pub stale_after_s: f64,
}

impl Default for GovernorSection {
    fn default() -> Self {
        GovernorSection {
            setpoint_c: None,
            stale_after_s: 5.0,
        }
    }
}

impl Section for GovernorSection {
    const NAME: &'static str = "governor";
    const DOCS: &'static [KeyDoc] = &[
        doc_eg(
            "setpoint_c",
            "Temperature to hold the SoC at, in °C. Unset: 10 °C below the board's first \
             firmware throttle point.",
            "70.0",
        ),
        doc(
            "stale_after_s",
            "Seconds without a governor tick after which /healthz fails and the systemd \
             watchdog is no longer petted (0.5..=600).",
        ),
    ];

    fn check(&self, p: &mut Problems) {
        if let Some(sp) = self.setpoint_c
            && !(sp.is_finite() && (20.0..=110.0).contains(&sp))
        {
            p.push(
                "governor.setpoint_c",
                format!("must be a temperature in 20..=110 °C, got {sp}"),
            );
        }
        if !(self.stale_after_s.is_finite() && (0.5..=600.0).contains(&self.stale_after_s)) {
            p.push(
                "governor.stale_after_s",
                format!("must be in 0.5..=600 s, got {}", self.stale_after_s),
            );
        }
    }
}
