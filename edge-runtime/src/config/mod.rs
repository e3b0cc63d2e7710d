//! The runtime's one configuration file (`/etc/thermo/thermo.toml`), layered
//! defaults < file < `THERMO_*` environment < command-line flags. Each `[section]` is a serde
//! struct with `Default` and a check that appends every problem it finds, with its key path,
//! so an invalid configuration is reported all at once. Adding a section is one file here
//! with its struct and [`Section`] impl, plus one line in the [`config_sections!`] invocation
//! below; the example file (`edge-runtime/thermo.example.toml`) is generated from the same
//! documentation tables (`example`) and a test fails when the two drift. `layers` merges the
//! defaults, the file, the environment and `--set`, then the command line's typed flags;
//! `problems` is what an invalid configuration reports. This module only parses and checks:
//! it opens no device and no socket.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::sensing::SensingConfig;

mod eco;
mod example;
mod governor;
mod layers;
mod model;
mod problems;
mod rag;
mod sensors;
mod service;
mod telemetry;

use crate::eco::EcoConfig;
pub use example::KeyDoc;
use example::{doc, doc_eg};
pub use governor::{GovernorSection, SetpointMode};
pub use layers::{Layers, env_key};
use layers::{default_table, probe, section_from};
pub use model::ModelSection;
pub use problems::{ConfigError, Problem, Problems};
pub use rag::{RAG_MODES, RagSection};
pub use service::{FD_RESERVE, ServiceConfig, default_max_connections};
pub use telemetry::TelemetrySection;

/// Where the service looks for its configuration when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/thermo/thermo.toml";

/// Prefix of the environment variables that override configuration keys
/// (`THERMO_SERVICE_LISTEN` sets `service.listen`).
pub const ENV_PREFIX: &str = "THERMO_";

/// A `[section]` of the configuration file.
pub trait Section: Serialize + DeserializeOwned + Default {
    /// The table name.
    const NAME: &'static str;
    /// One line per key, in file order.
    const DOCS: &'static [KeyDoc];
    /// Appends every semantic problem (ranges, combinations) with its full key path.
    fn check(&self, problems: &mut Problems);
}

/// Declares the whole configuration: one `field: Type` line per section, in file order.
macro_rules! config_sections {
    ($($field:ident : $ty:ty),+ $(,)?) => {
        /// The effective configuration, one field per `[section]`.
        #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $(
                #[doc = concat!("`[", stringify!($field), "]`.")]
                pub $field: $ty,
            )+
        }

        /// Names of the sections, in file order.
        pub const SECTIONS: &[&str] = &[$(<$ty as Section>::NAME),+];

        impl Config {
            fn from_layers(merged: &toml::Table, p: &mut Problems) -> Config {
                Config {
                    $($field: section_from::<$ty>(merged, p),)+
                }
            }

            fn check_all(&self, p: &mut Problems) {
                $(self.$field.check(p);)+
            }

            /// Whether `section.key = value` deserialises (on top of the defaults).
            fn accepts(section: &str, key: &str, value: &toml::Value) -> bool {
                $(
                    if section == <$ty as Section>::NAME {
                        return probe::<$ty>(key, value);
                    }
                )+
                false
            }

            fn docs() -> Vec<(&'static str, &'static [KeyDoc], toml::Table)> {
                vec![$((<$ty as Section>::NAME, <$ty as Section>::DOCS, default_table::<$ty>())),+]
            }
        }
    };
}

config_sections! {
    model: ModelSection,
    governor: GovernorSection,
    sensors: SensingConfig,
    service: ServiceConfig,
    rag: RagSection,
    eco: EcoConfig,
    telemetry: TelemetrySection,
}

impl Config {
    /// The configuration as TOML, with the API token replaced by `"<redacted>"`.
    pub fn to_toml_redacted(&self) -> String {
        let mut shown = self.clone();
        if shown.service.api_token.is_some() {
            shown.service.api_token = Some("<redacted>".into());
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/thermo.example.toml");

    fn problems(r: Result<Config, ConfigError>) -> Vec<Problem> {
        match r {
            Err(ConfigError::Invalid(p)) => p,
            other => panic!("expected an invalid configuration, got {other:?}"),
        }
    }

    #[test]
    fn the_example_file_matches_the_code() {
        let on_disk = std::fs::read_to_string(EXAMPLE_PATH).unwrap_or_default();
        let generated = Config::example_toml();
        if std::env::var_os("THERMO_WRITE_EXAMPLE").is_some() {
            std::fs::write(EXAMPLE_PATH, &generated).expect("writing the example");
            return;
        }
        assert!(
            on_disk == generated,
            "edge-runtime/thermo.example.toml is out of date: regenerate it with \
             `cargo run -p edge-runtime --bin thermo -- config --example > edge-runtime/thermo.example.toml`"
        );
    }

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let cfg = Config::from_toml_str(&Config::example_toml()).expect("example parses");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn every_key_of_every_section_is_documented() {
        for (name, docs, defaults) in Config::docs() {
            for key in defaults.keys() {
                assert!(
                    docs.iter().any(|d| d.key == key),
                    "{name}.{key} has no documentation line"
                );
            }
            for d in docs {
                assert!(
                    defaults.contains_key(d.key) || d.example.is_some(),
                    "{name}.{} is optional but has no example",
                    d.key
                );
            }
        }
    }

    #[test]
    fn commented_examples_of_optional_keys_parse_and_validate() {
        let mut text = String::new();
        for (name, docs, _) in Config::docs() {
            text.push_str(&format!("[{name}]\n"));
            for d in docs {
                if let Some(eg) = d.example {
                    text.push_str(&format!("{} = {eg}\n", d.key));
                }
            }
        }
        // The token example turns listening off loopback legal; the bus path must exist
        // nowhere for validation, which opens nothing.
        let cfg = Config::from_toml_str(&text).expect("examples are valid");
        assert_eq!(cfg.model.id.as_deref(), Some("smollm2"));
        assert_eq!(cfg.sensors.i2c.len(), 1);
    }

    #[test]
    fn layers_apply_in_order_defaults_file_env_cli() {
        let layers = Layers {
            file: Some((
                "[service]\nqueue_bound = 3\nworkers = 2\nlisten = \"127.0.0.1:9000\"\n".into(),
                "f".into(),
            )),
            env: vec![
                ("THERMO_SERVICE_WORKERS".into(), "4".into()),
                ("THERMO_SERVICE_LISTEN".into(), "127.0.0.1:9100".into()),
                ("THERMO_HOME".into(), "/elsewhere".into()),
                ("PATH".into(), "/bin".into()),
            ],
            cli: vec![("service.listen".into(), "127.0.0.1:9200".into())],
        };
        let cfg = Config::load(&layers).expect("valid");
        assert_eq!(cfg.service.queue_bound, 3, "file over default");
        assert_eq!(cfg.service.workers, 4, "env over file");
        assert_eq!(cfg.service.listen, "127.0.0.1:9200", "cli over env");
        assert_eq!(cfg.service.max_body_bytes, 1 << 20, "default kept");
    }

    #[test]
    fn a_numeric_looking_token_from_the_environment_stays_a_string() {
        let layers = Layers {
            env: vec![("THERMO_SERVICE_API_TOKEN".into(), "1234567890".into())],
            ..Layers::default()
        };
        let cfg = Config::load(&layers).expect("valid");
        assert_eq!(cfg.service.api_token.as_deref(), Some("1234567890"));
        assert!(!cfg.to_toml_redacted().contains("1234567890"));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key_path() {
        let text = "[service]\nworkers = 0\nqueue_bound = \"many\"\nlisten = \"nowhere\"\nbogus = 1\n\
                    [model]\nthreads = 0\nformat = \"q8\"\n[governor]\nsetpoint_c = 500.0\n\
                    [sensors]\ntime_scale = -1.0\n[telemetryy]\nx = 1\n";
        let found = problems(Config::from_toml_str(text));
        let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "service.queue_bound",
            "service.bogus",
            "telemetryy",
            "model.threads",
            "model.format",
            "governor.setpoint_c",
            "sensors",
        ] {
            assert!(paths.contains(&want), "{want} missing from {found:?}");
        }
        // Range problems of the same section as a type error are in the same report.
        assert!(paths.contains(&"service.workers"), "{found:?}");
        assert!(paths.contains(&"service.listen"), "{found:?}");
    }

    #[test]
    fn connection_and_prompt_limits_out_of_range_are_reported_by_key() {
        let text = "[service]\nheader_timeout_s = 0.0\nidle_timeout_s = inf\n\
                    max_connections = 0\nmax_prompt_tokens = 0\nallowed_hosts = [\"\"]\n\
                    allowed_origins = [\"http://a b\"]\n";
        let found = problems(Config::from_toml_str(text));
        let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "service.header_timeout_s",
            "service.idle_timeout_s",
            "service.max_connections",
            "service.max_prompt_tokens",
            "service.allowed_hosts",
            "service.allowed_origins",
        ] {
            assert!(paths.contains(&want), "{want} missing from {found:?}");
        }
        let cap = ServiceConfig::default().connection_cap();
        assert!((8..=16_384).contains(&cap), "{cap}");
    }

    #[test]
    fn listening_off_loopback_needs_a_token() {
        let found = problems(Config::from_toml_str(
            "[service]\nlisten = \"0.0.0.0:8080\"\n",
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "service.listen");
        let ok = Config::from_toml_str(
            "[service]\nlisten = \"0.0.0.0:8080\"\napi_token = \"s3cret-token\"\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn environment_names_map_to_key_paths() {
        assert_eq!(
            env_key("THERMO_SERVICE_QUEUE_BOUND").as_deref(),
            Some("service.queue_bound")
        );
        assert_eq!(
            env_key("THERMO_GOVERNOR_SETPOINT_C").as_deref(),
            Some("governor.setpoint_c")
        );
        assert_eq!(env_key("THERMO_HOME"), None);
        assert_eq!(env_key("THERMO_SERVICE_"), None);
        assert_eq!(env_key("HOME"), None);
    }

    #[test]
    fn a_syntax_error_names_the_file() {
        let r = Config::load(&Layers {
            file: Some(("[service\n".into(), "/etc/thermo/thermo.toml".into())),
            ..Layers::default()
        });
        match r {
            Err(ConfigError::Syntax { origin, .. }) => {
                assert_eq!(origin, "/etc/thermo/thermo.toml")
            }
            other => panic!("{other:?}"),
        }
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|v| v.to_string()),
                any::<f64>().prop_map(|v| format!("{v:?}")),
                any::<bool>().prop_map(|v| v.to_string()),
                "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
                Just("[1, \"a\"]".to_string()),
                Just("{ a = 1 }".to_string()),
            ]
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("listen".to_string()),
                Just("workers".to_string()),
                Just("queue_bound".to_string()),
                Just("threads".to_string()),
                Just("setpoint_c".to_string()),
                Just("time_scale".to_string()),
                Just("i2c".to_string()),
                "[a-z_]{1,10}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
                let _ = Config::from_toml_str(&text);
            }

            #[test]
            fn arbitrary_tables_are_accepted_or_reported_with_paths(
                entries in proptest::collection::vec(
                    (prop_oneof![Just("model"), Just("governor"), Just("sensors"), Just("service"), Just("other")], key(), value()),
                    0..8,
                )
            ) {
                let mut text = String::new();
                for (section, key, value) in &entries {
                    text.push_str(&format!("[{section}]\n{key} = {value}\n"));
                }
                match Config::from_toml_str(&text) {
                    Ok(cfg) => prop_assert!(Config::from_toml_str(&toml::to_string(&cfg).unwrap_or_default()).is_ok()),
                    Err(ConfigError::Invalid(list)) => {
                        prop_assert!(!list.is_empty());
                        for p in list {
                            prop_assert!(!p.path.is_empty());
                        }
                    }
                    Err(ConfigError::Syntax { .. }) => {}
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
        }
    }
}
