//! The twin's physics and firmware as pure functions (no state, no clock): DVFS voltage,
//! dynamic power `P ∝ f·V²`, the fan's effect on the board-to-ambient resistance, the two-node
//! heat balance, the firmware's progressive throttling map and the stepped fan curve with
//! hysteresis. [`super::soc::SimSoc`] integrates them.

use super::profile::{FanParams, FirmwareParams, PowerParams, ThermalParams};

/// Core voltage (mV) at clock `khz`, interpolated linearly between operating points and held
/// constant beyond the table's ends.
pub fn voltage_mv(dvfs: &[super::profile::OperatingPoint], khz: f64) -> f64 {
    let (Some(first), Some(last)) = (dvfs.first(), dvfs.last()) else {
        return 0.0;
    };
    if khz <= f64::from(first.khz) {
        return f64::from(first.mv);
    }
    for pair in dvfs.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if khz <= f64::from(b.khz) {
            let span = f64::from(b.khz) - f64::from(a.khz);
            let x = (khz - f64::from(a.khz)) / span;
            return f64::from(a.mv) + x * (f64::from(b.mv) - f64::from(a.mv));
        }
    }
    f64::from(last.mv)
}

/// Dynamic power (mW) of `busy_cores` cores at `khz`: each busy core draws
/// `core_dynamic_mw · (f / f_max) · (V / V_max)²`.
pub fn dynamic_power_mw(power: &PowerParams, busy_cores: f64, khz: f64) -> f64 {
    let Some(top) = power.dvfs.last() else {
        return 0.0;
    };
    let f = khz / f64::from(top.khz);
    let v = voltage_mv(&power.dvfs, khz) / f64::from(top.mv);
    busy_cores.max(0.0) * power.core_dynamic_mw * f * v * v
}

/// Board/heatsink -> ambient resistance (K/W) at fan duty `duty` (0 to 1): the conductance
/// grows linearly from the fan-off value to the full-speed value.
pub fn board_to_ambient_k_per_w(
    thermal: &ThermalParams,
    fan: Option<&FanParams>,
    duty: f64,
) -> f64 {
    match fan {
        Some(fan) => {
            let off = 1.0 / thermal.board_to_ambient_k_per_w;
            let full = 1.0 / fan.full_speed_board_to_ambient_k_per_w;
            1.0 / (off + duty.clamp(0.0, 1.0) * (full - off))
        }
        None => thermal.board_to_ambient_k_per_w,
    }
}

/// Heat flows into the two nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeatInput {
    /// Watts dissipated in the die.
    pub die_w: f64,
    /// Watts dissipated in the board.
    pub board_w: f64,
}

/// Temperature derivatives (K/s) of die and board.
pub fn derivatives(
    thermal: &ThermalParams,
    die_c: f64,
    board_c: f64,
    ambient_c: f64,
    heat: HeatInput,
    board_to_ambient: f64,
) -> (f64, f64) {
    let die_to_board_w = (die_c - board_c) / thermal.die_to_board_k_per_w;
    let board_to_ambient_w = (board_c - ambient_c) / board_to_ambient;
    (
        (heat.die_w - die_to_board_w) / thermal.die_capacity_j_per_k,
        (heat.board_w + die_to_board_w - board_to_ambient_w) / thermal.board_capacity_j_per_k,
    )
}

/// Steady-state (die, board) temperatures for constant heat and resistance.
pub fn steady_state(
    thermal: &ThermalParams,
    ambient_c: f64,
    heat: HeatInput,
    board_to_ambient: f64,
) -> (f64, f64) {
    let board = ambient_c + (heat.die_w + heat.board_w) * board_to_ambient;
    (board + heat.die_w * thermal.die_to_board_k_per_w, board)
}

/// The clock ceiling (kHz) the firmware imposes at die temperature `die_mc`: the top clock
/// below the soft limit, falling linearly to `soft_floor_khz` at the hard limit, and
/// `hard_khz` at and above it.
pub fn firmware_cap_khz(firmware: &FirmwareParams, top_khz: f64, die_mc: f64) -> f64 {
    let soft = f64::from(firmware.soft_limit_mc);
    let hard = f64::from(firmware.hard_limit_mc);
    if die_mc < soft {
        top_khz
    } else if die_mc < hard {
        let x = (die_mc - soft) / (hard - soft);
        top_khz - x * (top_khz - f64::from(firmware.soft_floor_khz))
    } else {
        f64::from(firmware.hard_khz)
    }
}

/// The fan step after observing `die_mc`, from step `current` (0 = off, `i` = `points[i-1]`):
/// steps up while the die is at or above the next step's `on_mc`, down while it is below the
/// current step's `on_mc` minus the hysteresis.
pub fn fan_step(fan: &FanParams, current: usize, die_mc: f64) -> usize {
    let mut step = current.min(fan.points.len());
    while let Some(next) = fan.points.get(step) {
        if die_mc >= f64::from(next.on_mc) {
            step += 1;
        } else {
            break;
        }
    }
    while step > 0 {
        let Some(point) = fan.points.get(step - 1) else {
            break;
        };
        if die_mc < f64::from(point.on_mc) - f64::from(fan.hysteresis_mc) {
            step -= 1;
        } else {
            break;
        }
    }
    step
}

/// The duty (0 to 100) of fan step `step`.
pub fn fan_step_duty(fan: &FanParams, step: usize) -> u8 {
    match step {
        0 => 0,
        n => fan.points.get(n - 1).map_or(100, |p| p.duty_pct.get()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::profile::Profile;

    fn pi5_active() -> Profile {
        Profile::builtin("rpi5-active").unwrap()
    }

    #[test]
    fn pi5_fan_curve_steps_up_at_each_threshold_and_down_five_degrees_later() {
        let profile = pi5_active();
        let fan = profile.fan.as_ref().unwrap();
        // (starting step, die m°C, expected step, expected duty)
        let cases = [
            (0, 49_999.0, 0, 0),
            (0, 50_000.0, 1, 30),
            (0, 60_000.0, 2, 50),
            (0, 67_500.0, 3, 70),
            (0, 75_000.0, 4, 100),
            (4, 70_000.0, 4, 100),
            (4, 69_999.0, 3, 70),
            (3, 62_500.0, 3, 70),
            (3, 62_499.0, 2, 50),
            (2, 55_000.0, 2, 50),
            (1, 45_000.0, 1, 30),
            (1, 44_999.0, 0, 0),
            (4, 20_000.0, 0, 0),
            (2, 61_000.0, 2, 50),
        ];
        for (from, die, step, duty) in cases {
            let got = fan_step(fan, from, die);
            assert_eq!(
                (got, fan_step_duty(fan, got)),
                (step, duty),
                "from {from} at {die}"
            );
        }
    }

    #[test]
    fn firmware_throttles_progressively_between_80_and_85() {
        let profile = Profile::builtin("rpi4").unwrap();
        let top = 1_500_000.0;
        let cases = [
            (79_999.0, 1_500_000.0),
            (80_000.0, 1_500_000.0),
            (82_500.0, 1_250_000.0),
            (84_000.0, 1_100_000.0),
            (85_000.0, 600_000.0),
            (95_000.0, 600_000.0),
        ];
        for (die, cap) in cases {
            let got = firmware_cap_khz(&profile.firmware, top, die);
            assert!((got - cap).abs() < 1e-6, "{die}: {got}");
        }
    }

    #[test]
    fn dynamic_power_scales_with_frequency_and_voltage_squared() {
        let profile = Profile::builtin("rpi5").unwrap();
        let p = &profile.power;
        let top = dynamic_power_mw(p, 4.0, 2_400_000.0);
        assert!((top - 4.0 * 1350.0).abs() < 1e-9);
        let floor = dynamic_power_mw(p, 4.0, 1_500_000.0);
        let expected = 4.0 * 1350.0 * (1.5 / 2.4) * (720.0f64 / 880.0).powi(2);
        assert!((floor - expected).abs() < 1e-9);
        assert!((voltage_mv(&p.dvfs, 1_550_000.0) - 727.5).abs() < 1e-9);
        assert_eq!(dynamic_power_mw(p, 0.0, 2_400_000.0), 0.0);
        assert_eq!(dynamic_power_mw(p, -1.0, 2_400_000.0), 0.0);
    }

    #[test]
    fn fan_lowers_the_board_resistance_linearly_in_conductance() {
        let profile = pi5_active();
        let fan = profile.fan.as_ref();
        let off = board_to_ambient_k_per_w(&profile.thermal, fan, 0.0);
        let full = board_to_ambient_k_per_w(&profile.thermal, fan, 1.0);
        let half = board_to_ambient_k_per_w(&profile.thermal, fan, 0.5);
        assert!((off - 7.0).abs() < 1e-12);
        assert!((full - 2.5).abs() < 1e-12);
        assert!((1.0 / half - (1.0 / 7.0 + 1.0 / 2.5) / 2.0).abs() < 1e-12);
        assert_eq!(board_to_ambient_k_per_w(&profile.thermal, None, 1.0), 7.0);
    }

    #[test]
    fn steady_state_balances_the_derivatives() {
        let profile = Profile::builtin("rpi5").unwrap();
        let heat = HeatInput {
            die_w: 5.0,
            board_w: 2.0,
        };
        let (die, board) = steady_state(&profile.thermal, 20.0, heat, 6.0);
        let (dd, db) = derivatives(&profile.thermal, die, board, 20.0, heat, 6.0);
        assert!(dd.abs() < 1e-12 && db.abs() < 1e-12);
        assert!((board - 62.0).abs() < 1e-12 && (die - 102.0).abs() < 1e-12);
    }
}
