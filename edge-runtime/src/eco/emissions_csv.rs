//! A CodeCarbon-compatible `emissions.csv`: CodeCarbon's columns in CodeCarbon's order and
//! units (duration s, emissions kg CO2e, emissions_rate kg/s, power W, energy kWh) so
//! dashboards that read its files read ours, followed by columns CodeCarbon does not have
//! (energy source, tokens, water, pollutants, wear, embodied carbon, carbon range), then the
//! hidden layers' columns (memory, declared upstream, waste; empty where a layer does not
//! apply or nothing is declared). Columns whose meaning has no equivalent here
//! (python_version, cloud, GPU, coordinates) are empty. Rows are appended; a file written
//! before the layer columns existed (its header a leading part of ours) gets rows cut to its
//! columns; a file with another header is refused rather than corrupted.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::config::Factors;
use super::footprint::{Footprint, J_PER_KWH};
use super::layers::Layers;

/// CodeCarbon's columns, in its order.
pub const CODECARBON_COLUMNS: [&str; 31] = [
    "timestamp",
    "project_name",
    "run_id",
    "duration",
    "emissions",
    "emissions_rate",
    "cpu_power",
    "gpu_power",
    "ram_power",
    "cpu_energy",
    "gpu_energy",
    "ram_energy",
    "energy_consumed",
    "country_name",
    "country_iso_code",
    "region",
    "cloud_provider",
    "cloud_region",
    "os",
    "python_version",
    "codecarbon_version",
    "cpu_count",
    "cpu_model",
    "gpu_count",
    "gpu_model",
    "longitude",
    "latitude",
    "ram_total_size",
    "tracking_mode",
    "on_cloud",
    "pue",
];

/// Columns of ours after CodeCarbon's.
pub const EXTRA_COLUMNS: [&str; 12] = [
    "energy_source",
    "tokens",
    "wh_per_token",
    "emissions_low",
    "emissions_high",
    "embodied_emissions",
    "water_ml",
    "nox_mg",
    "so2_mg",
    "pm25_mg",
    "wear_hours",
    "wear_reference_c",
];

/// The hidden layers' columns, after [`EXTRA_COLUMNS`]: memory (J, tokens, bytes; emissions
/// in kg CO2e like CodeCarbon's), the declared upstream share and wasted energy.
pub const LAYER_COLUMNS: [&str; 17] = [
    "memory_query_embed_j",
    "memory_search_j",
    "memory_extra_prompt_tokens",
    "memory_extra_prompt_j",
    "index_indexing_j",
    "index_disk_bytes",
    "index_resident_bytes",
    "storage_embodied_emissions",
    "upstream_model",
    "upstream_declared",
    "upstream_amortise_tokens",
    "upstream_training_j",
    "upstream_training_emissions",
    "upstream_teacher_j",
    "upstream_teacher_emissions",
    "wasted_j",
    "waste_kind",
];

/// Writing the file failed.
#[derive(Debug, Error)]
pub enum CsvError {
    /// The file exists with another header.
    #[error("{path} has a different header; not appending to it")]
    HeaderMismatch {
        /// The file.
        path: String,
    },
    /// A figure of the row is not a finite number; nothing was written.
    #[error("{path}: {figure} is not finite ({value}); row not written")]
    NonFinite {
        /// The file.
        path: String,
        /// The figure's name.
        figure: &'static str,
        /// Its value.
        value: f64,
    },
    /// I/O.
    #[error("writing {path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        cause: std::io::Error,
    },
}

/// One row's identity.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// CodeCarbon's `project_name`.
    pub project_name: String,
    /// CodeCarbon's `run_id` (a UUID).
    pub run_id: String,
    /// When the run ended.
    pub end: SystemTime,
}

impl RunInfo {
    /// A run of `project_name` ending now, with a fresh random UUID.
    pub fn now(project_name: &str) -> Self {
        RunInfo {
            project_name: project_name.to_string(),
            run_id: random_uuid(),
            end: SystemTime::now(),
        }
    }
}

/// A random (version 4) UUID string.
pub fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC, CodeCarbon's timestamp format.
pub fn iso8601_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The header line.
pub fn header() -> String {
    CODECARBON_COLUMNS
        .iter()
        .chain(EXTRA_COLUMNS.iter())
        .chain(LAYER_COLUMNS.iter())
        .copied()
        .collect::<Vec<_>>()
        .join(",")
}

/// One row for `fp` under `factors`, its layer columns empty.
pub fn row(info: &RunInfo, fp: &Footprint, factors: &Factors) -> String {
    row_with_layers(info, fp, &Layers::default(), factors)
}

/// The layer cells of a row, in [`LAYER_COLUMNS`] order.
fn layer_cells(layers: &Layers) -> Vec<String> {
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
    let kg = |v: Option<f64>| v.map_or(String::new(), |v| format!("{:e}", v / 1000.0));
    let m = layers.memory.as_ref();
    let i = m.and_then(|m| m.index.as_ref());
    let u = layers.upstream.as_ref();
    let w = layers.waste.as_ref();
    vec![
        num(m.map(|m| m.query_embed_j)),
        num(m.map(|m| m.search_j)),
        m.map_or(String::new(), |m| m.extra_prompt_tokens.to_string()),
        num(m.map(|m| m.extra_prompt_j)),
        num(i.map(|i| i.indexing_j)),
        i.map_or(String::new(), |i| i.disk_bytes.to_string()),
        i.map_or(String::new(), |i| i.resident_bytes.to_string()),
        kg(m.map(|m| m.storage_embodied_g_co2e)),
        u.map_or(String::new(), |u| field(&u.model)),
        u.map_or(String::new(), |u| if u.declared { "Y" } else { "N" }.into()),
        num(u.map(|u| u.amortise_tokens)),
        num(u.and_then(|u| u.training_j)),
        kg(u.and_then(|u| u.training_g_co2e)),
        num(u.and_then(|u| u.teacher_j)),
        kg(u.and_then(|u| u.teacher_g_co2e)),
        num(w.map(|w| w.energy_j)),
        w.map_or(String::new(), |w| w.kind.as_str().into()),
    ]
}

/// One row for `fp` and its hidden `layers` under `factors`.
pub fn row_with_layers(
    info: &RunInfo,
    fp: &Footprint,
    layers: &Layers,
    factors: &Factors,
) -> String {
    let kg = fp.g_co2e / 1000.0;
    let kwh = fp.energy_j / J_PER_KWH;
    let rate = if fp.duration_s > 0.0 {
        kg / fp.duration_s
    } else {
        0.0
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cells: Vec<String> = vec![
        iso8601_utc(info.end),
        field(&info.project_name),
        info.run_id.clone(),
        format!("{}", fp.duration_s),
        format!("{kg:e}"),
        format!("{rate:e}"),
        format!("{}", fp.mean_power_w()),
        "0".into(),
        "0".into(),
        format!("{kwh:e}"),
        "0".into(),
        "0".into(),
        format!("{kwh:e}"),
        field(&factors.region_name),
        factors.region_iso3.clone(),
        String::new(),
        String::new(),
        String::new(),
        field(&format!(
            "{}-{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        )),
        String::new(),
        String::new(),
        format!("{cores}"),
        String::new(),
        "0".into(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        "process".into(),
        "N".into(),
        format!("{}", factors.pue),
        field(&fp.energy_source),
        format!("{}", fp.tokens),
        format!("{:e}", fp.wh_per_token()),
        format!("{:e}", fp.g_co2e_low / 1000.0),
        format!("{:e}", fp.g_co2e_high / 1000.0),
        format!("{:e}", fp.embodied_g_co2e / 1000.0),
        format!("{}", fp.water_ml),
        format!("{}", fp.nox_mg),
        format!("{}", fp.so2_mg),
        format!("{}", fp.pm25_mg),
        format!("{}", fp.wear_hours),
        format!("{}", fp.wear_reference_c),
    ];
    let mut cells = cells;
    cells.extend(layer_cells(layers));
    cells.join(",")
}

/// How many columns a file with header `first` takes: all of ours for our header, fewer for
/// the header of a file written before the later columns existed (a leading part of ours
/// that ends at a group boundary), `None` for anything else.
fn columns_of(first: &str) -> Option<usize> {
    let ours = header();
    if first == ours {
        return Some(ours.split(',').count());
    }
    let older = CODECARBON_COLUMNS.len() + EXTRA_COLUMNS.len();
    (ours.split(',').take(older).collect::<Vec<_>>().join(",") == first).then_some(older)
}

/// Appends a row to `path`, writing the header first when the file is new or empty.
pub fn append(
    path: &Path,
    info: &RunInfo,
    fp: &Footprint,
    factors: &Factors,
) -> Result<(), CsvError> {
    append_with_layers(path, info, fp, &Layers::default(), factors)
}

/// Appends a row with the hidden `layers` to `path`, writing the header first when the file
/// is new or empty; a file of an earlier header gets the row cut to its columns.
pub fn append_with_layers(
    path: &Path,
    info: &RunInfo,
    fp: &Footprint,
    layers: &Layers,
    factors: &Factors,
) -> Result<(), CsvError> {
    let io = |cause| CsvError::Io {
        path: path.display().to_string(),
        cause,
    };
    if let Some((figure, value)) = fp.non_finite().or_else(|| layers.non_finite()) {
        return Err(CsvError::NonFinite {
            path: path.display().to_string(),
            figure,
            value,
        });
    }
    let existing = match first_line(path) {
        Ok(line) => Some(line),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let (needs_header, columns) = match existing.as_deref().filter(|l| !l.is_empty()) {
        Some(first) => match columns_of(first) {
            Some(n) => (false, n),
            None => {
                return Err(CsvError::HeaderMismatch {
                    path: path.display().to_string(),
                });
            }
        },
        None => (true, usize::MAX),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let mut text = String::new();
    if needs_header {
        text.push_str(&header());
        text.push('\n');
    }
    let row = row_with_layers(info, fp, layers, factors);
    if columns == usize::MAX {
        text.push_str(&row);
    } else {
        // Quoted cells may hold commas: the cut counts only the commas between cells.
        text.push_str(&first_cells(&row, columns));
    }
    text.push('\n');
    f.write_all(text.as_bytes()).map_err(io)
}

/// Longest header line read back from an existing file.
const MAX_HEADER_BYTES: u64 = 64 << 10;

/// The file's first line (without its line break), read no further than
/// [`MAX_HEADER_BYTES`]: the file grows by a row per answer and is never read whole.
fn first_line(path: &Path) -> std::io::Result<String> {
    use std::io::{BufRead as _, Read as _};
    let file = std::fs::File::open(path)?;
    let mut line = Vec::new();
    std::io::BufReader::new(file)
        .take(MAX_HEADER_BYTES)
        .read_until(b'\n', &mut line)?;
    let text = String::from_utf8_lossy(&line);
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// The first `n` cells of a CSV `row` (commas inside quotes do not split).
fn first_cells(row: &str, n: usize) -> String {
    let mut quoted = false;
    let mut seen = 0;
    for (i, c) in row.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                seen += 1;
                if seen == n {
                    return row[..i].to_string();
                }
            }
            _ => {}
        }
    }
    row.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps_like_codecarbon() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_721_404_663);
        assert_eq!(iso8601_utc(t), "2024-07-19T15:57:43");
        assert_eq!(iso8601_utc(UNIX_EPOCH), "1970-01-01T00:00:00");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(iso8601_utc(leap), "2000-02-29T00:00:00");
    }

    #[test]
    fn uuids_are_version_four() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert_ne!(u, random_uuid());
    }

    #[test]
    fn a_row_with_a_non_finite_figure_is_refused_and_the_file_left_alone()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("emissions.csv");
        let f = Factors::default();
        let good = f.footprint(36.0, "t", 1.0, 1, 0.0);
        append(&path, &RunInfo::now("thermo"), &good, &f)?;
        let before = std::fs::read(&path)?;
        let bad = Footprint {
            embodied_g_co2e: f64::INFINITY,
            ..good
        };
        let err = append(&path, &RunInfo::now("thermo"), &bad, &f).err();
        assert!(matches!(
            err,
            Some(CsvError::NonFinite {
                figure: "embodied_g_co2e",
                ..
            })
        ));
        assert_eq!(std::fs::read(&path)?, before);
        Ok(())
    }

    #[test]
    fn appends_rows_under_one_codecarbon_header_with_codecarbon_units()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("out/emissions.csv");
        let f = Factors::default();
        // 36 kJ over 1 h: 0.01 kWh, 4.73 g = 0.00473 kg, 10 W.
        let fp = f.footprint(36_000.0, "power sensor board_power", 3600.0, 1000, 0.0);
        append(&path, &RunInfo::now("thermo"), &fp, &f)?;
        append(&path, &RunInfo::now("thermo"), &fp, &f)?;
        let text = std::fs::read_to_string(&path)?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let cols: Vec<&str> = lines[0].split(',').collect();
        assert_eq!(&cols[..31], &CODECARBON_COLUMNS[..]);
        let cells: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(cells.len(), cols.len());
        let get = |name: &str| -> f64 {
            let i = cols.iter().position(|c| *c == name).unwrap_or(usize::MAX);
            cells
                .get(i)
                .and_then(|c| c.parse().ok())
                .unwrap_or(f64::NAN)
        };
        assert!((get("emissions") - 0.00473).abs() < 1e-12);
        assert!((get("energy_consumed") - 0.01).abs() < 1e-12);
        assert!((get("cpu_power") - 10.0).abs() < 1e-9);
        assert!((get("duration") - 3600.0).abs() < 1e-9);
        assert!((get("pue") - 1.0).abs() < 1e-12);
        assert_eq!(cells[13], "World");

        std::fs::write(&path, "a,b\n")?;
        assert!(matches!(
            append(&path, &RunInfo::now("thermo"), &fp, &f),
            Err(CsvError::HeaderMismatch { .. })
        ));
        Ok(())
    }

    #[test]
    fn layer_columns_follow_ours_and_are_empty_without_layers()
    -> Result<(), Box<dyn std::error::Error>> {
        use crate::eco::layers::{UpstreamSettings, Waste, WasteKind};
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("emissions.csv");
        let f = Factors::default();
        let fp = f.footprint(36.0, "t", 1.0, 10, 0.0);
        append(&path, &RunInfo::now("thermo"), &fp, &f)?;
        let layers = Layers {
            upstream: Some(
                UpstreamSettings {
                    amortise_tokens: 1e9,
                    ..UpstreamSettings::default()
                }
                .resolve("llama-2-13b")
                .share(10),
            ),
            waste: Some(Waste::of_run(&fp, WasteKind::TrainingFailed, 1.0)),
            ..Layers::default()
        };
        append_with_layers(&path, &RunInfo::now("thermo, test"), &fp, &layers, &f)?;
        let text = std::fs::read_to_string(&path)?;
        let lines: Vec<&str> = text.lines().collect();
        let cols: Vec<&str> = lines[0].split(',').collect();
        let n = CODECARBON_COLUMNS.len() + EXTRA_COLUMNS.len();
        assert_eq!(&cols[n..], &LAYER_COLUMNS[..]);
        let plain: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(plain.len(), cols.len());
        assert!(plain[n..].iter().all(|c| c.is_empty()), "{}", lines[1]);
        let cells: Vec<&str> = lines[2].split(',').collect();
        // The quoted project name holds a comma: one more split piece.
        assert_eq!(cells.len(), cols.len() + 1);
        let get = |name: &str| {
            cols.iter()
                .position(|c| *c == name)
                .and_then(|i| cells.get(i + 1))
                .copied()
                .unwrap_or("?")
        };
        assert_eq!(get("upstream_model"), "Llama 2 13B");
        assert_eq!(get("upstream_declared"), "Y");
        assert_eq!(get("waste_kind"), "training_failed");
        // 62.44 t over 1e9 tokens x 10 = 0.6244 g = 6.244e-4 kg.
        let kg: f64 = get("upstream_training_emissions").parse()?;
        assert!((kg - 6.244e-4).abs() < 1e-12, "{kg}");
        assert_eq!(get("memory_search_j"), "");
        Ok(())
    }

    #[test]
    fn a_file_with_the_header_before_the_layer_columns_keeps_its_width()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("emissions.csv");
        let old: Vec<&str> = CODECARBON_COLUMNS
            .iter()
            .chain(EXTRA_COLUMNS.iter())
            .copied()
            .collect();
        std::fs::write(&path, format!("{}\n", old.join(",")))?;
        let f = Factors::default();
        let fp = f.footprint(36.0, "power sensor, board", 1.0, 1, 0.0);
        append_with_layers(&path, &RunInfo::now("a,b"), &fp, &Layers::default(), &f)?;
        let text = std::fs::read_to_string(&path)?;
        let row = text.lines().nth(1).unwrap_or_default();
        assert!(row.ends_with(&format!(",{}", fp.wear_reference_c)), "{row}");
        assert_eq!(first_cells("a,\"b,c\",d", 2), "a,\"b,c\"");
        Ok(())
    }
}
