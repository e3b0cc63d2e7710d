//! The footprint factor table: every figure that turns energy into carbon, water, air
//! pollutants or embodied carbon, each with its source, its year and, where the source gives
//! one, an uncertainty range. This is the only place such numbers live; [`super::config`]
//! lets a user override any of them.

/// One sourced factor: a central value, an optional range, the unit and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factor {
    /// Central value.
    pub value: f64,
    /// Low and high ends of the range the source gives (or that the derivation implies).
    pub range: Option<(f64, f64)>,
    /// Unit of `value`, e.g. `g CO2e/kWh`.
    pub unit: &'static str,
    /// Publication the value comes from.
    pub source: &'static str,
    /// Year the value describes.
    pub year: u16,
}

impl Factor {
    const fn new(value: f64, unit: &'static str, source: &'static str, year: u16) -> Factor {
        Factor {
            value,
            range: None,
            unit,
            source,
            year,
        }
    }

    const fn with_range(mut self, low: f64, high: f64) -> Factor {
        self.range = Some((low, high));
        self
    }

    /// The low end of the range, or the value when there is none.
    pub fn low(&self) -> f64 {
        self.range.map_or(self.value, |r| r.0)
    }

    /// The high end of the range, or the value when there is none.
    pub fn high(&self) -> f64 {
        self.range.map_or(self.value, |r| r.1)
    }
}

/// Electricity-generation factors of one region.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionFactors {
    /// Region code used in config: `world` or an ISO 3166-1 alpha-2 code in lower case.
    pub code: &'static str,
    /// Human-readable name (CodeCarbon's `country_name`).
    pub name: &'static str,
    /// ISO 3166-1 alpha-3 code (CodeCarbon's `country_iso_code`), empty for the world.
    pub iso3: &'static str,
    /// Lifecycle carbon intensity of generation.
    pub grid_g_co2e_per_kwh: Factor,
    /// Water consumed by generation per kWh.
    pub water_l_per_kwh: Factor,
}

const EMBER_2025: &str = "Ember, Global Electricity Review 2025";
const WRI_2020: &str = "WRI 2020 (Reig et al.), as used by Li et al. 2023, arXiv 2304.03271";

/// Grid carbon intensity and generation water use by region. World and US intensities are
/// Ember's 2024 figures; the other countries' intensities are Ember's 2024 country values with
/// a ±15 % band, as the per-country figures move by that much between data releases (Ember's
/// 2023 values as Our World in Data publishes them, China 582, Germany 381 and India 713
/// g CO2e/kWh, fall inside the bands). Water is WRI 2020 per country; WRI gives no range.
// WRI's US water figure, 3.14 L/kWh, is not an approximation of pi.
#[allow(clippy::approx_constant)]
pub const REGIONS: &[RegionFactors] = &[
    RegionFactors {
        code: "world",
        name: "World",
        iso3: "",
        grid_g_co2e_per_kwh: Factor::new(473.0, "g CO2e/kWh", EMBER_2025, 2024)
            // IEA's 2024 world figure is 445; CodeCarbon's fallback 475.
            .with_range(445.0, 475.0),
        water_l_per_kwh: Factor::new(4.81, "L/kWh", WRI_2020, 2020),
    },
    RegionFactors {
        code: "us",
        name: "United States",
        iso3: "USA",
        grid_g_co2e_per_kwh: Factor::new(384.0, "g CO2e/kWh", EMBER_2025, 2024)
            .with_range(326.0, 442.0),
        water_l_per_kwh: Factor::new(3.14, "L/kWh", WRI_2020, 2020),
    },
    RegionFactors {
        code: "cn",
        name: "China",
        iso3: "CHN",
        grid_g_co2e_per_kwh: Factor::new(560.0, "g CO2e/kWh", EMBER_2025, 2024)
            .with_range(476.0, 644.0),
        water_l_per_kwh: Factor::new(6.02, "L/kWh", WRI_2020, 2020),
    },
    RegionFactors {
        code: "in",
        name: "India",
        iso3: "IND",
        grid_g_co2e_per_kwh: Factor::new(708.0, "g CO2e/kWh", EMBER_2025, 2024)
            .with_range(602.0, 814.0),
        water_l_per_kwh: Factor::new(3.44, "L/kWh", WRI_2020, 2020),
    },
    RegionFactors {
        code: "jp",
        name: "Japan",
        iso3: "JPN",
        grid_g_co2e_per_kwh: Factor::new(483.0, "g CO2e/kWh", EMBER_2025, 2024)
            .with_range(411.0, 555.0),
        water_l_per_kwh: Factor::new(2.31, "L/kWh", WRI_2020, 2020),
    },
    RegionFactors {
        code: "de",
        name: "Germany",
        iso3: "DEU",
        grid_g_co2e_per_kwh: Factor::new(344.0, "g CO2e/kWh", EMBER_2025, 2024)
            .with_range(292.0, 396.0),
        water_l_per_kwh: Factor::new(1.93, "L/kWh", WRI_2020, 2020),
    },
];

/// The region codes config accepts.
pub fn region_codes() -> Vec<&'static str> {
    REGIONS.iter().map(|r| r.code).collect()
}

/// The factors of `code` (case-insensitive), if known.
pub fn region(code: &str) -> Option<&'static RegionFactors> {
    REGIONS.iter().find(|r| r.code.eq_ignore_ascii_case(code))
}

/// Air pollutants emitted per kWh by one kind of generation, in g/kWh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pollutants {
    /// Nitrogen oxides.
    pub nox_g_per_kwh: Factor,
    /// Sulphur dioxide.
    pub so2_g_per_kwh: Factor,
    /// Fine particulate matter.
    pub pm25_g_per_kwh: Factor,
}

/// 1 lb/MWh in g/kWh.
pub const G_PER_KWH_PER_LB_PER_MWH: f64 = 0.453_592_37;

const EIA_2022: &str = "derived: EIA Electric Power Annual, Table 9.1 (2022 power-sector \
                        emissions) / EIA utility-scale net generation 2022 (4,231 TWh)";
const EGRID_PM25: &str = "US EPA eGRID PM2.5 white paper, U.S. output emission rate (lb/MWh x \
                          0.4536)";
/// US power-sector NOx in 2022: 1,230 thousand t (EIA Electric Power Annual, Table 9.1).
const US_NOX_2022_T: f64 = 1_230_000.0;
/// US power-sector SO2 in 2022: 1,079 thousand t (same table).
const US_SO2_2022_T: f64 = 1_079_000.0;
/// US utility-scale net generation in 2022, kWh (EIA: 4,231 billion kWh).
const US_NET_GENERATION_2022_KWH: f64 = 4_231e9;
/// Grid-average air pollutants. NOx and SO2 are the US power sector's 2022 emissions over its
/// 2022 net generation; the emissions include those of combined-heat-and-power plants' useful
/// heat, so the rates lean high. PM2.5 is eGRID's output emission rate. Only US figures are
/// tabled: other regions use these values unless overridden.
pub const GRID_POLLUTANTS: Pollutants = Pollutants {
    nox_g_per_kwh: Factor::new(
        US_NOX_2022_T * 1e6 / US_NET_GENERATION_2022_KWH,
        "g/kWh",
        EIA_2022,
        2022,
    ),
    so2_g_per_kwh: Factor::new(
        US_SO2_2022_T * 1e6 / US_NET_GENERATION_2022_KWH,
        "g/kWh",
        EIA_2022,
        2022,
    ),
    pm25_g_per_kwh: Factor::new(0.05 * G_PER_KWH_PER_LB_PER_MWH, "g/kWh", EGRID_PM25, 2020)
        .with_range(
            0.04 * G_PER_KWH_PER_LB_PER_MWH,
            0.07 * G_PER_KWH_PER_LB_PER_MWH,
        ),
};

/// Sulphur dioxide of a diesel generator on 15 ppm ultra-low-sulphur fuel: ~0.21 kg fuel per
/// kWh x 15e-6 S x 2 (SO2/S mass ratio). Derived, not an emission limit.
const DIESEL_SO2: Factor = Factor::new(
    0.0063,
    "g/kWh",
    "derived: 15 ppm S diesel (40 CFR 80.510) at ~0.21 kg/kWh",
    2024,
)
.with_range(0.004, 0.009);

/// EPA Tier 2 limits for nonroad diesel engines over 560 kW (40 CFR 89.112): NMHC+NOx 6.4,
/// PM 0.20 g/kWh. The NMHC+NOx limit is used for NOx and PM for PM2.5: upper bounds.
pub const DIESEL_TIER2: Pollutants = Pollutants {
    nox_g_per_kwh: Factor::new(6.4, "g/kWh", "EPA Tier 2 limit, 40 CFR 89.112", 2006),
    so2_g_per_kwh: DIESEL_SO2,
    pm25_g_per_kwh: Factor::new(0.20, "g/kWh", "EPA Tier 2 limit, 40 CFR 89.112", 2006),
};

/// EPA Tier 4 Final limits for generator sets over 560 kW (40 CFR 1039.101): NOx 0.67,
/// PM 0.03 g/kWh (upper bounds).
pub const DIESEL_TIER4: Pollutants = Pollutants {
    nox_g_per_kwh: Factor::new(0.67, "g/kWh", "EPA Tier 4 Final, 40 CFR 1039.101", 2015),
    so2_g_per_kwh: DIESEL_SO2,
    pm25_g_per_kwh: Factor::new(0.03, "g/kWh", "EPA Tier 4 Final, 40 CFR 1039.101", 2015),
};

/// Carbon of diesel generation: 10.21 kg CO2 per US gallon of diesel (EPA GHG Emission
/// Factors Hub) at 0.07 gal/kWh, a generator near full load. Derived; the range spans
/// 0.06-0.09 gal/kWh (full to half load).
pub const DIESEL_G_CO2E_PER_KWH: Factor = Factor::new(
    715.0,
    "g CO2e/kWh",
    "derived: EPA GHG Emission Factors Hub (10.21 kg CO2/gal) x 0.07 gal/kWh",
    2024,
)
.with_range(613.0, 919.0);

/// Where the hardware runs: cooling overhead and on-site water.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiteFactors {
    /// Config name.
    pub code: &'static str,
    /// Power usage effectiveness (facility energy / IT energy).
    pub pue: Factor,
    /// On-site water usage effectiveness (L per kWh of IT energy).
    pub wue_l_per_kwh: Factor,
}

/// The sites config accepts: a board at home or on a desk (no cooling plant, no cooling
/// water), and an average data centre for comparison.
pub const SITES: &[SiteFactors] = &[
    SiteFactors {
        code: "board",
        pue: Factor::new(
            1.0,
            "",
            "a board cooled by room air: no cooling plant",
            2024,
        ),
        wue_l_per_kwh: Factor::new(0.0, "L/kWh", "no on-site cooling water", 2024),
    },
    SiteFactors {
        code: "datacentre",
        pue: Factor::new(
            1.54,
            "",
            "Uptime Institute Global Data Center Survey 2025",
            2025,
        ),
        wue_l_per_kwh: Factor::new(
            0.55,
            "L/kWh",
            "US data-centre average on-site WUE, Li et al. 2023",
            2023,
        ),
    },
];

/// The site factors of `code`, if known.
pub fn site(code: &str) -> Option<&'static SiteFactors> {
    SITES.iter().find(|s| s.code.eq_ignore_ascii_case(code))
}

/// Manufacturing (embodied) carbon of one board, amortised over its service life.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoardEmbodied {
    /// Board name, as the simulated SoC profiles name them.
    pub code: &'static str,
    /// Cradle-to-gate carbon of the board with its power supply.
    pub kg_co2e: Factor,
}

const EMBODIED_ESTIMATE: &str = "estimate: no vendor LCA is published; scaled by board mass \
                                 from the mass-embodied-carbon regression of Teehan & \
                                 Kandlikar 2013 (ES&T 47(9)), wide band";

/// Embodied carbon per board. No vendor publishes a product carbon footprint for these
/// boards, so these are estimates with a factor-two band; override them in config when a
/// better figure is known.
pub const BOARDS: &[BoardEmbodied] = &[
    BoardEmbodied {
        code: "rpi4",
        kg_co2e: Factor::new(8.0, "kg CO2e", EMBODIED_ESTIMATE, 2013).with_range(4.0, 16.0),
    },
    BoardEmbodied {
        code: "rpi5",
        kg_co2e: Factor::new(10.0, "kg CO2e", EMBODIED_ESTIMATE, 2013).with_range(5.0, 20.0),
    },
    BoardEmbodied {
        code: "rpi5-active",
        kg_co2e: Factor::new(10.5, "kg CO2e", EMBODIED_ESTIMATE, 2013).with_range(5.25, 21.0),
    },
    BoardEmbodied {
        code: "jetson-orin-nano",
        kg_co2e: Factor::new(25.0, "kg CO2e", EMBODIED_ESTIMATE, 2013).with_range(12.5, 50.0),
    },
];

/// The embodied carbon of `code`, if known.
pub fn board(code: &str) -> Option<&'static BoardEmbodied> {
    BOARDS.iter().find(|b| b.code.eq_ignore_ascii_case(code))
}

/// Manufacturing (embodied) carbon of flash storage per GB of capacity: the "storage embodied
/// factor" Tannu & Nair derive from 94 published SSD life-cycle assessments (embodied carbon
/// grows near-linearly with capacity). Newer enterprise drives' own declarations come out
/// lower; the factor is for consumer flash such as a board's SD card or SSD, and
/// `eco.flash_kg_co2e_per_gb` overrides it.
pub const FLASH_KG_CO2E_PER_GB: Factor = Factor::new(
    0.16,
    "kg CO2e/GB",
    "Tannu & Nair, The Dirty Secret of SSDs: Embodied Carbon (HotCarbon 2022, arXiv 2207.10793)",
    2022,
);

/// Bytes per GB (decimal, as drive capacities are stated).
pub const BYTES_PER_GB: f64 = 1e9;

/// Tokens served over which a model's declared training energy and emissions are spread when
/// `eco.upstream_amortise_tokens` is not set: one trillion. A convention, not a measurement:
/// no publisher states how many tokens its model will serve, and the per-token figure scales
/// inversely with this number, so it is printed next to every upstream figure.
pub const DEFAULT_UPSTREAM_AMORTISE_TOKENS: f64 = 1e12;

/// What a model card declares about the energy and emissions of training the model, and of
/// the teacher or synthetic data it was trained on. Declared by the publisher, never measured
/// here; `None` where the card publishes nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpstreamCard {
    /// Lower-case text the model folder's name must contain, e.g. `llama-2-7b`.
    pub pattern: &'static str,
    /// The model as its card names it.
    pub name: &'static str,
    /// Training energy (kWh): GPU hours x the card's power per GPU (peak, PUE-adjusted).
    pub training_kwh: Option<Factor>,
    /// Training emissions (t CO2e, location-based where the card distinguishes).
    pub training_t_co2e: Option<Factor>,
    /// Energy of the teacher or synthetic data (kWh), when the card states it.
    pub teacher_kwh: Option<Factor>,
    /// Emissions of the teacher or synthetic data (t CO2e), when the card states them.
    pub teacher_t_co2e: Option<Factor>,
}

const LLAMA2_CARD: &str = "Llama 2 model card, Carbon Footprint table (A100-80GB, 400 W per GPU)";
const LLAMA32_CARD: &str = "Llama 3.2 model card, Training Energy Use table (H100-80GB, 700 W \
                            per GPU; location-based emissions)";
const SMOLLM2_CARD: &str = "SmolLM2 model cards: hardware named, no energy or emissions \
                            published";

/// kWh of `gpu_hours` at `watts` per GPU.
const fn gpu_kwh(gpu_hours: f64, watts: f64) -> f64 {
    gpu_hours * watts / 1000.0
}

/// Logit generation with Llama 3.1 8B and 70B as teachers, stated once for Llama 3.2 1B and
/// 3B together (86k GPU hours at 700 W); each model carries half, an assumption, as the card
/// does not split it. The card states no emissions for it.
const LLAMA32_TEACHER_KWH_EACH: f64 = gpu_kwh(86_000.0, 700.0) / 2.0;

/// Declared upstream figures of the models whose cards were checked. A model that matches no
/// row, or a row without figures, is "not declared" (never zero) unless `[eco]` sets them.
pub const UPSTREAM_CARDS: &[UpstreamCard] = &[
    UpstreamCard {
        pattern: "llama-2-7b",
        name: "Llama 2 7B",
        training_kwh: Some(Factor::new(
            gpu_kwh(184_320.0, 400.0),
            "kWh",
            LLAMA2_CARD,
            2023,
        )),
        training_t_co2e: Some(Factor::new(31.22, "t CO2e", LLAMA2_CARD, 2023)),
        teacher_kwh: None,
        teacher_t_co2e: None,
    },
    UpstreamCard {
        pattern: "llama-2-13b",
        name: "Llama 2 13B",
        training_kwh: Some(Factor::new(
            gpu_kwh(368_640.0, 400.0),
            "kWh",
            LLAMA2_CARD,
            2023,
        )),
        training_t_co2e: Some(Factor::new(62.44, "t CO2e", LLAMA2_CARD, 2023)),
        teacher_kwh: None,
        teacher_t_co2e: None,
    },
    UpstreamCard {
        pattern: "llama-2-70b",
        name: "Llama 2 70B",
        training_kwh: Some(Factor::new(
            gpu_kwh(1_720_320.0, 400.0),
            "kWh",
            LLAMA2_CARD,
            2023,
        )),
        training_t_co2e: Some(Factor::new(291.42, "t CO2e", LLAMA2_CARD, 2023)),
        teacher_kwh: None,
        teacher_t_co2e: None,
    },
    UpstreamCard {
        pattern: "llama-3.2-1b",
        name: "Llama 3.2 1B",
        training_kwh: Some(Factor::new(
            gpu_kwh(370_000.0, 700.0),
            "kWh",
            LLAMA32_CARD,
            2024,
        )),
        training_t_co2e: Some(Factor::new(107.0, "t CO2e", LLAMA32_CARD, 2024)),
        teacher_kwh: Some(Factor::new(
            LLAMA32_TEACHER_KWH_EACH,
            "kWh",
            LLAMA32_CARD,
            2024,
        )),
        teacher_t_co2e: None,
    },
    UpstreamCard {
        pattern: "llama-3.2-3b",
        name: "Llama 3.2 3B",
        training_kwh: Some(Factor::new(
            gpu_kwh(460_000.0, 700.0),
            "kWh",
            LLAMA32_CARD,
            2024,
        )),
        training_t_co2e: Some(Factor::new(133.0, "t CO2e", LLAMA32_CARD, 2024)),
        teacher_kwh: Some(Factor::new(
            LLAMA32_TEACHER_KWH_EACH,
            "kWh",
            LLAMA32_CARD,
            2024,
        )),
        teacher_t_co2e: None,
    },
    UpstreamCard {
        pattern: "smollm2",
        name: "SmolLM2",
        training_kwh: None,
        training_t_co2e: None,
        teacher_kwh: None,
        teacher_t_co2e: None,
    },
];

/// The source every card row without figures cites.
pub const UPSTREAM_NOT_DECLARED: &str = SMOLLM2_CARD;

/// The card row whose pattern the model name `name` contains (case-insensitive; `_` and
/// spaces read as `-`), the longest pattern first so `llama-2-70b` is not taken for another.
pub fn upstream_card(name: &str) -> Option<&'static UpstreamCard> {
    let name: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == '_' || c == ' ' { '-' } else { c })
        .collect();
    UPSTREAM_CARDS
        .iter()
        .filter(|c| name.contains(c.pattern))
        .max_by_key(|c| c.pattern.len())
}

/// Default service life over which embodied carbon is amortised (years).
pub const DEFAULT_LIFETIME_YEARS: f64 = 5.0;

/// Default activation energy for the Arrhenius wear model (eV), JEDEC JEP122's common value.
pub const DEFAULT_ACTIVATION_EV: f64 = 0.7;

/// Default reference temperature of "aged like X hours at ..." (°C).
pub const DEFAULT_WEAR_REFERENCE_C: f64 = 50.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_brackets_its_value() {
        let mut all: Vec<Factor> = vec![];
        for r in REGIONS {
            all.push(r.grid_g_co2e_per_kwh);
            all.push(r.water_l_per_kwh);
        }
        for p in [GRID_POLLUTANTS, DIESEL_TIER2, DIESEL_TIER4] {
            all.extend([p.nox_g_per_kwh, p.so2_g_per_kwh, p.pm25_g_per_kwh]);
        }
        for s in SITES {
            all.extend([s.pue, s.wue_l_per_kwh]);
        }
        all.extend(BOARDS.iter().map(|b| b.kg_co2e));
        all.push(DIESEL_G_CO2E_PER_KWH);
        all.push(FLASH_KG_CO2E_PER_GB);
        for c in UPSTREAM_CARDS {
            all.extend(
                [
                    c.training_kwh,
                    c.training_t_co2e,
                    c.teacher_kwh,
                    c.teacher_t_co2e,
                ]
                .into_iter()
                .flatten(),
            );
        }
        for f in all {
            assert!(f.low() <= f.value && f.value <= f.high(), "{f:?}");
            assert!(!f.source.is_empty() && f.year >= 2000, "{f:?}");
        }
    }

    #[test]
    fn the_previous_years_country_intensities_fall_inside_the_bands() {
        // Ember's 2023 lifecycle intensities (Our World in Data, Ember and Energy Institute).
        for (code, g_2023) in [("cn", 582.0), ("de", 381.0), ("in", 713.0)] {
            let f = region(code).map(|r| r.grid_g_co2e_per_kwh);
            assert!(
                f.is_some_and(|f| f.low() <= g_2023 && g_2023 <= f.high()),
                "{code}: {f:?}"
            );
        }
    }

    #[test]
    fn regions_are_found_case_insensitively() {
        assert_eq!(region("US").map(|r| r.iso3), Some("USA"));
        assert_eq!(
            region("world").map(|r| r.grid_g_co2e_per_kwh.value),
            Some(473.0)
        );
        assert!(region("atlantis").is_none());
    }

    #[test]
    fn lb_per_mwh_converts_to_grams_per_kwh() {
        // 1 lb = 453.59237 g and 1 MWh = 1000 kWh.
        assert!((G_PER_KWH_PER_LB_PER_MWH - 453.592_37 / 1000.0).abs() < 1e-12);
    }

    #[test]
    fn flash_storage_is_pinned_to_tannu_and_nair() {
        // 0.16 kg CO2e per GB of flash (arXiv 2207.10793).
        assert_eq!(FLASH_KG_CO2E_PER_GB.value, 0.16);
        assert_eq!(FLASH_KG_CO2E_PER_GB.unit, "kg CO2e/GB");
        assert!(FLASH_KG_CO2E_PER_GB.source.contains("2207.10793"));
    }

    #[test]
    fn llama_2_cards_are_pinned_to_their_gpu_hours_and_tonnes() {
        // The card: 7B 184320 h, 13B 368640 h, 70B 1720320 h at 400 W; 31.22 + 62.44 +
        // 291.42 t; with the 34B (not released) the family totals 3311616 h and 539.00 t.
        for (name, hours, tonnes) in [
            ("Llama-2-7b-chat-hf", 184_320.0, 31.22),
            ("llama_2_13b", 368_640.0, 62.44),
            ("Llama-2-70B-GGUF", 1_720_320.0, 291.42),
        ] {
            let card = upstream_card(name).unwrap_or_else(|| panic!("{name}: no card"));
            let kwh = card.training_kwh.map(|f| f.value);
            assert_eq!(kwh, Some(hours * 0.4), "{name}");
            assert_eq!(
                card.training_t_co2e.map(|f| f.value),
                Some(tonnes),
                "{name}"
            );
            assert!(card.teacher_kwh.is_none() && card.teacher_t_co2e.is_none());
        }
        assert!((1_720_320.0f64 + 368_640.0 + 184_320.0 + 1_038_336.0 - 3_311_616.0).abs() < 1e-9);
    }

    #[test]
    fn llama_3_2_cards_carry_half_the_stated_logit_generation_each() {
        let one = upstream_card("Llama-3.2-1B-Instruct").map(|c| c.name);
        assert_eq!(one, Some("Llama 3.2 1B"));
        let three = upstream_card("llama-3.2-3b-instruct-q4");
        assert_eq!(
            three.and_then(|c| c.training_kwh).map(|f| f.value),
            Some(322_000.0)
        );
        assert_eq!(
            three.and_then(|c| c.training_t_co2e).map(|f| f.value),
            Some(133.0)
        );
        // 86k GPU hours at 700 W = 60200 kWh for both models.
        assert_eq!(
            three.and_then(|c| c.teacher_kwh).map(|f| f.value),
            Some(30_100.0)
        );
    }

    #[test]
    fn smollm2_and_unknown_models_declare_nothing() {
        let smol = upstream_card("SmolLM2-135M-Instruct-q4");
        assert!(smol.is_some_and(|c| c.training_kwh.is_none() && c.training_t_co2e.is_none()));
        assert!(upstream_card("phi-2").is_none());
        assert_eq!(DEFAULT_UPSTREAM_AMORTISE_TOKENS, 1e12);
    }
}
