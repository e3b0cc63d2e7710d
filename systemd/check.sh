#!/usr/bin/env bash
# Checks systemd/thermo.service and systemd/thermo-gateway.service: `systemd-analyze verify`
# passes and the offline security exposure score is 2.0 or lower, for each unit alone and for
# thermo.service with the I2C drop-in that `thermo config --systemd-devices` generates. Usage: systemd/check.sh [THERMO_BINARY]
# (verify needs ExecStart to name an executable; the installed path is swapped for it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
thermo="${1:-}"

if ! command -v systemd-analyze >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
exec_path="${thermo:-/bin/true}"
sed "s#/usr/local/bin/thermo#${exec_path}#" "$here/thermo.service" >"$tmp/thermo.service"
sed "s#/usr/local/bin/thermo#${exec_path}#" "$here/thermo-gateway.service" >"$tmp/thermo-gateway.service"

score_of() {
  local unit
  unit="$(basename "$1")"
  systemd-analyze security --offline=true "$@" 2>/dev/null |
    sed -n "s/.*Overall exposure level for ${unit}: \([0-9.]*\).*/\1/p"
}
check_score() {
  local what="$1" score="$2"
  if [ -z "$score" ]; then
    echo "systemd-analyze security printed no score for $what" >&2
    exit 1
  fi
  echo "systemd-analyze security ($what): $score"
  awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || {
    echo "exposure $score is above 2.0 for $what" >&2
    exit 1
  }
}

grep -q "^LimitNOFILE=[0-9]" "$tmp/thermo.service" || { echo "thermo.service sets no LimitNOFILE=" >&2; exit 1; }
systemd-analyze verify "$tmp/thermo.service"
echo "systemd-analyze verify: ok"
check_score "thermo.service" "$(score_of "$tmp/thermo.service")"
grep -q "^LimitNOFILE=[0-9]" "$tmp/thermo-gateway.service" || { echo "thermo-gateway.service sets no LimitNOFILE=" >&2; exit 1; }
systemd-analyze verify "$tmp/thermo-gateway.service"
echo "systemd-analyze verify (gateway): ok"
check_score "thermo-gateway.service" "$(score_of "$tmp/thermo-gateway.service")"

if [ -n "$thermo" ]; then
  # A configuration with one INA219 on /dev/i2c-1: the drop-in allows that bus only.
  cat >"$tmp/thermo.toml" <<'TOML'
[[sensors.i2c]]
name = "board"
bus = "/dev/i2c-1"
address = 0x40
chip = "ina219"
role = "board_power"
shunt_micro_ohms = 100000
max_current_ma = 3200
TOML
  mkdir -p "$tmp/thermo.service.d"
  "$thermo" config --config "$tmp/thermo.toml" --systemd-devices >"$tmp/thermo.service.d/devices.conf"
  grep -qx 'DeviceAllow=/dev/i2c-1 rw' "$tmp/thermo.service.d/devices.conf"
  # Merge unit and drop-in into one file so the offline analysis sees both.
  mkdir -p "$tmp/merged"
  cat "$tmp/thermo.service" "$tmp/thermo.service.d/devices.conf" >"$tmp/merged/thermo.service"
  systemd-analyze verify "$tmp/merged/thermo.service"
  check_score "thermo.service + I2C drop-in" "$(score_of "$tmp/merged/thermo.service")"
fi
