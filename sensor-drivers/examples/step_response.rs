//! Prints each built-in profile's step response (idle steady state, then all cores busy at the
//! top clock) next to the figures it was fitted to. Run with
//! `cargo run -p sensor-drivers --features sim --example step_response`.

use std::time::Duration;

use sensor_drivers::sim::{BUILTIN_PROFILES, SimSoc, Workload};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "profile           ambient  idle    t(soft)  1 min   2 min   3 min   30 min  mean10-30  board30  events  power idle/load"
    );
    for name in BUILTIN_PROFILES {
        let mut soc = SimSoc::builtin(name)?;
        let idle = soc.truth();
        let cores = soc.profile().cores;
        soc.set_workload(Workload::all_cores(cores));
        let soft = f64::from(soc.profile().firmware.soft_limit_mc) / 1000.0;
        let mut t_soft = None;
        let mut at = Vec::new();
        let mut late = Vec::new();
        let mut load_power = 0.0;
        for second in 1..=1800u32 {
            soc.step(Duration::from_secs(1));
            let truth = soc.truth();
            if second == 1 {
                load_power = truth.power_mw;
            }
            if t_soft.is_none() && truth.die_c >= soft {
                t_soft = Some(second);
            }
            if [60, 120, 180, 1800].contains(&second) {
                at.push(truth.die_c);
            }
            if second > 600 {
                late.push(truth.die_c);
            }
        }
        let truth = soc.truth();
        let mean = late.iter().sum::<f64>() / late.len() as f64;
        println!(
            "{name:<17} {:>5.1}  {:>6.1}  {:>7}  {:>6.1}  {:>6.1}  {:>6.1}  {:>6.1}  {:>9.1}  {:>7.1}  {:>6}  {:.2}/{:.2} W",
            truth.ambient_c,
            idle.die_c,
            t_soft.map_or("never".to_owned(), |t| format!("{t} s")),
            at[0],
            at[1],
            at[2],
            at[3],
            mean,
            truth.board_c,
            truth.throttle_events,
            idle.power_mw / 1000.0,
            load_power / 1000.0,
        );
    }
    Ok(())
}
