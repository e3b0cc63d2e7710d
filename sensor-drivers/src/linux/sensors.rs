//! Builds a [`SensorSet`] from what a sysfs root holds: the governing thermal zone as
//! `soc_temp`, the other zones as `chip_temp`, Jetson INA3221 rails (`VDD_IN` as `board_power`,
//! the rest as `rail_power`) and the Pi firmware throttle flags.

use super::SysRoot;
use super::board::{BoardInfo, choose_governing_zone, detect_board};
use super::firmware::PiThrottle;
use super::ina3221::PowerRail;
use super::sysfs::SysfsError;
use crate::sensor_set::{Role, SensorSet};

/// What [`board_sensors`] found, with the set.
#[derive(Debug)]
pub struct BoardSensors {
    /// The detected board.
    pub board: BoardInfo,
    /// The governing zone's type, when one was chosen.
    pub governing_zone: Option<String>,
    /// The sensors.
    pub sensors: SensorSet,
}

/// Builds the sensor set for the board under `root`. `governing_zone` overrides the board's
/// default governing zone type. Fails only when a directory exists but cannot be listed.
pub fn board_sensors(
    root: &SysRoot,
    governing_zone: Option<&str>,
) -> Result<BoardSensors, SysfsError> {
    let board = detect_board(root.path());
    let zones = root.thermal_zones().zones()?;
    let governing = choose_governing_zone(board.kind, &zones, governing_zone).map(|z| z.index());
    let mut sensors = SensorSet::new();
    if let Some(zone) = zones.iter().find(|z| Some(z.index()) == governing) {
        sensors.add_temp(
            zone.kind().to_owned(),
            Role::SocTemp,
            Box::new(zone.clone()),
        );
    }
    for zone in zones.iter().filter(|z| Some(z.index()) != governing) {
        sensors.add_temp(
            zone.kind().to_owned(),
            Role::ChipTemp,
            Box::new(zone.clone()),
        );
    }
    for chip in root.hwmon_chips().chips()? {
        for rail in PowerRail::from_hwmon(&chip) {
            let role = if rail.name() == "VDD_IN" {
                Role::BoardPower
            } else {
                Role::RailPower
            };
            sensors.add_power(rail.name().to_owned(), role, Box::new(rail));
        }
    }
    if let Some(throttle) = PiThrottle::locate(root.path()) {
        sensors.set_throttle(Box::new(throttle));
    }
    let governing_zone = zones
        .iter()
        .find(|z| Some(z.index()) == governing)
        .map(|z| z.kind().to_owned());
    Ok(BoardSensors {
        board,
        governing_zone,
        sensors,
    })
}
