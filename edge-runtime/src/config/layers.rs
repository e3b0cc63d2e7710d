//! The layers under the configuration (defaults < file < `THERMO_*` environment < `--set`)
//! merged as TOML tables, each section then built key by key so that every bad key is
//! reported, and the command line's typed flags put on top before the checks run.

use std::path::Path;

use super::{Config, ConfigError, DEFAULT_CONFIG_PATH, ENV_PREFIX, Problems, SECTIONS, Section};

/// The section's default values as a TOML table (unset options are absent).
pub(super) fn default_table<S: Section>() -> toml::Table {
    match toml::Value::try_from(S::default()) {
        Ok(toml::Value::Table(t)) => t,
        // A section whose default does not serialise to a table is a programming error that
        // the example-file test catches; an empty table keeps the layering going.
        _ => toml::Table::new(),
    }
}

pub(super) fn probe<S: Section>(key: &str, value: &toml::Value) -> bool {
    let mut t = default_table::<S>();
    t.insert(key.to_string(), value.clone());
    toml::Value::Table(t).try_into::<S>().is_ok()
}

/// Builds section `S` from the merged layers. Each key is tried alone on top of the defaults,
/// so every unknown key and every mistyped value is reported, not just the first; the
/// section is then built from its valid keys, so its range checks still run on them.
pub(super) fn section_from<S: Section>(merged: &toml::Table, p: &mut Problems) -> S {
    let table = match merged.get(S::NAME) {
        None => return S::default(),
        Some(toml::Value::Table(t)) => t.clone(),
        Some(other) => {
            p.push(
                S::NAME,
                format!("must be a table, got a {}", other.type_str()),
            );
            return S::default();
        }
    };
    let mut good = default_table::<S>();
    for (key, value) in table {
        let mut probe = good.clone();
        probe.insert(key.clone(), value.clone());
        match toml::Value::Table(probe).try_into::<S>() {
            Ok(_) => {
                good.insert(key, value);
            }
            Err(e) => p.push(format!("{}.{key}", S::NAME), first_line(&e.to_string())),
        }
    }
    match toml::Value::Table(good).try_into::<S>() {
        Ok(s) => s,
        Err(e) => {
            p.push(S::NAME, first_line(&e.to_string()));
            S::default()
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(s)
        .to_string()
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Sets a dotted `path` to `value` in `table`, creating tables on the way.
fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().filter(|l| !l.is_empty()).ok_or("empty key")?;
    let mut cur = table;
    for part in parts {
        if part.is_empty() {
            return Err("empty key segment".into());
        }
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("{part} is not a table")),
        };
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

/// Reads a raw override value: a TOML literal (`8`, `true`, `"x"`, `[1, 2]`) when it parses as
/// one, else the text itself as a string. A key whose current value is a string takes the
/// raw text unless it is a quoted TOML string, so `THERMO_SERVICE_API_TOKEN=12345678` stays
/// a string.
fn parse_override(current: Option<&toml::Value>, raw: &str) -> toml::Value {
    let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    match (current, parsed) {
        (Some(toml::Value::String(_)), Some(v @ toml::Value::String(_))) => v,
        (Some(toml::Value::String(_)), _) => toml::Value::String(raw.to_string()),
        (_, Some(v)) => v,
        (_, None) => toml::Value::String(raw.to_string()),
    }
}

fn lookup<'a>(table: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut parts = path.split('.');
    let mut cur = table.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_table()?.get(part)?;
    }
    Some(cur)
}

/// Where the layers come from; [`Config::load`] applies them in field order.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// The configuration file's text and its name for messages; `None`: no file.
    pub file: Option<(String, String)>,
    /// Environment variables (name, value); only `THERMO_<SECTION>_<KEY>` ones are used.
    pub env: Vec<(String, String)>,
    /// `--set section.key=value` overrides as (`section.key`, raw value).
    pub cli: Vec<(String, String)>,
}

impl Layers {
    /// The file at `path` (`None`: [`DEFAULT_CONFIG_PATH`] when it exists, else no file),
    /// the process environment, and `cli`.
    pub fn from_process(
        path: Option<&Path>,
        cli: Vec<(String, String)>,
    ) -> Result<Self, ConfigError> {
        let file = match path {
            Some(p) => Some(read_file(p)?),
            None => {
                let p = Path::new(DEFAULT_CONFIG_PATH);
                if p.is_file() {
                    Some(read_file(p)?)
                } else {
                    None
                }
            }
        };
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Ok(Layers { file, env, cli })
    }
}

fn read_file(path: &Path) -> Result<(String, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    Ok((text, path.display().to_string()))
}

/// The key path an environment variable names, when it names one:
/// `THERMO_SERVICE_QUEUE_BOUND` → `service.queue_bound`. Variables of other programs' or
/// other modules' (`THERMO_HOME`) do not start with a section name and are ignored.
pub fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
    SECTIONS.iter().find_map(|section| {
        let key = rest.strip_prefix(section)?.strip_prefix('_')?;
        (!key.is_empty()).then(|| format!("{section}.{key}"))
    })
}

impl Config {
    /// Applies the layers over the defaults and checks the result; every problem is in the
    /// error, each with its key path.
    pub fn load(layers: &Layers) -> Result<Config, ConfigError> {
        Config::load_with(layers, |_| {})
    }

    /// Applies the layers over the defaults, then `flags` (the command line's typed values,
    /// which win over every layer), and checks the result; every problem is in the error,
    /// each with its key path.
    pub fn load_with(
        layers: &Layers,
        flags: impl FnOnce(&mut Config),
    ) -> Result<Config, ConfigError> {
        let mut merged = toml::Table::new();
        for (name, _, table) in Config::docs() {
            merged.insert(name.to_string(), toml::Value::Table(table));
        }
        let mut p = Problems::default();
        if let Some((text, origin)) = &layers.file {
            let file: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
                origin: origin.clone(),
                message: first_line(&e.to_string()),
            })?;
            for key in file.keys() {
                if !SECTIONS.contains(&key.as_str()) {
                    p.push(
                        key.clone(),
                        format!("unknown section (known: {})", SECTIONS.join(", ")),
                    );
                }
            }
            merge(&mut merged, file);
        }
        let overrides = layers
            .env
            .iter()
            .filter_map(|(k, v)| Some((env_key(k)?, v.clone(), k.clone())))
            .chain(
                layers
                    .cli
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone(), k.clone())),
            );
        for (path, raw, origin) in overrides {
            // A problem is listed under its key path: name the source only when it differs
            // (an environment variable), so a `--set` key is not said twice.
            let from = if origin == path {
                String::new()
            } else {
                format!("{origin}: ")
            };
            if !SECTIONS.contains(&path.split('.').next().unwrap_or_default()) {
                p.push(
                    path.clone(),
                    format!("{from}unknown section (known: {})", SECTIONS.join(", ")),
                );
                continue;
            }
            let mut value = parse_override(lookup(&merged, &path), &raw);
            // An optional string key has no default to say it is a string: a raw value that
            // parsed as a number or boolean is taken as text when only text fits.
            if !value.is_str()
                && let Some((section, key)) = path.split_once('.')
                && !Config::accepts(section, key, &value)
                && Config::accepts(section, key, &toml::Value::String(raw.clone()))
            {
                value = toml::Value::String(raw.clone());
            }
            if let Err(e) = set_path(&mut merged, &path, value) {
                p.push(path.clone(), format!("{from}{e}"));
            }
        }
        merged.retain(|k, _| SECTIONS.contains(&k));
        let mut config = Config::from_layers(&merged, &mut p);
        flags(&mut config);
        config.check_all(&mut p);
        if p.list().is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(p.into_list()))
        }
    }

    /// Parses a configuration file's text on top of the defaults (no environment, no flags).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::load(&Layers {
            file: Some((text.to_string(), "config".into())),
            ..Layers::default()
        })
    }
}
