//! Energy to footprint: turns joules measured at the board (IT energy) into facility energy
//! (x PUE), carbon (grid and diesel shares, with the factor table's range), water (on-site WUE
//! on IT energy plus generation water on facility energy), air pollutants, amortised embodied
//! carbon and wear hours. Pure arithmetic over [`Factors`].

use serde::Serialize;

use super::config::Factors;

/// Joules per kWh.
pub const J_PER_KWH: f64 = 3.6e6;
/// Joules per Wh.
pub const J_PER_WH: f64 = 3600.0;
/// Hours per year (365.25 days).
pub const HOURS_PER_YEAR: f64 = 8766.0;

/// What a piece of work cost: a request, a training run, a day.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Footprint {
    /// Energy at the board (J).
    pub energy_j: f64,
    /// Where the energy figure came from.
    pub energy_source: String,
    /// Wall time (s).
    pub duration_s: f64,
    /// Tokens (or training steps) the energy is attributed to.
    pub tokens: u64,
    /// Operational carbon (g CO2e): central value.
    pub g_co2e: f64,
    /// Operational carbon, low end of the factor range.
    pub g_co2e_low: f64,
    /// Operational carbon, high end of the factor range.
    pub g_co2e_high: f64,
    /// Embodied carbon amortised over `duration_s` (g CO2e).
    pub embodied_g_co2e: f64,
    /// Water consumed on site and by generation (mL).
    pub water_ml: f64,
    /// Nitrogen oxides (mg).
    pub nox_mg: f64,
    /// Sulphur dioxide (mg).
    pub so2_mg: f64,
    /// Fine particulate matter (mg).
    pub pm25_mg: f64,
    /// Hours at the wear reference temperature that aged the die as much.
    pub wear_hours: f64,
    /// The wear reference temperature (°C).
    pub wear_reference_c: f64,
}

impl Footprint {
    /// The first figure that is not a finite number, with its name (such a footprint is
    /// never stored).
    pub fn non_finite(&self) -> Option<(&'static str, f64)> {
        [
            ("energy_j", self.energy_j),
            ("duration_s", self.duration_s),
            ("g_co2e", self.g_co2e),
            ("g_co2e_low", self.g_co2e_low),
            ("g_co2e_high", self.g_co2e_high),
            ("embodied_g_co2e", self.embodied_g_co2e),
            ("water_ml", self.water_ml),
            ("nox_mg", self.nox_mg),
            ("so2_mg", self.so2_mg),
            ("pm25_mg", self.pm25_mg),
            ("wear_hours", self.wear_hours),
        ]
        .into_iter()
        .find(|(_, v)| !v.is_finite())
    }

    /// Watt-hours per token (0 without tokens).
    pub fn wh_per_token(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.energy_j / J_PER_WH / self.tokens as f64
        }
    }

    /// Joules per token (0 without tokens).
    pub fn j_per_token(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.energy_j / self.tokens as f64
        }
    }

    /// Average power (W) over the duration.
    pub fn mean_power_w(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.energy_j / self.duration_s
        } else {
            0.0
        }
    }

    /// The figure scaled to `n` tokens (for "per 1000 tokens" tables).
    pub fn per_tokens(&self, n: f64) -> Footprint {
        let k = if self.tokens == 0 {
            0.0
        } else {
            n / self.tokens as f64
        };
        Footprint {
            energy_j: self.energy_j * k,
            energy_source: self.energy_source.clone(),
            duration_s: self.duration_s * k,
            tokens: n.round() as u64,
            g_co2e: self.g_co2e * k,
            g_co2e_low: self.g_co2e_low * k,
            g_co2e_high: self.g_co2e_high * k,
            embodied_g_co2e: self.embodied_g_co2e * k,
            water_ml: self.water_ml * k,
            nox_mg: self.nox_mg * k,
            so2_mg: self.so2_mg * k,
            pm25_mg: self.pm25_mg * k,
            wear_hours: self.wear_hours * k,
            wear_reference_c: self.wear_reference_c,
        }
    }

    /// Adds another footprint (a day made of requests).
    pub fn add(&mut self, other: &Footprint) {
        self.energy_j += other.energy_j;
        self.duration_s += other.duration_s;
        self.tokens += other.tokens;
        self.g_co2e += other.g_co2e;
        self.g_co2e_low += other.g_co2e_low;
        self.g_co2e_high += other.g_co2e_high;
        self.embodied_g_co2e += other.embodied_g_co2e;
        self.water_ml += other.water_ml;
        self.nox_mg += other.nox_mg;
        self.so2_mg += other.so2_mg;
        self.pm25_mg += other.pm25_mg;
        self.wear_hours += other.wear_hours;
        if self.energy_source.is_empty() {
            self.energy_source = other.energy_source.clone();
        } else if !other.energy_source.is_empty() && other.energy_source != self.energy_source {
            self.energy_source = "mixed".into();
        }
    }

    /// The one-line summary the CLI prints (three significant digits).
    pub fn line(&self) -> String {
        format!(
            "{} J ({}), {} mWh/token, {} g CO2e ({}-{}) + {} g embodied, {} mL water, \
             {} mg NOx, {} mg SO2, {} mg PM2.5, aged like {} h at {:.0} °C",
            sig3(self.energy_j),
            self.energy_source,
            sig3(self.wh_per_token() * 1000.0),
            sig3(self.g_co2e),
            sig3(self.g_co2e_low),
            sig3(self.g_co2e_high),
            sig3(self.embodied_g_co2e),
            sig3(self.water_ml),
            sig3(self.nox_mg),
            sig3(self.so2_mg),
            sig3(self.pm25_mg),
            sig3(self.wear_hours),
            self.wear_reference_c,
        )
    }
}

/// `x` with three significant digits, without an exponent for everyday magnitudes.
pub fn sig3(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let mag = x.abs().log10().floor() as i32;
    if !(-6..6).contains(&mag) {
        return format!("{x:.2e}");
    }
    let decimals = (2 - mag).max(0) as usize;
    format!("{x:.decimals$}")
}

impl Factors {
    /// Carbon per joule of board energy (g CO2e/J): central, low, high.
    pub fn g_co2e_per_j(&self) -> [f64; 3] {
        let f = self.diesel_fraction;
        let mut out = [0.0; 3];
        for (i, o) in out.iter_mut().enumerate() {
            let per_kwh =
                (1.0 - f) * self.grid_g_co2e_per_kwh[i] + f * self.diesel_g_co2e_per_kwh[i];
            *o = per_kwh * self.pue / J_PER_KWH;
        }
        out
    }

    /// The eco setpoint's weights from these factors: carbon per joule (grid, PUE, diesel),
    /// the board's embodied carbon over its service life at the wear reference temperature,
    /// and the activation energy; the token rate is left for the governor to learn.
    pub fn eco_weights(&self) -> crate::governor::EcoWeights {
        crate::governor::EcoWeights {
            g_co2e_per_j: self.g_co2e_per_j()[0],
            embodied_g_per_s: self.embodied_g_per_hour() / 3600.0,
            wear_reference_c: self.wear_reference_c,
            activation_ev: self.activation_ev,
            tokens_per_s_max: 0.0,
        }
    }

    /// Embodied carbon amortised per hour of service (g CO2e/h).
    pub fn embodied_g_per_hour(&self) -> f64 {
        self.embodied_kg_co2e[0] * 1000.0 / (self.lifetime_years * HOURS_PER_YEAR)
    }

    /// The footprint of `energy_j` at the board over `duration_s`, attributed to `tokens`,
    /// with `wear_hours` from the temperature history.
    pub fn footprint(
        &self,
        energy_j: f64,
        source: &str,
        duration_s: f64,
        tokens: u64,
        wear_hours: f64,
    ) -> Footprint {
        let it_kwh = energy_j.max(0.0) / J_PER_KWH;
        let facility_kwh = it_kwh * self.pue;
        let g = self.g_co2e_per_j();
        let e = energy_j.max(0.0);
        let f = self.diesel_fraction;
        let pollutant = |i: usize| {
            let g_per_kwh = (1.0 - f) * self.grid_pollutants_g_per_kwh[i]
                + f * self.diesel_pollutants_g_per_kwh[i];
            facility_kwh * g_per_kwh * 1000.0
        };
        Footprint {
            energy_j: e,
            energy_source: source.to_string(),
            duration_s,
            tokens,
            g_co2e: e * g[0],
            g_co2e_low: e * g[1],
            g_co2e_high: e * g[2],
            embodied_g_co2e: self.embodied_g_per_hour() * duration_s.max(0.0) / 3600.0,
            water_ml: (it_kwh * self.wue_l_per_kwh + facility_kwh * self.water_l_per_kwh) * 1000.0,
            nox_mg: pollutant(0),
            so2_mg: pollutant(1),
            pm25_mg: pollutant(2),
            wear_hours,
            wear_reference_c: self.wear_reference_c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eco::config::EcoConfig;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-12)
    }

    /// 36 kJ = 0.01 kWh, world grid, a board (PUE 1, WUE 0).
    #[test]
    fn one_hundredth_of_a_kwh_on_the_world_grid_by_hand() {
        let f = EcoConfig::default().resolve().expect("defaults");
        let fp = f.footprint(36_000.0, "test", 3600.0, 1000, 0.5);
        // 0.01 kWh x 473 g/kWh = 4.73 g; range 4.45-4.75 g.
        assert!(close(fp.g_co2e, 4.73, 1e-9), "{}", fp.g_co2e);
        assert!(close(fp.g_co2e_low, 4.45, 1e-9) && close(fp.g_co2e_high, 4.75, 1e-9));
        // Water: 0.01 kWh x 4.81 L/kWh = 48.1 mL; no on-site water on a board.
        assert!(close(fp.water_ml, 48.1, 1e-9), "{}", fp.water_ml);
        // NOx: 1.23e12 g / 4.231e12 kWh = 0.290711 g/kWh; x 0.01 kWh = 2.90711 mg.
        assert!(close(fp.nox_mg, 2.907_114, 1e-5), "{}", fp.nox_mg);
        // SO2: 1.079e12 / 4.231e12 = 0.255022 g/kWh -> 2.55022 mg; PM2.5: 0.01 x 0.05 x
        // 0.45359237 g = 0.22680 mg.
        assert!(close(fp.so2_mg, 2.550_225, 1e-5), "{}", fp.so2_mg);
        assert!(close(fp.pm25_mg, 0.226_796, 1e-5), "{}", fp.pm25_mg);
        // 36 J per token = 0.01 Wh/token.
        assert!(close(fp.wh_per_token(), 0.01, 1e-12));
        // Embodied, rpi5 default 10 kg over 5 years: 10000 g / 43830 h = 0.228154 g/h.
        assert!(
            close(fp.embodied_g_co2e, 0.228_154, 1e-5),
            "{}",
            fp.embodied_g_co2e
        );
        assert_eq!(fp.wear_hours, 0.5);
    }

    #[test]
    fn a_data_centre_multiplies_by_pue_and_adds_on_site_water() {
        let c = EcoConfig {
            region: "us".into(),
            site: "datacentre".into(),
            ..EcoConfig::default()
        };
        let f = c.resolve().expect("resolves");
        let fp = f.footprint(J_PER_KWH, "test", 0.0, 0, 0.0);
        // 1 kWh IT x 1.54 = 1.54 kWh facility x 384 g = 591.36 g.
        assert!(close(fp.g_co2e, 591.36, 1e-9), "{}", fp.g_co2e);
        // On site 1 kWh x 0.55 L + generation 1.54 kWh x 3.14 L = 0.55 + 4.8356 = 5.3856 L.
        assert!(close(fp.water_ml, 5385.6, 1e-9), "{}", fp.water_ml);
    }

    #[test]
    fn diesel_backup_blends_carbon_and_pollutants_by_share() {
        let c = EcoConfig {
            diesel_fraction: 0.5,
            diesel_tier: crate::eco::config::DieselTier::Tier2,
            ..EcoConfig::default()
        };
        let f = c.resolve().expect("resolves");
        let fp = f.footprint(J_PER_KWH, "test", 0.0, 0, 0.0);
        // 0.5 x 473 + 0.5 x 715 = 594 g.
        assert!(close(fp.g_co2e, 594.0, 1e-9), "{}", fp.g_co2e);
        // NOx: 0.5 x 0.290711 g + 0.5 x 6.4 g = 3.345356 g = 3345.356 mg.
        assert!(close(fp.nox_mg, 3_345.355_7, 1e-6), "{}", fp.nox_mg);
        // PM2.5: 0.5 x 0.0226796 + 0.5 x 0.20 = 0.1113398 g.
        assert!(close(fp.pm25_mg, 111.339_8, 1e-6), "{}", fp.pm25_mg);
    }

    #[test]
    fn prints_three_significant_digits() {
        assert_eq!(sig3(16.3456), "16.3");
        assert_eq!(sig3(0.0021413), "0.00214");
        assert_eq!(sig3(1234.5), "1234");
        assert_eq!(sig3(0.0), "0");
    }

    #[test]
    fn per_thousand_tokens_scales_every_mass() {
        let f = Factors::default();
        let fp = f.footprint(100.0, "t", 10.0, 50, 0.01);
        let k = fp.per_tokens(1000.0);
        assert!(close(k.energy_j, 2000.0, 1e-12));
        assert!(close(k.g_co2e, fp.g_co2e * 20.0, 1e-12));
        assert_eq!(k.tokens, 1000);
    }
}
