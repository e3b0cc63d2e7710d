//! Board detection from the device tree (`/proc/device-tree/model` and `compatible`, both
//! NUL-terminated), and the default governing thermal zone per board: `cpu-thermal` on a
//! Raspberry Pi, `tj-thermal` (the maximum over all T234 sensors) on a Jetson Orin.

use std::fmt;
use std::path::Path;

use super::thermal::ThermalZone;

/// The boards this runtime knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoardKind {
    /// Raspberry Pi 4 Model B / 400 / CM4 (BCM2711).
    RaspberryPi4,
    /// Raspberry Pi 5 / 500 / CM5 (BCM2712).
    RaspberryPi5,
    /// NVIDIA Jetson Orin Nano (T234, module p3767-0003/0004/0005).
    JetsonOrinNano,
    /// Anything else.
    Unknown,
}

impl BoardKind {
    /// The zone type that governs this board by default.
    pub fn default_zone_type(self) -> Option<&'static str> {
        match self {
            BoardKind::RaspberryPi4 | BoardKind::RaspberryPi5 => Some("cpu-thermal"),
            BoardKind::JetsonOrinNano => Some("tj-thermal"),
            BoardKind::Unknown => None,
        }
    }

    /// The simulated-SoC profile that models this board.
    pub fn sim_profile(self) -> Option<&'static str> {
        match self {
            BoardKind::RaspberryPi4 => Some("rpi4"),
            BoardKind::RaspberryPi5 => Some("rpi5"),
            BoardKind::JetsonOrinNano => Some("jetson-orin-nano"),
            BoardKind::Unknown => None,
        }
    }
}

impl fmt::Display for BoardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BoardKind::RaspberryPi4 => "Raspberry Pi 4",
            BoardKind::RaspberryPi5 => "Raspberry Pi 5",
            BoardKind::JetsonOrinNano => "Jetson Orin Nano",
            BoardKind::Unknown => "unknown board",
        })
    }
}

/// What the device tree says about the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardInfo {
    /// The classified board.
    pub kind: BoardKind,
    /// The `model` string, when present.
    pub model: Option<String>,
    /// The `compatible` strings, most specific first.
    pub compatible: Vec<String>,
}

/// Classifies a board from its device-tree `model` and `compatible` strings.
pub fn classify(model: Option<&str>, compatible: &[String]) -> BoardKind {
    let has = |needle: &str| compatible.iter().any(|c| c == needle);
    let model = model.unwrap_or("");
    if model.starts_with("Raspberry Pi 5")
        || model.starts_with("Raspberry Pi 500")
        || model.starts_with("Raspberry Pi Compute Module 5")
        || has("brcm,bcm2712")
    {
        BoardKind::RaspberryPi5
    } else if model.starts_with("Raspberry Pi 4")
        || model.starts_with("Raspberry Pi 400")
        || model.starts_with("Raspberry Pi Compute Module 4")
        || has("brcm,bcm2711")
    {
        BoardKind::RaspberryPi4
    } else if model.contains("Orin Nano")
        || [
            "nvidia,p3767-0003",
            "nvidia,p3767-0004",
            "nvidia,p3767-0005",
        ]
        .iter()
        .any(|c| has(c))
    {
        BoardKind::JetsonOrinNano
    } else {
        BoardKind::Unknown
    }
}

/// Reads the device tree under a filesystem root (`proc/device-tree`, else
/// `sys/firmware/devicetree/base`) and classifies the board. Missing files mean `Unknown`.
pub fn detect_board(root: &Path) -> BoardInfo {
    let bases = [
        root.join("proc/device-tree"),
        root.join("sys/firmware/devicetree/base"),
    ];
    let read = |file: &str| {
        bases
            .iter()
            .find_map(|base| std::fs::read(base.join(file)).ok())
    };
    let model = read("model")
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .trim_matches(['\0', '\n', ' '])
                .to_owned()
        })
        .filter(|m| !m.is_empty());
    let compatible: Vec<String> = read("compatible")
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    BoardInfo {
        kind: classify(model.as_deref(), &compatible),
        model,
        compatible,
    }
}

/// Picks the governing zone: the configured type if given and present, else the board's
/// default, else (unknown boards) the first of `tj-thermal`, `cpu-thermal`, `x86_pkg_temp`,
/// else the first zone whose temperature reads.
pub fn choose_governing_zone<'a>(
    board: BoardKind,
    zones: &'a [ThermalZone],
    configured: Option<&str>,
) -> Option<&'a ThermalZone> {
    let by_type = |kind: &str| zones.iter().find(|zone| zone.kind() == kind);
    if let Some(kind) = configured {
        return by_type(kind);
    }
    if let Some(zone) = board.default_zone_type().and_then(by_type) {
        return Some(zone);
    }
    ["tj-thermal", "cpu-thermal", "x86_pkg_temp"]
        .into_iter()
        .find_map(by_type)
        .or_else(|| zones.iter().find(|zone| zone.temperature().is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn classifies_known_models_and_compatibles() {
        let cases: [(Option<&str>, &[&str], BoardKind); 8] = [
            (
                Some("Raspberry Pi 5 Model B Rev 1.0"),
                &["raspberrypi,5-model-b", "brcm,bcm2712"],
                BoardKind::RaspberryPi5,
            ),
            (
                Some("Raspberry Pi 4 Model B Rev 1.4"),
                &["raspberrypi,4-model-b", "brcm,bcm2711"],
                BoardKind::RaspberryPi4,
            ),
            (None, &["brcm,bcm2711"], BoardKind::RaspberryPi4),
            (
                Some("Raspberry Pi Compute Module 5 Rev 1.0"),
                &[],
                BoardKind::RaspberryPi5,
            ),
            (
                Some("NVIDIA Jetson Orin Nano Developer Kit"),
                &[
                    "nvidia,p3768-0000+p3767-0005",
                    "nvidia,p3767-0005",
                    "nvidia,tegra234",
                ],
                BoardKind::JetsonOrinNano,
            ),
            (
                None,
                &["nvidia,p3767-0004", "nvidia,tegra234"],
                BoardKind::JetsonOrinNano,
            ),
            (
                Some("NVIDIA Jetson AGX Orin"),
                &["nvidia,p3701-0000", "nvidia,tegra234"],
                BoardKind::Unknown,
            ),
            (
                Some("Raspberry Pi 3 Model B Rev 1.2"),
                &["brcm,bcm2837"],
                BoardKind::Unknown,
            ),
        ];
        for (model, compatible, kind) in cases {
            assert_eq!(classify(model, &strings(compatible)), kind, "{model:?}");
        }
    }
}
