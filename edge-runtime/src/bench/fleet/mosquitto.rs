//! Where the Mosquitto broker binary is, for the fleet benchmark's loopback broker and for
//! the end-to-end tests' real broker. Finding it only; starting it is the caller's business.

use std::path::{Path, PathBuf};

/// The environment variable that names the `mosquitto` binary.
pub const MOSQUITTO_ENV: &str = "MOSQUITTO";

/// The Debian package's `mosquitto` binary.
const DEBIAN_BIN: &str = "/usr/sbin/mosquitto";

/// The `mosquitto` binary: `$MOSQUITTO`, else the Debian path if present, else `mosquitto`
/// on the PATH.
pub fn mosquitto_bin() -> PathBuf {
    if let Some(p) = std::env::var_os(MOSQUITTO_ENV) {
        return p.into();
    }
    let debian = Path::new(DEBIAN_BIN);
    if debian.exists() {
        return debian.to_path_buf();
    }
    "mosquitto".into()
}
