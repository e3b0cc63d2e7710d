//! A CodeCarbon-compatible `emissions.csv`: CodeCarbon's columns in CodeCarbon's order and
//! units (duration s, emissions kg CO2e, emissions_rate kg/s, power W, energy kWh) so
//! dashboards that read its files read ours, followed by columns CodeCarbon does not have
//! (energy source, tokens, water, pollutants, wear, embodied carbon, carbon range). Columns
//! whose meaning has no equivalent here (python_version, cloud, GPU, coordinates) are empty.
//! Rows are appended; a file with another header is refused rather than corrupted.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::config::Factors;
use super::footprint::{Footprint, J_PER_KWH};

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
        .copied()
        .collect::<Vec<_>>()
        .join(",")
}

/// One row for `fp` under `factors`.
pub fn row(info: &RunInfo, fp: &Footprint, factors: &Factors) -> String {
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
    cells.join(",")
}

/// Appends a row to `path`, writing the header first when the file is new or empty.
pub fn append(
    path: &Path,
    info: &RunInfo,
    fp: &Footprint,
    factors: &Factors,
) -> Result<(), CsvError> {
    let io = |cause| CsvError::Io {
        path: path.display().to_string(),
        cause,
    };
    if let Some((figure, value)) = fp.non_finite() {
        return Err(CsvError::NonFinite {
            path: path.display().to_string(),
            figure,
            value,
        });
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let needs_header = match existing.as_deref().and_then(|t| t.lines().next()) {
        Some(first) if first == header() => false,
        Some(_) => {
            return Err(CsvError::HeaderMismatch {
                path: path.display().to_string(),
            });
        }
        None => true,
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
    text.push_str(&row(info, fp, factors));
    text.push('\n');
    f.write_all(text.as_bytes()).map_err(io)
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
}
