//! What an hour can do for a job, from its ambient temperature: the governor holds the die
//! at the setpoint, so the hotter the air the less headroom the job has, the slower it runs
//! and the longer the die sits hot for each step. The job's speed scales with the headroom
//! between the setpoint and the ambient, relative to the headroom at the reference ambient
//! where it runs at full speed; its energy per step is the board's added power times the
//! step's time at full speed (a slower step draws proportionally less power); its wear per
//! step is the Arrhenius factor of the die at the setpoint over that of the idle die (the
//! ambient plus the idle rise), times the step's hours.

use serde::{Deserialize, Serialize};

use crate::eco::wear::arrhenius_factor;
use crate::schedule::Rate;

/// Ambient (°C) at and below which a job runs at full speed under the setpoint.
pub const FULL_SPEED_AMBIENT_C: f64 = 25.0;

/// Smallest share of full speed the model gives an hour (the governor never stops a job for
/// heat alone; it paces it).
pub const MIN_SPEED: f64 = 0.05;

/// The board and job figures the plan needs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeatModel {
    /// Die temperature the governor holds, °C.
    pub setpoint_c: f64,
    /// Seconds one unit of work (a training step; a whole indexing run) takes at full speed.
    pub step_s: f64,
    /// Power the job adds to the idle board at full speed, W.
    pub power_w: f64,
    /// Die temperature above ambient when idle, °C.
    pub idle_rise_c: f64,
    /// Wear reference temperature, °C.
    pub reference_c: f64,
    /// Arrhenius activation energy, eV.
    pub activation_ev: f64,
}

impl HeatModel {
    /// Share of full speed at `ambient_c`, in `[MIN_SPEED, 1]`.
    pub fn speed(&self, ambient_c: f64) -> f64 {
        let full = self.setpoint_c - FULL_SPEED_AMBIENT_C;
        if full <= 0.0 {
            return MIN_SPEED;
        }
        ((self.setpoint_c - ambient_c) / full).clamp(MIN_SPEED, 1.0)
    }

    /// The job's [`Rate`] in an hour at `ambient_c`.
    pub fn rate(&self, ambient_c: f64) -> Rate {
        let speed = self.speed(ambient_c);
        let step_s = self.step_s.max(1e-3) / speed;
        let die = self.setpoint_c.max(ambient_c);
        let idle = ambient_c + self.idle_rise_c.max(0.0);
        let extra = (arrhenius_factor(die, self.reference_c, self.activation_ev)
            - arrhenius_factor(idle, self.reference_c, self.activation_ev))
        .max(0.0);
        Rate {
            steps_per_hour: 3600.0 / step_s,
            j_per_step: self.power_w.max(0.0) * self.step_s.max(0.0),
            wear_h_per_step: extra * step_s / 3600.0,
        }
    }

    /// The first figure that makes no sense (not finite, or a non-positive time), named.
    pub fn problem(&self) -> Option<String> {
        let figures = [
            ("setpoint_c", self.setpoint_c),
            ("step_s", self.step_s),
            ("power_w", self.power_w),
            ("idle_rise_c", self.idle_rise_c),
            ("reference_c", self.reference_c),
            ("activation_ev", self.activation_ev),
        ];
        if let Some((name, v)) = figures.iter().find(|(_, v)| !v.is_finite()) {
            return Some(format!("{name} is {v}"));
        }
        if self.step_s <= 0.0 {
            return Some(format!("step_s is {}, not a positive time", self.step_s));
        }
        (self.power_w < 0.0).then(|| format!("power_w is {}, below zero", self.power_w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> HeatModel {
        HeatModel {
            setpoint_c: 70.0,
            step_s: 2.0,
            power_w: 4.0,
            idle_rise_c: 10.0,
            reference_c: 55.0,
            activation_ev: 0.7,
        }
    }

    #[test]
    fn a_cool_hour_runs_at_full_speed_and_a_hot_one_slower_with_more_wear() {
        let m = model();
        let cool = m.rate(15.0);
        assert!((cool.steps_per_hour - 1800.0).abs() < 1e-9);
        assert!((cool.j_per_step - 8.0).abs() < 1e-12);
        // 47.5 °C leaves half the headroom of 25 °C: half the speed.
        let hot = m.rate(47.5);
        assert!((hot.steps_per_hour - 900.0).abs() < 1e-9, "{hot:?}");
        assert!((hot.j_per_step - 8.0).abs() < 1e-12);
        assert!(hot.wear_h_per_step > cool.wear_h_per_step);
        // Air at the setpoint still gets the minimum pace.
        assert!((m.speed(80.0) - MIN_SPEED).abs() < 1e-12);
    }

    #[test]
    fn nonsense_figures_are_named() {
        let mut m = model();
        assert_eq!(m.problem(), None);
        m.step_s = 0.0;
        assert!(m.problem().is_some_and(|p| p.contains("step_s")));
        m.step_s = 1.0;
        m.power_w = f64::NAN;
        assert!(m.problem().is_some_and(|p| p.contains("power_w")));
    }
}
