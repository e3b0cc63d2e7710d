//! `[eco]`: the footprint factors (region, site, single-factor overrides), the per-request
//! budgets, the zombie-compute guard and the agent-loop detector. Keys are flat so every one
//! of them can be set from the environment (`THERMO_ECO_MAX_SECONDS`). The factor checks
//! are [`EcoConfig::resolve`]'s, so a value is judged the same way wherever it comes from.

use super::{KeyDoc, Problems, Section, doc, doc_eg};
use crate::eco::{EcoConfig, EcoConfigError};

fn positive(p: &mut Problems, path: &str, v: Option<f64>) {
    if let Some(v) = v
        && !(v.is_finite() && v > 0.0)
    {
        p.push(path, format!("must be a finite number above 0, got {v}"));
    }
}

impl Section for EcoConfig {
    const NAME: &'static str = "eco";
    const DOCS: &'static [KeyDoc] = &[
        doc(
            "region",
            "Grid region of the carbon, water and pollutant factors: world or a country code \
             (us, cn, in, jp, de, ...).",
        ),
        doc(
            "site",
            "Where the board runs: \"board\" (PUE 1, no cooling water) or \"datacentre\".",
        ),
        doc(
            "diesel_fraction",
            "Share of energy from diesel backup, 0..=1.",
        ),
        doc(
            "diesel_tier",
            "The backup generator's EPA tier: \"tier2\" or \"tier4\".",
        ),
        doc(
            "board",
            "Board whose embodied carbon is amortised (rpi4, rpi5, rpi5-active, \
             jetson-orin-nano).",
        ),
        doc(
            "lifetime_years",
            "Service life embodied carbon is spread over, years (0.1..=100).",
        ),
        doc(
            "activation_ev",
            "Arrhenius activation energy of the wear figure, eV (0..=5).",
        ),
        doc(
            "wear_reference_c",
            "Reference temperature of the wear figure, °C (-273.15..=200).",
        ),
        doc_eg(
            "grid_g_co2e_per_kwh",
            "Override the region's grid carbon intensity, g CO2e/kWh (0..=5000).",
            "380.0",
        ),
        doc_eg(
            "water_l_per_kwh",
            "Override the water consumed by generation, L/kWh (0..=1000).",
            "3.1",
        ),
        doc_eg(
            "pue",
            "Override the site's power usage effectiveness (1..=10).",
            "1.2",
        ),
        doc_eg(
            "wue_l_per_kwh",
            "Override the site's on-site water usage effectiveness, L/kWh (0..=1000).",
            "0.5",
        ),
        doc_eg(
            "nox_g_per_kwh",
            "Override the grid's NOx, g/kWh (0..=1000).",
            "0.3",
        ),
        doc_eg(
            "so2_g_per_kwh",
            "Override the grid's SO2, g/kWh (0..=1000).",
            "0.2",
        ),
        doc_eg(
            "pm25_g_per_kwh",
            "Override the grid's PM2.5, g/kWh (0..=1000).",
            "0.02",
        ),
        doc_eg(
            "embodied_kg_co2e",
            "Override the board's embodied carbon, kg CO2e (0..=1e6).",
            "8.0",
        ),
        doc_eg(
            "flash_kg_co2e_per_gb",
            "Override the embodied carbon of flash storage, kg CO2e per GB (0..=100); an \
             index's share of it is amortised over lifetime_years.",
            "0.16",
        ),
        doc_eg(
            "upstream_model",
            "The model card row whose declared training figures apply (llama-2-7b, \
             llama-2-13b, llama-2-70b, llama-3.2-1b, llama-3.2-3b, smollm2). Unset: the row \
             the model folder's name matches; none matched reads \"not declared\".",
            "\"llama-3.2-1b\"",
        ),
        doc_eg(
            "upstream_training_kwh",
            "Declared training energy of the model, kWh (0..=1e12), for a model whose card \
             is not tabled; shown as declared, never as measured.",
            "50000.0",
        ),
        doc_eg(
            "upstream_training_t_co2e",
            "Declared training emissions of the model, t CO2e (0..=1e9).",
            "20.0",
        ),
        doc_eg(
            "upstream_teacher_kwh",
            "Declared energy of the teacher model or synthetic data it was trained on, kWh \
             (0..=1e12).",
            "1000.0",
        ),
        doc_eg(
            "upstream_teacher_t_co2e",
            "Declared emissions of the teacher model or synthetic data, t CO2e (0..=1e9).",
            "0.5",
        ),
        doc(
            "upstream_amortise_tokens",
            "Tokens served over which declared upstream figures are spread per token \
             (1..=1e18). The default, one trillion, is a convention, not a measurement: the \
             per-token share scales inversely with it.",
        ),
        doc(
            "write_emissions_csv",
            "Append a CodeCarbon-compatible emissions.csv row per answer.",
        ),
        doc_eg(
            "emissions_csv",
            "Where the emissions.csv rows go. Unset: emissions.csv in the thermo cache folder \
             ($THERMO_HOME).",
            "\"/var/lib/thermo/emissions.csv\"",
        ),
        doc(
            "guard",
            "Stop degenerate answers (token cycles, a stuck token, collapsed entropy, no new \
             content); the budgets below act either way.",
        ),
        doc(
            "guard_max_period",
            "Longest token cycle the guard looks for (1..=256).",
        ),
        doc(
            "guard_novelty_window",
            "Tokens over which the guard looks for new 4-grams (0: off; else 8..=4096).",
        ),
        doc(
            "guard_entropy_window",
            "Tokens over which the guard takes mean entropy (0: off; else 4..=4096).",
        ),
        doc_eg("max_tokens", "Token budget per answer (> 0).", "1024"),
        doc_eg(
            "max_seconds",
            "Wall-time budget per answer, s (> 0).",
            "120.0",
        ),
        doc_eg(
            "max_joules",
            "Energy budget per answer, J at the board (> 0).",
            "500.0",
        ),
        doc_eg(
            "max_g_co2e",
            "Carbon budget per answer, g CO2e (> 0).",
            "0.05",
        ),
        doc(
            "agent_loop_max_repeats",
            "thermo serve: identical requests one client may send within the window; the \
             next gets 429 (0: off).",
        ),
        doc(
            "agent_loop_max_errors",
            "thermo serve: identical errors a request may earn within the window before it is \
             refused with 429 (0: off).",
        ),
        doc(
            "agent_loop_window_s",
            "thermo serve: how far back the agent-loop detector counts, s (1..=86400).",
        ),
    ];

    fn check(&self, p: &mut Problems) {
        if let Err(e) = self.factors() {
            match e {
                EcoConfigError::Invalid(list) => {
                    for problem in list {
                        p.push(problem.path, problem.message);
                    }
                }
            }
        }
        if !(1..=256).contains(&self.guard_max_period) {
            p.push(
                "eco.guard_max_period",
                format!("must be in 1..=256, got {}", self.guard_max_period),
            );
        }
        if self.guard_novelty_window != 0 && !(8..=4096).contains(&self.guard_novelty_window) {
            p.push(
                "eco.guard_novelty_window",
                format!(
                    "must be 0 or in 8..=4096, got {}",
                    self.guard_novelty_window
                ),
            );
        }
        if self.guard_entropy_window != 0 && !(4..=4096).contains(&self.guard_entropy_window) {
            p.push(
                "eco.guard_entropy_window",
                format!(
                    "must be 0 or in 4..=4096, got {}",
                    self.guard_entropy_window
                ),
            );
        }
        if self.max_tokens == Some(0) {
            p.push("eco.max_tokens", "must be above 0");
        }
        positive(p, "eco.max_seconds", self.max_seconds);
        positive(p, "eco.max_joules", self.max_joules);
        positive(p, "eco.max_g_co2e", self.max_g_co2e);
        if !(self.agent_loop_window_s.is_finite()
            && (1.0..=86_400.0).contains(&self.agent_loop_window_s))
        {
            p.push(
                "eco.agent_loop_window_s",
                format!("must be in 1..=86400 s, got {}", self.agent_loop_window_s),
            );
        }
        if self
            .emissions_csv
            .as_deref()
            .is_some_and(|f| f.as_os_str().is_empty())
        {
            p.push("eco.emissions_csv", "must not be empty");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, Layers};

    fn paths(text: &str, env: &[(&str, &str)]) -> Vec<(String, String)> {
        let layers = Layers {
            file: Some((text.to_string(), "test.toml".into())),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cli: vec![],
        };
        match Config::load(&layers) {
            Err(ConfigError::Invalid(list)) => {
                list.into_iter().map(|p| (p.path, p.message)).collect()
            }
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn bad_eco_values_are_rejected_together_with_their_key_paths() {
        let found = paths(
            "[eco]\nregion = \"atlantis\"\npue = 0.5\ngrid_g_co2e_per_kwh = -1.0\n\
             activation_ev = nan\nmax_joules = -3.0\nagent_loop_window_s = 0.0\n",
            &[],
        );
        let keys: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        for key in [
            "eco.region",
            "eco.pue",
            "eco.grid_g_co2e_per_kwh",
            "eco.activation_ev",
            "eco.max_joules",
            "eco.agent_loop_window_s",
        ] {
            assert!(keys.contains(&key), "{key} missing from {found:?}");
        }
        let region = found.iter().find(|(p, _)| p == "eco.region");
        assert!(region.is_some_and(|(_, m)| m.contains("atlantis") && m.contains("world")));
    }

    #[test]
    fn bad_telemetry_values_are_rejected_with_their_key_paths() {
        let found = paths(
            "[telemetry]\nmqtt = \"http://x\"\ndevice_id = \"a/b\"\ninterval_s = 0.0\n\
             encoding = \"xml\"\nallow = [\"reboot\"]\n",
            &[],
        );
        let keys: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            keys,
            [
                "telemetry.mqtt",
                "telemetry.device_id",
                "telemetry.interval_s",
                "telemetry.encoding",
                "telemetry.allow[0]"
            ],
            "{found:?}"
        );
    }

    #[test]
    fn the_environment_sets_eco_and_telemetry_keys() {
        let layers = Layers {
            file: Some(("[eco]\nregion = \"us\"\n".into(), "t".into())),
            env: vec![
                ("THERMO_ECO_REGION".into(), "jp".into()),
                ("THERMO_ECO_MAX_SECONDS".into(), "12.5".into()),
                (
                    "THERMO_TELEMETRY_MQTT".into(),
                    "mqtt://127.0.0.1:1883".into(),
                ),
                ("THERMO_TELEMETRY_DEVICE_ID".into(), "pi-1".into()),
            ],
            cli: vec![("eco.guard".into(), "false".into())],
        };
        let c = Config::load(&layers).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.eco.region, "jp");
        assert_eq!(c.eco.max_seconds, Some(12.5));
        assert!(!c.eco.guard);
        let g = c
            .eco
            .guard_config()
            .unwrap_or_else(|| panic!("budgets keep the guard"));
        assert_eq!(
            (g.max_period, g.novelty_window, g.entropy_window),
            (0, 0, 0)
        );
        assert_eq!(c.telemetry.mqtt.as_deref(), Some("mqtt://127.0.0.1:1883"));
        assert_eq!(c.telemetry.device_id.as_deref(), Some("pi-1"));
        let f = c.eco.factors().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.region, "jp");
    }

    #[test]
    fn zero_counts_switch_the_agent_loop_detector_off() {
        let c =
            Config::from_toml_str("[eco]\nagent_loop_max_repeats = 0\nagent_loop_max_errors = 0\n")
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.eco.agent_loop().is_none());
        let d = Config::default();
        let a = d
            .eco
            .agent_loop()
            .unwrap_or_else(|| panic!("on by default"));
        assert_eq!((a.max_repeats, a.max_errors), (3, 3));
    }
}
