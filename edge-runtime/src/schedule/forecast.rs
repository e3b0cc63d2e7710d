//! Hourly forecasts the planner reads: grid carbon intensity (g CO2e/kWh) and ambient
//! temperature (°C), from CSV files in the layout of the published hourly data sets (a time
//! column, then value columns; a header names them). Times are RFC 3339 (`2026-12-02T06:00Z`,
//! `+01:00`), a civil date-time taken as UTC (`2026-12-02 06:00:00`), or Unix seconds. Each
//! file is read under a size bound, and a row that does not parse is an error naming its
//! line, never a silent zero.

use std::collections::BTreeMap;
use std::path::Path;

use thiserror::Error;

use super::plan::{HOUR_S, Hour};

/// Largest forecast file read (a year of hourly rows in a wide layout fits many times over).
pub const MAX_FORECAST_BYTES: u64 = 16 << 20;

/// Why a forecast could not be read.
#[derive(Debug, Error)]
pub enum ForecastError {
    /// The file could not be read.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The file is larger than [`MAX_FORECAST_BYTES`].
    #[error("{path}: {bytes} bytes, more than the {MAX_FORECAST_BYTES} a forecast may take")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        bytes: u64,
    },
    /// A row or the header is not what a forecast holds.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Parses a time: RFC 3339 with an offset, a civil date-time (UTC), a date (UTC midnight),
/// or Unix seconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let t = text.trim().trim_matches('"');
    if let Ok(secs) = t.parse::<i64>() {
        return Ok(secs);
    }
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts.as_second());
    }
    if let Ok(dt) = t.parse::<jiff::civil::DateTime>() {
        return jiff::tz::TimeZone::UTC
            .to_timestamp(dt)
            .map(|ts| ts.as_second())
            .map_err(|e| format!("{t:?}: {e}"));
    }
    if let Ok(d) = t.parse::<jiff::civil::Date>() {
        return jiff::tz::TimeZone::UTC
            .to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
            .map(|ts| ts.as_second())
            .map_err(|e| format!("{t:?}: {e}"));
    }
    Err(format!(
        "{t:?} is not a time (RFC 3339 such as 2026-12-02T06:00:00Z, a UTC date-time such as \
         2026-12-02 06:00, or Unix seconds)"
    ))
}

/// The text of a forecast file, refused above [`MAX_FORECAST_BYTES`] before it is read (and
/// never read past the bound if it grows meanwhile).
pub fn read_bounded(path: &Path) -> Result<String, ForecastError> {
    use std::io::Read as _;
    let shown = path.display().to_string();
    let io = |cause| ForecastError::Io {
        path: shown.clone(),
        cause,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let bytes = file.metadata().map_err(io)?.len();
    if bytes > MAX_FORECAST_BYTES {
        return Err(ForecastError::TooLarge { path: shown, bytes });
    }
    let mut text = String::new();
    file.take(MAX_FORECAST_BYTES)
        .read_to_string(&mut text)
        .map_err(io)?;
    Ok(text)
}

/// Hourly values of one quantity, by the hour's start (Unix seconds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    values: BTreeMap<i64, f64>,
}

impl Series {
    /// A series from `(time, value)` pairs; each time falls into its hour, and values of one
    /// hour are averaged.
    pub fn from_points(points: impl IntoIterator<Item = (i64, f64)>) -> Self {
        let mut sums: BTreeMap<i64, (f64, u32)> = BTreeMap::new();
        for (t, v) in points {
            let e = sums.entry(t.div_euclid(HOUR_S) * HOUR_S).or_default();
            e.0 += v;
            e.1 += 1;
        }
        Series {
            values: sums
                .into_iter()
                .map(|(h, (s, n))| (h, s / f64::from(n)))
                .collect(),
        }
    }

    /// Reads the column of `file` whose header contains one of `names` (case-insensitive;
    /// the first match in `names` order wins), else the second column; the first column is
    /// the time.
    pub fn read_csv(path: &Path, names: &[&str]) -> Result<Series, ForecastError> {
        let text = read_bounded(path)?;
        Self::parse_csv(&text, names).map_err(|(line, message)| ForecastError::Invalid {
            path: path.display().to_string(),
            line,
            message,
        })
    }

    /// [`Series::read_csv`] on text; errors give the 1-based line.
    pub fn parse_csv(text: &str, names: &[&str]) -> Result<Series, (usize, String)> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
        let Some((hl, header)) = lines.next() else {
            return Err((1, "no header".into()));
        };
        let cols: Vec<String> = header.split(',').map(|c| c.trim().to_lowercase()).collect();
        if cols.len() < 2 {
            return Err((
                hl + 1,
                "a forecast needs a time column and a value column".into(),
            ));
        }
        let col = names
            .iter()
            .find_map(|n| {
                cols.iter()
                    .skip(1)
                    .position(|c| c.contains(n))
                    .map(|i| i + 1)
            })
            .unwrap_or(1);
        let mut points = vec![];
        for (i, line) in lines {
            let cells: Vec<&str> = line.split(',').collect();
            let (Some(t), Some(v)) = (cells.first(), cells.get(col)) else {
                return Err((i + 1, format!("no column {} ({})", col + 1, cols[col])));
            };
            let t = parse_time(t).map_err(|e| (i + 1, e))?;
            let v: f64 = v
                .trim()
                .trim_matches('"')
                .parse()
                .map_err(|_| (i + 1, format!("{:?} is not a number", v.trim())))?;
            if !v.is_finite() {
                return Err((i + 1, format!("{v} is not a finite number")));
            }
            points.push((t, v));
        }
        if points.is_empty() {
            return Err((hl + 1, "no rows after the header".into()));
        }
        Ok(Series::from_points(points))
    }

    /// The value for the hour holding `t_s`, else the nearest earlier hour's, else the first.
    pub fn at(&self, t_s: i64) -> Option<f64> {
        let hour = t_s.div_euclid(HOUR_S) * HOUR_S;
        self.values
            .range(..=hour)
            .next_back()
            .or_else(|| self.values.iter().next())
            .map(|(_, v)| *v)
    }

    /// The first and last hour covered.
    pub fn span(&self) -> Option<(i64, i64)> {
        Some((
            *self.values.keys().next()?,
            *self.values.keys().next_back()?,
        ))
    }

    /// Number of hours with a value.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True without any value.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The same values shifted by `by_s` seconds (a recorded week replayed as a forecast).
    pub fn shifted(&self, by_s: i64) -> Series {
        Series {
            values: self.values.iter().map(|(t, v)| (t + by_s, *v)).collect(),
        }
    }
}

/// Where the planner's hourly figures come from: each a series, or a constant.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Hourly values.
    Hourly(Series),
    /// One value for every hour (the region's constant factor, or the ambient now).
    Constant(f64),
}

impl Source {
    /// The value at `t_s`.
    pub fn at(&self, t_s: i64) -> f64 {
        match self {
            Source::Hourly(s) => s.at(t_s).unwrap_or(f64::NAN),
            Source::Constant(v) => *v,
        }
    }
}

/// Most hours [`hours`] lays out: a year, whatever deadline it is given.
pub const MAX_HOURS: usize = 24 * 366;

/// The hours from the one holding `from_s` up to `to_s` (at most [`MAX_HOURS`]), with grid
/// intensity and ambient.
pub fn hours(grid: &Source, ambient: &Source, from_s: i64, to_s: i64) -> Vec<Hour> {
    let first = from_s.div_euclid(HOUR_S) * HOUR_S;
    (0..MAX_HOURS as i64)
        .map(|i| first + i * HOUR_S)
        .take_while(|&t| t < to_s)
        .map(|t| Hour {
            start_s: t,
            g_per_kwh: grid.at(t),
            ambient_c: ambient.at(t),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_the_forms_data_sets_use() {
        let t = 1_764_655_200; // 2025-12-02T06:00:00Z
        for text in [
            "2025-12-02T06:00:00Z",
            "2025-12-02T07:00:00+01:00",
            "2025-12-02 06:00:00",
            "2025-12-02T06:00",
            "1764655200",
            "\"2025-12-02T06:00:00Z\"",
        ] {
            assert_eq!(parse_time(text), Ok(t), "{text}");
        }
        assert_eq!(parse_time("2025-12-02"), Ok(t - 6 * 3600));
        let err = parse_time("yesterday").err().unwrap_or_default();
        assert!(err.contains("not a time"), "{err}");
    }

    #[test]
    fn the_named_column_is_read_and_hours_are_averaged() {
        let csv = "Datetime (UTC),Zone,Carbon Intensity gCO2eq/kWh (direct),Carbon Intensity \
                   gCO2eq/kWh (LCA)\n\
                   2025-01-01 00:00:00,DE,300,350\n\
                   2025-01-01 00:30:00,DE,310,370\n\
                   2025-01-01 01:00:00,DE,200,250\n";
        let s = Series::parse_csv(csv, &["(lca)", "intensity"]).unwrap_or_default();
        let h0 = parse_time("2025-01-01T00:00:00Z").unwrap_or(0);
        assert_eq!(s.len(), 2);
        assert_eq!(s.at(h0 + 100), Some(360.0));
        assert_eq!(s.at(h0 + HOUR_S), Some(250.0));
        // After the last hour, the last value; before the first, the first.
        assert_eq!(s.at(h0 + 10 * HOUR_S), Some(250.0));
        assert_eq!(s.at(h0 - 10 * HOUR_S), Some(360.0));
        let plain = Series::parse_csv("time,g\n0,5\n3600,7\n", &[]).unwrap_or_default();
        assert_eq!(plain.at(3700), Some(7.0));
    }

    #[test]
    fn a_bad_row_is_an_error_with_its_line_not_a_zero() {
        for (csv, line, what) in [
            ("t,g\n0,5\n3600,\n", 3, "not a number"),
            ("t,g\n0,5\nnoon,7\n", 3, "not a time"),
            ("t,g\n0,NaN\n", 2, "finite"),
            ("t,g\n", 1, "no rows"),
            ("t\n0\n", 1, "value column"),
            ("", 1, "no header"),
        ] {
            match Series::parse_csv(csv, &[]) {
                Err((l, m)) => {
                    assert_eq!(l, line, "{csv:?}: {m}");
                    assert!(m.contains(what), "{csv:?}: {m}");
                }
                Ok(s) => panic!("{csv:?} parsed: {s:?}"),
            }
        }
    }

    #[test]
    fn a_file_over_the_bound_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("big.csv");
        let f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        f.set_len(MAX_FORECAST_BYTES + 1)
            .unwrap_or_else(|e| panic!("{e}"));
        let err = Series::read_csv(&path, &[]).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("more than")));
    }

    #[test]
    fn hours_combine_both_sources() {
        let grid = Source::Hourly(Series::from_points([(0, 100.0), (HOUR_S, 50.0)]));
        let h = hours(&grid, &Source::Constant(21.0), 1800, 3 * HOUR_S);
        assert_eq!(h.len(), 3);
        assert_eq!((h[0].start_s, h[0].g_per_kwh), (0, 100.0));
        assert_eq!((h[2].g_per_kwh, h[2].ambient_c), (50.0, 21.0));
        // A far deadline lays out a year, not an endless list.
        assert_eq!(hours(&grid, &grid, 0, i64::MAX).len(), MAX_HOURS);
    }
}
