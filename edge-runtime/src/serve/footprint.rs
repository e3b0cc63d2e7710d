//! The footprint a response carries next to `usage`: tokens, energy, emissions and water of
//! that one request. What the service measures per request is a [`RequestMeasure`]; turning
//! it into figures is a [`FootprintModel`] — the seam where the eco module's accounting plugs
//! in. Until then [`BoardPowerFootprint`] stands in: board power (from the governor's power
//! sensor) times the request's compute time, shared among the generations running at once,
//! converted with world-average grid factors.

use std::time::Duration;

use serde::Serialize;

/// World-average grid carbon intensity, g CO2e per kWh (Ember, Global Electricity Review
/// 2025, year 2024).
pub const WORLD_GRID_G_CO2E_PER_KWH: f64 = 473.0;

/// World-average water consumed per kWh of electricity generated, litres (WRI 2020, Reig et
/// al., as used by Li et al. 2023).
pub const WORLD_WATER_L_PER_KWH: f64 = 4.81;

/// What the service measured of one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestMeasure {
    /// Prompt tokens (all of them, cached ones included).
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Time the model computed for this request (prefill plus decode passes).
    pub compute: Duration,
    /// Mean board power over the request, W, when a power sensor answered.
    pub board_power_w: Option<f64>,
    /// Mean number of generations running at once while this one ran (≥ 1).
    pub concurrency: f64,
}

/// The `footprint` object of a response.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Footprint {
    /// Tokens processed (prompt plus generated).
    pub tokens: usize,
    /// Energy attributed to the request, J; `null` without a power reading.
    pub energy_j: Option<f64>,
    /// Emissions, g CO2e; `null` without energy.
    pub co2e_g: Option<f64>,
    /// Water consumed, mL; `null` without energy.
    pub water_ml: Option<f64>,
    /// How the figures were obtained.
    pub method: String,
}

/// Turns a request's measurement into its footprint. The eco module implements this with its
/// own energy model and configured factors; the service holds one as `Arc<dyn FootprintModel>`.
pub trait FootprintModel: Send + Sync {
    /// The footprint of the measured request.
    fn footprint(&self, m: &RequestMeasure) -> Footprint;
}

/// Board power × compute time ÷ concurrency, with fixed grid factors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoardPowerFootprint {
    /// g CO2e per kWh.
    pub grid_g_co2e_per_kwh: f64,
    /// Litres of water per kWh.
    pub water_l_per_kwh: f64,
}

impl Default for BoardPowerFootprint {
    fn default() -> Self {
        BoardPowerFootprint {
            grid_g_co2e_per_kwh: WORLD_GRID_G_CO2E_PER_KWH,
            water_l_per_kwh: WORLD_WATER_L_PER_KWH,
        }
    }
}

const J_PER_KWH: f64 = 3.6e6;

impl FootprintModel for BoardPowerFootprint {
    fn footprint(&self, m: &RequestMeasure) -> Footprint {
        let tokens = m.prompt_tokens + m.completion_tokens;
        let energy_j = m
            .board_power_w
            .filter(|w| w.is_finite() && *w >= 0.0)
            .map(|w| w * m.compute.as_secs_f64() / m.concurrency.max(1.0));
        let kwh = energy_j.map(|j| j / J_PER_KWH);
        Footprint {
            tokens,
            energy_j,
            co2e_g: kwh.map(|k| k * self.grid_g_co2e_per_kwh),
            water_ml: kwh.map(|k| k * self.water_l_per_kwh * 1000.0),
            method: match energy_j {
                Some(_) => {
                    "board power x compute time / concurrent generations; world grid factors".into()
                }
                None => "no board power sensor: energy unknown".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_watt_for_an_hour_alone_is_one_watt_hour() {
        let fp = BoardPowerFootprint::default().footprint(&RequestMeasure {
            prompt_tokens: 10,
            completion_tokens: 5,
            compute: Duration::from_secs(3600),
            board_power_w: Some(1.0),
            concurrency: 1.0,
        });
        assert_eq!(fp.tokens, 15);
        assert_eq!(fp.energy_j, Some(3600.0));
        // 1 Wh = 0.001 kWh: 0.473 g CO2e and 4.81 mL of water.
        assert!((fp.co2e_g.unwrap_or_default() - 0.473).abs() < 1e-9);
        assert!((fp.water_ml.unwrap_or_default() - 4.81).abs() < 1e-9);
    }

    #[test]
    fn concurrent_generations_share_the_board_power() {
        let m = RequestMeasure {
            prompt_tokens: 1,
            completion_tokens: 1,
            compute: Duration::from_secs(2),
            board_power_w: Some(5.0),
            concurrency: 2.0,
        };
        assert_eq!(
            BoardPowerFootprint::default().footprint(&m).energy_j,
            Some(5.0)
        );
    }

    #[test]
    fn without_a_power_reading_the_figures_are_null() {
        let fp = BoardPowerFootprint::default().footprint(&RequestMeasure {
            prompt_tokens: 1,
            completion_tokens: 1,
            compute: Duration::from_secs(1),
            board_power_w: None,
            concurrency: 1.0,
        });
        assert_eq!((fp.energy_j, fp.co2e_g, fp.water_ml), (None, None, None));
        let v = serde_json::to_value(&fp).unwrap_or_default();
        assert!(v["energy_j"].is_null());
    }
}
