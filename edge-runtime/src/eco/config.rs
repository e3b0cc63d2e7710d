//! The eco settings, one type for the `[eco]` section of the configuration file (flat keys;
//! `crate::config` documents and checks it): region, site, diesel backup share, wear model
//! and board, with every factor of [`super::factors`] overridable, plus the `emissions.csv`
//! row, the budgets, the guard and the agent-loop detector. [`EcoConfig::resolve`] checks the
//! factor settings at once and returns either the [`Factors`] in force or every problem with
//! its key path.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::agent_loop::AgentLoopConfig;
use super::factors::{
    self, BoardEmbodied, DEFAULT_ACTIVATION_EV, DEFAULT_LIFETIME_YEARS,
    DEFAULT_UPSTREAM_AMORTISE_TOKENS, DEFAULT_WEAR_REFERENCE_C, DIESEL_G_CO2E_PER_KWH,
    DIESEL_TIER2, DIESEL_TIER4, FLASH_KG_CO2E_PER_GB, GRID_POLLUTANTS, Pollutants, RegionFactors,
    SiteFactors,
};
use super::guard::{Budget, GuardConfig};

/// Shortest service life accepted (years): below it the amortised embodied carbon of a
/// second of work stops being a meaningful figure.
pub const MIN_LIFETIME_YEARS: f64 = 0.1;
/// Longest service life accepted (years).
pub const MAX_LIFETIME_YEARS: f64 = 100.0;

/// Which EPA tier the diesel backup generator meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DieselTier {
    /// Tier 2 (older sets).
    Tier2,
    /// Tier 4 Final.
    #[default]
    Tier4,
}

/// The `[eco]` section of the configuration file, in flat keys: the footprint settings
/// [`EcoConfig::resolve`] checks (region, site, diesel share, wear model, board and single-factor
/// overrides), the `emissions.csv` row, the per-request budgets, the zombie-compute guard and
/// the agent-loop detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EcoConfig {
    /// Grid region: `world` or a country code of the factor table.
    pub region: String,
    /// Where the board runs: `board` or `datacentre`.
    pub site: String,
    /// Share of energy from a diesel backup generator, 0 to 1.
    pub diesel_fraction: f64,
    /// The generator's emission tier.
    pub diesel_tier: DieselTier,
    /// Board whose embodied carbon is amortised.
    pub board: String,
    /// Service life over which embodied carbon is spread, years.
    pub lifetime_years: f64,
    /// Arrhenius activation energy, eV.
    pub activation_ev: f64,
    /// Reference temperature of the wear figure, °C.
    pub wear_reference_c: f64,
    /// Grid carbon intensity override, g CO2e/kWh.
    pub grid_g_co2e_per_kwh: Option<f64>,
    /// Generation water override, L/kWh.
    pub water_l_per_kwh: Option<f64>,
    /// PUE override (>= 1).
    pub pue: Option<f64>,
    /// On-site WUE override, L per kWh of IT energy.
    pub wue_l_per_kwh: Option<f64>,
    /// Grid NOx override, g/kWh.
    pub nox_g_per_kwh: Option<f64>,
    /// Grid SO2 override, g/kWh.
    pub so2_g_per_kwh: Option<f64>,
    /// Grid PM2.5 override, g/kWh.
    pub pm25_g_per_kwh: Option<f64>,
    /// Embodied carbon override, kg CO2e.
    pub embodied_kg_co2e: Option<f64>,
    /// Embodied carbon of flash storage override, kg CO2e per GB.
    pub flash_kg_co2e_per_gb: Option<f64>,
    /// The model card row whose declared figures apply (e.g. `llama-2-7b`); `None`: the row
    /// the model folder's name matches.
    pub upstream_model: Option<String>,
    /// Declared training energy of the model, kWh (declared, not measured).
    pub upstream_training_kwh: Option<f64>,
    /// Declared training emissions of the model, t CO2e (declared, not measured).
    pub upstream_training_t_co2e: Option<f64>,
    /// Declared energy of the teacher or synthetic data, kWh.
    pub upstream_teacher_kwh: Option<f64>,
    /// Declared emissions of the teacher or synthetic data, t CO2e.
    pub upstream_teacher_t_co2e: Option<f64>,
    /// Tokens served over which declared upstream figures are spread.
    pub upstream_amortise_tokens: f64,
    /// Append a CodeCarbon-compatible row per answer to `emissions_csv`.
    pub write_emissions_csv: bool,
    /// Where the rows go; `None`: `emissions.csv` in the thermo cache folder.
    pub emissions_csv: Option<PathBuf>,
    /// Stop degenerate (looping) answers; the budgets act either way.
    pub guard: bool,
    /// Longest token cycle the guard looks for.
    pub guard_max_period: usize,
    /// Tokens over which the guard looks for new 4-grams (0: off).
    pub guard_novelty_window: usize,
    /// Tokens over which the guard takes mean entropy (0: off).
    pub guard_entropy_window: usize,
    /// Token budget per answer.
    pub max_tokens: Option<usize>,
    /// Wall-time budget per answer, s.
    pub max_seconds: Option<f64>,
    /// Energy budget per answer, J at the board.
    pub max_joules: Option<f64>,
    /// Carbon budget per answer, g CO2e.
    pub max_g_co2e: Option<f64>,
    /// Identical requests one client may send within the window; the next gets 429 (0: off).
    pub agent_loop_max_repeats: usize,
    /// Identical errors one request may earn within the window before it is refused (0: off).
    pub agent_loop_max_errors: usize,
    /// The agent-loop window, s.
    pub agent_loop_window_s: f64,
}

impl Default for EcoConfig {
    fn default() -> Self {
        let g = GuardConfig::default();
        let a = AgentLoopConfig::default();
        EcoConfig {
            region: "world".into(),
            site: "board".into(),
            diesel_fraction: 0.0,
            diesel_tier: DieselTier::default(),
            board: "rpi5".into(),
            lifetime_years: DEFAULT_LIFETIME_YEARS,
            activation_ev: DEFAULT_ACTIVATION_EV,
            wear_reference_c: DEFAULT_WEAR_REFERENCE_C,
            grid_g_co2e_per_kwh: None,
            water_l_per_kwh: None,
            pue: None,
            wue_l_per_kwh: None,
            nox_g_per_kwh: None,
            so2_g_per_kwh: None,
            pm25_g_per_kwh: None,
            embodied_kg_co2e: None,
            flash_kg_co2e_per_gb: None,
            upstream_model: None,
            upstream_training_kwh: None,
            upstream_training_t_co2e: None,
            upstream_teacher_kwh: None,
            upstream_teacher_t_co2e: None,
            upstream_amortise_tokens: DEFAULT_UPSTREAM_AMORTISE_TOKENS,
            write_emissions_csv: true,
            emissions_csv: None,
            guard: true,
            guard_max_period: g.max_period,
            guard_novelty_window: g.novelty_window,
            guard_entropy_window: g.entropy_window,
            max_tokens: None,
            max_seconds: None,
            max_joules: None,
            max_g_co2e: None,
            agent_loop_max_repeats: a.max_repeats,
            agent_loop_max_errors: a.max_errors,
            agent_loop_window_s: a.window.as_secs_f64(),
        }
    }
}

impl EcoConfig {
    /// The factors in force (checked: see [`EcoConfig::resolve`]).
    pub fn factors(&self) -> Result<Factors, EcoConfigError> {
        self.resolve()
    }

    /// The budgets.
    pub fn budget(&self) -> Budget {
        Budget {
            max_tokens: self.max_tokens,
            max_seconds: self.max_seconds,
            max_joules: self.max_joules,
            max_g_co2e: self.max_g_co2e,
        }
    }

    /// The guard's configuration; `None` when neither the detectors nor a budget is on.
    pub fn guard_config(&self) -> Option<GuardConfig> {
        let budget = self.budget();
        if !self.guard && budget == Budget::default() {
            return None;
        }
        let on = |v: usize| if self.guard { v } else { 0 };
        Some(GuardConfig {
            max_period: on(self.guard_max_period),
            novelty_window: on(self.guard_novelty_window),
            entropy_window: on(self.guard_entropy_window),
            budget,
            ..GuardConfig::default()
        })
    }

    /// The agent-loop detector's limits; `None` when both counts are 0.
    pub fn agent_loop(&self) -> Option<AgentLoopConfig> {
        if self.agent_loop_max_repeats == 0 && self.agent_loop_max_errors == 0 {
            return None;
        }
        Some(AgentLoopConfig {
            // 0 switches one detector off: no count can exceed usize::MAX.
            max_repeats: match self.agent_loop_max_repeats {
                0 => usize::MAX,
                n => n,
            },
            max_errors: match self.agent_loop_max_errors {
                0 => usize::MAX,
                n => n,
            },
            window: Duration::try_from_secs_f64(self.agent_loop_window_s)
                .unwrap_or(Duration::from_secs(300)),
        })
    }
}

/// One problem in the `[eco]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct FactorProblem {
    /// Key path, e.g. `eco.pue`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// The `[eco]` section could not be used.
#[derive(Debug, Error)]
pub enum EcoConfigError {
    /// One or more values are out of range; all are listed.
    #[error("invalid [eco] configuration:\n{}", list(.0))]
    Invalid(Vec<FactorProblem>),
}

fn list(problems: &[FactorProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The factors in force after config: central values plus low/high ends for the ranges.
#[derive(Debug, Clone, PartialEq)]
pub struct Factors {
    /// Region code.
    pub region: String,
    /// Region name (CodeCarbon's `country_name`).
    pub region_name: String,
    /// ISO alpha-3 code, empty for the world.
    pub region_iso3: String,
    /// Grid carbon intensity (g CO2e/kWh): central, low, high.
    pub grid_g_co2e_per_kwh: [f64; 3],
    /// Water consumed by generation (L/kWh).
    pub water_l_per_kwh: f64,
    /// Power usage effectiveness.
    pub pue: f64,
    /// On-site water usage effectiveness (L per kWh of IT energy).
    pub wue_l_per_kwh: f64,
    /// Share of energy from diesel backup.
    pub diesel_fraction: f64,
    /// Diesel carbon intensity (g CO2e/kWh): central, low, high.
    pub diesel_g_co2e_per_kwh: [f64; 3],
    /// Grid pollutants (g/kWh): NOx, SO2, PM2.5.
    pub grid_pollutants_g_per_kwh: [f64; 3],
    /// Diesel pollutants (g/kWh): NOx, SO2, PM2.5.
    pub diesel_pollutants_g_per_kwh: [f64; 3],
    /// Embodied carbon of the board (kg CO2e): central, low, high.
    pub embodied_kg_co2e: [f64; 3],
    /// Embodied carbon of flash storage (kg CO2e per GB).
    pub flash_kg_co2e_per_gb: f64,
    /// Service life (years).
    pub lifetime_years: f64,
    /// Arrhenius activation energy (eV).
    pub activation_ev: f64,
    /// Wear reference temperature (°C).
    pub wear_reference_c: f64,
}

impl Default for Factors {
    fn default() -> Self {
        // The default config always resolves; the table is checked by this crate's tests.
        EcoConfig::default()
            .resolve()
            .unwrap_or_else(|_| unreachable_defaults())
    }
}

#[cold]
fn unreachable_defaults() -> Factors {
    Factors {
        region: "world".into(),
        region_name: "World".into(),
        region_iso3: String::new(),
        grid_g_co2e_per_kwh: [473.0; 3],
        water_l_per_kwh: 4.81,
        pue: 1.0,
        wue_l_per_kwh: 0.0,
        diesel_fraction: 0.0,
        diesel_g_co2e_per_kwh: [DIESEL_G_CO2E_PER_KWH.value; 3],
        grid_pollutants_g_per_kwh: [0.0; 3],
        diesel_pollutants_g_per_kwh: [0.0; 3],
        embodied_kg_co2e: [0.0; 3],
        flash_kg_co2e_per_gb: FLASH_KG_CO2E_PER_GB.value,
        lifetime_years: DEFAULT_LIFETIME_YEARS,
        activation_ev: DEFAULT_ACTIVATION_EV,
        wear_reference_c: DEFAULT_WEAR_REFERENCE_C,
    }
}

fn pollutants(p: &Pollutants) -> [f64; 3] {
    [
        p.nox_g_per_kwh.value,
        p.so2_g_per_kwh.value,
        p.pm25_g_per_kwh.value,
    ]
}

struct Checker(Vec<FactorProblem>);

impl Checker {
    fn push(&mut self, path: &str, message: String) {
        self.0.push(FactorProblem {
            path: format!("eco.{path}"),
            message,
        });
    }

    /// A finite number >= `min` (and <= `max` when given).
    fn number(&mut self, path: &str, v: f64, min: f64, max: Option<f64>) {
        if !v.is_finite() {
            self.push(path, format!("must be a finite number, got {v:?}"));
        } else if v < min {
            self.push(path, format!("must be at least {min}, got {v:?}"));
        } else if let Some(max) = max
            && v > max
        {
            self.push(path, format!("must be at most {max}, got {v:?}"));
        }
    }

    fn optional(&mut self, path: &str, v: Option<f64>, min: f64, max: f64) {
        if let Some(v) = v {
            self.number(path, v, min, Some(max));
        }
    }
}

impl EcoConfig {
    /// Checks every value and resolves the factors in force; lists all problems at once.
    pub fn resolve(&self) -> Result<Factors, EcoConfigError> {
        let mut c = Checker(vec![]);
        let (region, site, board) = self.lookups(&mut c);
        self.check_numbers(&mut c);
        let (Some(region), Some(site), true) = (region, site, c.0.is_empty()) else {
            return Err(EcoConfigError::Invalid(c.0));
        };
        Ok(self.factors_for(region, site, board))
    }

    /// The region, site and board the settings name, each problem recorded in `c`.
    fn lookups(
        &self,
        c: &mut Checker,
    ) -> (
        Option<&'static RegionFactors>,
        Option<&'static SiteFactors>,
        Option<&'static BoardEmbodied>,
    ) {
        let region = factors::region(&self.region);
        if region.is_none() {
            c.push(
                "region",
                format!(
                    "unknown region {:?}; known: {}",
                    self.region,
                    factors::region_codes().join(", ")
                ),
            );
        }
        let site = factors::site(&self.site);
        if site.is_none() {
            c.push(
                "site",
                format!(
                    "unknown site {:?}; known: {}",
                    self.site,
                    factors::SITES
                        .iter()
                        .map(|s| s.code)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        let board = factors::board(&self.board);
        if board.is_none() && self.embodied_kg_co2e.is_none() {
            c.push(
                "board",
                format!(
                    "unknown board {:?} (known: {}); set eco.embodied_kg_co2e for \
                     another board",
                    self.board,
                    factors::BOARDS
                        .iter()
                        .map(|b| b.code)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        (region, site, board)
    }

    /// Records every number out of its range in `c`.
    fn check_numbers(&self, c: &mut Checker) {
        c.number("diesel_fraction", self.diesel_fraction, 0.0, Some(1.0));
        c.number(
            "lifetime_years",
            self.lifetime_years,
            MIN_LIFETIME_YEARS,
            Some(MAX_LIFETIME_YEARS),
        );
        c.number("activation_ev", self.activation_ev, 0.0, Some(5.0));
        c.number(
            "wear_reference_c",
            self.wear_reference_c,
            -273.15,
            Some(200.0),
        );
        c.optional("grid_g_co2e_per_kwh", self.grid_g_co2e_per_kwh, 0.0, 5000.0);
        c.optional("water_l_per_kwh", self.water_l_per_kwh, 0.0, 1000.0);
        c.optional("pue", self.pue, 1.0, 10.0);
        c.optional("wue_l_per_kwh", self.wue_l_per_kwh, 0.0, 1000.0);
        c.optional("nox_g_per_kwh", self.nox_g_per_kwh, 0.0, 1000.0);
        c.optional("so2_g_per_kwh", self.so2_g_per_kwh, 0.0, 1000.0);
        c.optional("pm25_g_per_kwh", self.pm25_g_per_kwh, 0.0, 1000.0);
        c.optional("embodied_kg_co2e", self.embodied_kg_co2e, 0.0, 1e6);
        c.optional(
            "flash_kg_co2e_per_gb",
            self.flash_kg_co2e_per_gb,
            0.0,
            100.0,
        );
        c.optional(
            "upstream_training_kwh",
            self.upstream_training_kwh,
            0.0,
            1e12,
        );
        c.optional(
            "upstream_training_t_co2e",
            self.upstream_training_t_co2e,
            0.0,
            1e9,
        );
        c.optional("upstream_teacher_kwh", self.upstream_teacher_kwh, 0.0, 1e12);
        c.optional(
            "upstream_teacher_t_co2e",
            self.upstream_teacher_t_co2e,
            0.0,
            1e9,
        );
        c.number(
            "upstream_amortise_tokens",
            self.upstream_amortise_tokens,
            1.0,
            Some(1e18),
        );
        if let Some(m) = &self.upstream_model
            && factors::upstream_card(m).is_none()
        {
            c.push(
                "upstream_model",
                format!(
                    "no model card row matches {m:?}; known: {}",
                    factors::UPSTREAM_CARDS
                        .iter()
                        .map(|c| c.pattern)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }

    /// The factors of `region`, `site` and `board` with the overrides applied.
    fn factors_for(
        &self,
        region: &RegionFactors,
        site: &SiteFactors,
        board: Option<&BoardEmbodied>,
    ) -> Factors {
        let g = &region.grid_g_co2e_per_kwh;
        let grid = match self.grid_g_co2e_per_kwh {
            Some(v) => [v; 3],
            None => [g.value, g.low(), g.high()],
        };
        let diesel = match self.diesel_tier {
            DieselTier::Tier2 => &DIESEL_TIER2,
            DieselTier::Tier4 => &DIESEL_TIER4,
        };
        let mut grid_pollutants = pollutants(&GRID_POLLUTANTS);
        for (slot, v) in grid_pollutants.iter_mut().zip([
            self.nox_g_per_kwh,
            self.so2_g_per_kwh,
            self.pm25_g_per_kwh,
        ]) {
            if let Some(v) = v {
                *slot = v;
            }
        }
        let embodied = match (self.embodied_kg_co2e, board) {
            (Some(v), _) => [v; 3],
            (None, Some(b)) => [b.kg_co2e.value, b.kg_co2e.low(), b.kg_co2e.high()],
            (None, None) => [0.0; 3],
        };
        Factors {
            region: region.code.into(),
            region_name: region.name.into(),
            region_iso3: region.iso3.into(),
            grid_g_co2e_per_kwh: grid,
            water_l_per_kwh: self.water_l_per_kwh.unwrap_or(region.water_l_per_kwh.value),
            pue: self.pue.unwrap_or(site.pue.value),
            wue_l_per_kwh: self.wue_l_per_kwh.unwrap_or(site.wue_l_per_kwh.value),
            diesel_fraction: self.diesel_fraction,
            diesel_g_co2e_per_kwh: [
                DIESEL_G_CO2E_PER_KWH.value,
                DIESEL_G_CO2E_PER_KWH.low(),
                DIESEL_G_CO2E_PER_KWH.high(),
            ],
            grid_pollutants_g_per_kwh: grid_pollutants,
            diesel_pollutants_g_per_kwh: pollutants(diesel),
            embodied_kg_co2e: embodied,
            flash_kg_co2e_per_gb: self
                .flash_kg_co2e_per_gb
                .unwrap_or(FLASH_KG_CO2E_PER_GB.value),
            lifetime_years: self.lifetime_years,
            activation_ev: self.activation_ev,
            wear_reference_c: self.wear_reference_c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(c: &EcoConfig) -> Vec<FactorProblem> {
        match c.resolve() {
            Err(EcoConfigError::Invalid(p)) => p,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn the_default_config_resolves_to_the_world_grid_on_a_board() {
        let f = EcoConfig::default().resolve().expect("defaults resolve");
        assert_eq!(f.grid_g_co2e_per_kwh, [473.0, 445.0, 475.0]);
        assert_eq!(f.water_l_per_kwh, 4.81);
        assert_eq!((f.pue, f.wue_l_per_kwh), (1.0, 0.0));
        assert_eq!(f, Factors::default());
    }

    #[test]
    fn overrides_replace_single_factors() {
        let c = EcoConfig {
            region: "DE".into(),
            site: "datacentre".into(),
            grid_g_co2e_per_kwh: Some(100.0),
            pue: Some(1.2),
            ..EcoConfig::default()
        };
        let f = c.resolve().expect("resolves");
        assert_eq!(f.grid_g_co2e_per_kwh, [100.0; 3]);
        assert_eq!(f.pue, 1.2);
        assert_eq!(f.wue_l_per_kwh, 0.55);
        assert_eq!(f.water_l_per_kwh, 1.93);
        assert_eq!(f.region_iso3, "DEU");
    }

    #[test]
    fn rejects_negative_nan_and_unknown_region_listing_every_problem() {
        let p = problems(&EcoConfig {
            region: "atlantis".into(),
            diesel_fraction: 1.5,
            activation_ev: f64::NAN,
            grid_g_co2e_per_kwh: Some(-3.0),
            pue: Some(0.8),
            ..EcoConfig::default()
        });
        let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "eco.region",
                "eco.diesel_fraction",
                "eco.activation_ev",
                "eco.grid_g_co2e_per_kwh",
                "eco.pue"
            ]
        );
        assert!(p[0].message.contains("atlantis") && p[0].message.contains("world"));
        assert!(p[2].message.contains("finite"));
        assert!(p[3].message.contains("at least 0"));
        let text = EcoConfigError::Invalid(p).to_string();
        assert!(text.contains("eco.pue: must be at least 1"), "{text}");
    }

    #[test]
    fn rejects_tiny_huge_and_non_finite_values_that_would_make_a_figure_infinite() {
        let hostile: [(&str, EcoConfig); 12] = [
            (
                "eco.lifetime_years",
                EcoConfig {
                    lifetime_years: 1e-320,
                    ..EcoConfig::default()
                },
            ),
            (
                "eco.lifetime_years",
                EcoConfig {
                    lifetime_years: 0.0,
                    ..EcoConfig::default()
                },
            ),
            (
                "eco.lifetime_years",
                EcoConfig {
                    lifetime_years: -1.0,
                    ..EcoConfig::default()
                },
            ),
            (
                "eco.lifetime_years",
                EcoConfig {
                    lifetime_years: 1e308,
                    ..EcoConfig::default()
                },
            ),
            (
                "eco.lifetime_years",
                EcoConfig {
                    lifetime_years: f64::INFINITY,
                    ..EcoConfig::default()
                },
            ),
            (
                "eco.wear_reference_c",
                EcoConfig {
                    wear_reference_c: 1e300,
                    ..EcoConfig::default()
                },
            ),
            (
                "eco.activation_ev",
                EcoConfig {
                    activation_ev: f64::NEG_INFINITY,
                    ..EcoConfig::default()
                },
            ),
            (
                "eco.diesel_fraction",
                EcoConfig {
                    diesel_fraction: f64::NAN,
                    ..EcoConfig::default()
                },
            ),
            (
                "eco.pue",
                EcoConfig {
                    pue: Some(1e308),
                    ..EcoConfig::default()
                },
            ),
            (
                "eco.grid_g_co2e_per_kwh",
                EcoConfig {
                    grid_g_co2e_per_kwh: Some(f64::MAX),
                    ..EcoConfig::default()
                },
            ),
            (
                "eco.embodied_kg_co2e",
                EcoConfig {
                    embodied_kg_co2e: Some(1e300),
                    ..EcoConfig::default()
                },
            ),
            (
                "eco.water_l_per_kwh",
                EcoConfig {
                    water_l_per_kwh: Some(1e300),
                    ..EcoConfig::default()
                },
            ),
        ];
        for (path, c) in &hostile {
            let p = problems(c);
            assert_eq!(p.len(), 1, "{path}: {p:?}");
            assert_eq!(&p[0].path, path);
        }
        let edge = EcoConfig {
            lifetime_years: MIN_LIFETIME_YEARS,
            ..EcoConfig::default()
        };
        let f = edge.resolve().expect("the shortest life resolves");
        let fp = f.footprint(1e6, "t", 1e6, 1, 0.0);
        assert!(fp.embodied_g_co2e.is_finite() && fp.embodied_g_co2e > 0.0);
    }

    #[test]
    fn upstream_and_flash_settings_are_checked_with_their_key_paths() {
        let p = problems(&EcoConfig {
            upstream_amortise_tokens: 0.0,
            upstream_training_t_co2e: Some(f64::NAN),
            upstream_model: Some("gpt-9".into()),
            flash_kg_co2e_per_gb: Some(-0.1),
            ..EcoConfig::default()
        });
        let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        for key in [
            "eco.upstream_amortise_tokens",
            "eco.upstream_training_t_co2e",
            "eco.upstream_model",
            "eco.flash_kg_co2e_per_gb",
        ] {
            assert!(paths.contains(&key), "{key} missing from {paths:?}");
        }
        let f = EcoConfig {
            flash_kg_co2e_per_gb: Some(0.05),
            ..EcoConfig::default()
        }
        .resolve()
        .expect("resolves");
        assert_eq!(f.flash_kg_co2e_per_gb, 0.05);
        assert_eq!(Factors::default().flash_kg_co2e_per_gb, 0.16);
    }

    #[test]
    fn rejects_an_unknown_board_unless_its_embodied_carbon_is_given() {
        let mut c = EcoConfig {
            board: "abacus".into(),
            ..EcoConfig::default()
        };
        assert_eq!(problems(&c)[0].path, "eco.board");
        c.embodied_kg_co2e = Some(2.0);
        let f = c.resolve().expect("resolves");
        assert_eq!(f.embodied_kg_co2e, [2.0; 3]);
    }
}
