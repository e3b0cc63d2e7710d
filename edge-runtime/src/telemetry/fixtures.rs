//! Records for tests (feature `test-util`): a plain tick that each test changes where it
//! looks, so the schema's field list is spelled out once.

use super::schema::{GovernorState, Tick};

/// A tick `uptime_ms` into the run with `tokens_total` tokens generated: 50 °C, regulating
/// at a 70 °C setpoint with nothing limiting and every class at full duty; no zones, power,
/// frequency, speed, steps, energy, throttle events or eco figures.
pub fn tick(uptime_ms: u64, tokens_total: u64) -> Tick {
    Tick {
        uptime_ms,
        governing_c: Some(50.0),
        temps: vec![],
        power: None,
        freq_khz: None,
        governor: GovernorState {
            mode: "regulating".into(),
            limiter: "none".into(),
            setpoint_c: 70.0,
            reason: String::new(),
            duties: [1.0; 3],
            training_paused: false,
        },
        tokens_per_s: None,
        tokens_total,
        steps_total: 0,
        energy_j: 0.0,
        throttle_events: 0,
        eco: None,
    }
}
