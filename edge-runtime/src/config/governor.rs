//! `[governor]`: the setpoint every request runs under (fixed, or the eco setpoint the
//! governor chooses) and when the governor counts as stale.

use serde::{Deserialize, Serialize};

use super::{KeyDoc, Problems, Section, doc, doc_eg};

/// `[governor]`: the thermal governor every request runs under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GovernorSection {
    /// `fixed` holds `setpoint_c`; `auto` lets the governor choose the setpoint with the
    /// fewest g CO2e per token (starting from, and compared with, `setpoint_c`).
    pub setpoint: SetpointMode,
    /// Temperature to hold the SoC at, °C; `None`: 10 °C below the first firmware throttle.
    pub setpoint_c: Option<f32>,
    /// The longest mean inter-token latency in ms that energy-aware pacing (busy generation
    /// run at the setting with the fewest joules per token rather than flat out) and, with
    /// `setpoint = "auto"`, the chosen setpoint may cause. Set, it turns that pacing on at a
    /// fixed setpoint too; `None`: pacing only with `auto`, bounded by 1.5x flat out.
    pub eco_max_itl_ms: Option<f64>,
    /// The service reports itself unhealthy (and stops petting the systemd watchdog) when the
    /// governor's last tick is older than this, in seconds.
    pub stale_after_s: f64,
}

/// How the setpoint is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetpointMode {
    /// `setpoint_c`, held.
    #[default]
    Fixed,
    /// The eco setpoint, chosen and re-chosen by the governor.
    Auto,
}

impl Default for GovernorSection {
    fn default() -> Self {
        GovernorSection {
            setpoint: SetpointMode::Fixed,
            setpoint_c: None,
            eco_max_itl_ms: None,
            stale_after_s: 5.0,
        }
    }
}

impl Section for GovernorSection {
    const NAME: &'static str = "governor";
    const DOCS: &'static [KeyDoc] = &[
        doc(
            "setpoint",
            "\"fixed\" holds setpoint_c; \"auto\" lets the governor choose, and keep \
             re-choosing, the setpoint with the fewest g CO2e per token (grid carbon of the \
             board's energy plus the embodied carbon that wear spends, from [eco]), starting \
             from setpoint_c and never above the hard ceiling minus 2 °C.",
        ),
        doc_eg(
            "setpoint_c",
            "Temperature to hold the SoC at, in °C. Unset: 10 °C below the board's first \
             firmware throttle point.",
            "70.0",
        ),
        doc_eg(
            "eco_max_itl_ms",
            "The longest mean inter-token latency in ms that eco pacing (busy generation at \
             the setting with the fewest joules per token rather than flat out) and, with \
             setpoint = \"auto\", the chosen setpoint may cause (1..=60000). Set, it turns eco \
             pacing on at a fixed setpoint too. Unset: eco pacing only with \"auto\", tokens \
             at most 1.5x slower than flat out.",
            "250.0",
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
        if let Some(ms) = self.eco_max_itl_ms
            && !(ms.is_finite() && (1.0..=60_000.0).contains(&ms))
        {
            p.push(
                "governor.eco_max_itl_ms",
                format!("must be in 1..=60000 ms, got {ms}"),
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
