//! Thermal wear: the Arrhenius acceleration factor of a die temperature relative to a
//! reference temperature (JEDEC JEP122: AF = exp[(Ea/k)(1/T_ref - 1/T)]), integrated over a
//! temperature history into "hours at the reference temperature".

/// How much faster a part ages at `temp_c` than at `reference_c` with activation energy
/// `activation_ev` (1 at the reference, above 1 when hotter).
pub use crate::governor::eco_setpoint::arrhenius as arrhenius_factor;

/// Integrates the acceleration factor over a temperature history (trapezoidal in the factor).
#[derive(Debug, Clone)]
pub struct WearIntegrator {
    reference_c: f64,
    activation_ev: f64,
    last: Option<(f64, f64)>,
    equivalent_s: f64,
    elapsed_s: f64,
    peak_c: f64,
}

impl WearIntegrator {
    /// Wear relative to `reference_c` with activation energy `activation_ev`.
    pub fn new(reference_c: f64, activation_ev: f64) -> Self {
        WearIntegrator {
            reference_c,
            activation_ev,
            last: None,
            equivalent_s: 0.0,
            elapsed_s: 0.0,
            peak_c: f64::NEG_INFINITY,
        }
    }

    /// Adds a die temperature read at `t_s` seconds (any fixed origin, non-decreasing).
    /// Non-finite temperatures and samples going back in time are ignored.
    pub fn push(&mut self, t_s: f64, temp_c: f64) {
        if !(t_s.is_finite() && temp_c.is_finite()) {
            return;
        }
        let af = arrhenius_factor(temp_c, self.reference_c, self.activation_ev);
        if let Some((t0, af0)) = self.last {
            if t_s < t0 {
                return;
            }
            let dt = t_s - t0;
            self.equivalent_s += 0.5 * (af0 + af) * dt;
            self.elapsed_s += dt;
        }
        self.peak_c = self.peak_c.max(temp_c);
        self.last = Some((t_s, af));
    }

    /// Hours at the reference temperature that age the part as much as the history did.
    pub fn equivalent_hours(&self) -> f64 {
        self.equivalent_s / 3600.0
    }

    /// Seconds of history integrated.
    pub fn elapsed_s(&self) -> f64 {
        self.elapsed_s
    }

    /// Hottest temperature seen (°C), `None` before the first sample.
    pub fn peak_c(&self) -> Option<f64> {
        self.peak_c.is_finite().then_some(self.peak_c)
    }

    /// The reference temperature (°C).
    pub fn reference_c(&self) -> f64 {
        self.reference_c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seventy_to_eighty_degrees_doubles_the_ageing_rate_at_0_7_ev() {
        // FACTS.md: with 0.7 eV, 70 -> 80 °C is about x1.96. By hand:
        // 0.7 / 8.617333e-5 * (1/343.15 - 1/353.15) = 8123.1 * 8.2520e-5 = 0.67032; e^0.67032 = 1.9549.
        let af = arrhenius_factor(80.0, 70.0, 0.7);
        assert!((af - 1.9549).abs() < 1e-3, "{af}");
        assert!((arrhenius_factor(50.0, 50.0, 0.7) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn an_hour_at_the_reference_is_one_wear_hour_and_hotter_hours_count_more() {
        let mut w = WearIntegrator::new(50.0, 0.7);
        w.push(0.0, 50.0);
        w.push(3600.0, 50.0);
        assert!((w.equivalent_hours() - 1.0).abs() < 1e-9);
        let mut hot = WearIntegrator::new(50.0, 0.7);
        for i in 0..=60 {
            hot.push(f64::from(i) * 60.0, 70.0);
        }
        let expected = arrhenius_factor(70.0, 50.0, 0.7);
        assert!((hot.equivalent_hours() - expected).abs() < 1e-9);
        assert_eq!(hot.peak_c(), Some(70.0));
        assert!(expected > 3.5 && expected < 4.5, "{expected}");
    }

    #[test]
    fn ignores_non_finite_samples_and_time_going_back() {
        let mut w = WearIntegrator::new(50.0, 0.7);
        w.push(0.0, 50.0);
        w.push(10.0, f64::NAN);
        w.push(-5.0, 90.0);
        w.push(3600.0, 50.0);
        assert!((w.equivalent_hours() - 1.0).abs() < 1e-9);
    }
}
