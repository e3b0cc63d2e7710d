//! Fake sysfs trees of real boards, written under a root directory, for tests and benchmarks
//! on machines without the hardware (the runtime's tests use them too). The file layout and
//! values follow what the boards expose: a Raspberry Pi 5 with the active cooler, a Raspberry
//! Pi 4, and a Jetson Orin Nano developer kit on JetPack 5+. Nothing here touches real `/sys`.

use std::fs;
use std::io;
use std::path::Path;

fn put(root: &Path, relative: &str, contents: &str) -> io::Result<()> {
    let path = root.join(relative);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, contents)
}

fn put_all(root: &Path, files: &[(&str, &str)]) -> io::Result<()> {
    files
        .iter()
        .try_for_each(|(relative, contents)| put(root, relative, contents))
}

/// Writes `trip_point_N_temp`, `_type` and `_hyst` into the zone directory `zone` for each
/// `(temp m°C, type, hysteresis m°C)` of `trips`, N counting from 0.
fn put_trips(root: &Path, zone: &str, trips: &[(u32, &str, u32)]) -> io::Result<()> {
    for (index, (temp, kind, hyst)) in trips.iter().enumerate() {
        let trip = format!("{zone}/trip_point_{index}");
        put(root, &format!("{trip}_temp"), &format!("{temp}\n"))?;
        put(root, &format!("{trip}_type"), &format!("{kind}\n"))?;
        put(root, &format!("{trip}_hyst"), &format!("{hyst}\n"))?;
    }
    Ok(())
}

fn pi_cpufreq(root: &Path, levels: &[u32]) -> io::Result<()> {
    let list = levels
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let min = levels.first().copied().unwrap_or_default().to_string();
    let max = levels.last().copied().unwrap_or_default().to_string();
    let base = "sys/devices/system/cpu/cpufreq/policy0";
    put_all(
        root,
        &[
            (&format!("{base}/related_cpus"), "0 1 2 3\n"),
            (&format!("{base}/affected_cpus"), "0 1 2 3\n"),
            (
                &format!("{base}/scaling_available_frequencies"),
                &format!("{list} \n"),
            ),
            (&format!("{base}/scaling_max_freq"), &format!("{max}\n")),
            (&format!("{base}/scaling_min_freq"), &format!("{min}\n")),
            (&format!("{base}/scaling_cur_freq"), &format!("{min}\n")),
            (&format!("{base}/cpuinfo_max_freq"), &format!("{max}\n")),
            (&format!("{base}/cpuinfo_min_freq"), &format!("{min}\n")),
            (&format!("{base}/scaling_governor"), "ondemand\n"),
        ],
    )
}

/// A Raspberry Pi 5 with the active cooler: `cpu-thermal` zone with the fan trips,
/// `pwm-fan` cooling device (states 0-4), hwmon `cpu_thermal`, `rp1_adc`, `pwmfan`, `rpi_volt`,
/// one cpufreq policy 1.5-2.4 GHz and the firmware `get_throttled` file.
pub fn write_pi5_tree(root: &Path) -> io::Result<()> {
    put_all(
        root,
        &[
            ("proc/device-tree/model", "Raspberry Pi 5 Model B Rev 1.0\0"),
            (
                "proc/device-tree/compatible",
                "raspberrypi,5-model-b\0brcm,bcm2712\0",
            ),
            ("sys/class/thermal/thermal_zone0/type", "cpu-thermal\n"),
            ("sys/class/thermal/thermal_zone0/temp", "52150\n"),
            ("sys/class/thermal/thermal_zone0/mode", "enabled\n"),
            ("sys/class/thermal/thermal_zone0/policy", "step_wise\n"),
            ("sys/class/thermal/cooling_device0/type", "pwm-fan\n"),
            ("sys/class/thermal/cooling_device0/cur_state", "1\n"),
            ("sys/class/thermal/cooling_device0/max_state", "4\n"),
            ("sys/class/hwmon/hwmon0/name", "cpu_thermal\n"),
            ("sys/class/hwmon/hwmon0/temp1_input", "52150\n"),
            ("sys/class/hwmon/hwmon1/name", "rp1_adc\n"),
            ("sys/class/hwmon/hwmon1/in1_input", "1450\n"),
            ("sys/class/hwmon/hwmon1/temp1_input", "48327\n"),
            ("sys/class/hwmon/hwmon2/name", "pwmfan\n"),
            ("sys/class/hwmon/hwmon2/fan1_input", "2998\n"),
            ("sys/class/hwmon/hwmon2/pwm1", "75\n"),
            ("sys/class/hwmon/hwmon3/name", "rpi_volt\n"),
            ("sys/class/hwmon/hwmon3/in0_lcrit_alarm", "0\n"),
            (
                "sys/devices/platform/soc@107c000000/soc@107c000000:firmware/get_throttled",
                "0\n",
            ),
        ],
    )?;
    put_trips(
        root,
        "sys/class/thermal/thermal_zone0",
        &[
            (110_000, "critical", 0),
            (50_000, "active", 5_000),
            (60_000, "active", 5_000),
            (67_500, "active", 5_000),
            (75_000, "active", 5_000),
        ],
    )?;
    pi_cpufreq(
        root,
        &[
            1_500_000, 1_600_000, 1_700_000, 1_800_000, 1_900_000, 2_000_000, 2_100_000, 2_200_000,
            2_300_000, 2_400_000,
        ],
    )
}

/// A Raspberry Pi 4: `cpu-thermal` zone with a critical trip, no fan, hwmon `cpu_thermal` and
/// `rpi_volt`, one cpufreq policy 600-1500 MHz and `get_throttled` at the BCM2711 path.
pub fn write_pi4_tree(root: &Path) -> io::Result<()> {
    put_all(
        root,
        &[
            ("proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\0"),
            (
                "proc/device-tree/compatible",
                "raspberrypi,4-model-b\0brcm,bcm2711\0",
            ),
            ("sys/class/thermal/thermal_zone0/type", "cpu-thermal\n"),
            ("sys/class/thermal/thermal_zone0/temp", "48686\n"),
            ("sys/class/thermal/thermal_zone0/mode", "enabled\n"),
            (
                "sys/class/thermal/thermal_zone0/trip_point_0_temp",
                "110000\n",
            ),
            (
                "sys/class/thermal/thermal_zone0/trip_point_0_type",
                "critical\n",
            ),
            ("sys/class/hwmon/hwmon0/name", "cpu_thermal\n"),
            ("sys/class/hwmon/hwmon0/temp1_input", "48686\n"),
            ("sys/class/hwmon/hwmon1/name", "rpi_volt\n"),
            ("sys/class/hwmon/hwmon1/in0_lcrit_alarm", "0\n"),
            (
                "sys/devices/platform/soc/soc:firmware/get_throttled",
                "0x50000\n",
            ),
        ],
    )?;
    pi_cpufreq(root, &[600_000, 750_000, 1_000_000, 1_500_000])
}

/// A Jetson Orin Nano developer kit on JetPack 5+: the nine T234 zones with `tj-thermal`
/// trips (fan 74/95 °C, passive 95, hot 99, critical 104.5), a `pwm-fan` cooling device, the
/// `ina3221` hwmon chip with rails `VDD_IN`, `VDD_CPU_GPU_CV`, `VDD_SOC` and the sum channel,
/// and two cpufreq policies (CPUs 0-3 and 4-5).
pub fn write_jetson_orin_nano_tree(root: &Path) -> io::Result<()> {
    put_all(
        root,
        &[
            (
                "proc/device-tree/model",
                "NVIDIA Jetson Orin Nano Developer Kit\0",
            ),
            (
                "proc/device-tree/compatible",
                "nvidia,p3768-0000+p3767-0005\0nvidia,p3767-0005\0nvidia,tegra234\0",
            ),
        ],
    )?;
    jetson_thermal_zones(root)?;
    jetson_fan_and_rails(root)?;
    jetson_cpufreq(root)
}

/// The Orin's nine thermal zones, `tj-thermal` with the upstream device tree's trip points.
fn jetson_thermal_zones(root: &Path) -> io::Result<()> {
    let zones = [
        ("cpu-thermal", 47_218),
        ("gpu-thermal", 45_687),
        ("cv0-thermal", 45_906),
        ("cv1-thermal", 45_781),
        ("cv2-thermal", 45_437),
        ("soc0-thermal", 46_593),
        ("soc1-thermal", 45_375),
        ("soc2-thermal", 45_968),
        ("tj-thermal", 47_218),
    ];
    for (index, (kind, temp)) in zones.iter().enumerate() {
        let base = format!("sys/class/thermal/thermal_zone{index}");
        put(root, &format!("{base}/type"), &format!("{kind}\n"))?;
        put(root, &format!("{base}/temp"), &format!("{temp}\n"))?;
        put(root, &format!("{base}/mode"), "enabled\n")?;
    }
    put_trips(
        root,
        "sys/class/thermal/thermal_zone8",
        &[
            (74_000, "active", 2_000),
            (95_000, "active", 2_000),
            (95_000, "passive", 2_000),
            (99_000, "hot", 2_000),
            (104_500, "critical", 2_000),
        ],
    )
}

/// The fan as a cooling device and a hwmon PWM, and the INA3221 rails on JetPack 5+.
fn jetson_fan_and_rails(root: &Path) -> io::Result<()> {
    put_all(
        root,
        &[
            ("sys/class/thermal/cooling_device0/type", "pwm-fan\n"),
            ("sys/class/thermal/cooling_device0/cur_state", "0\n"),
            ("sys/class/thermal/cooling_device0/max_state", "3\n"),
            ("sys/class/hwmon/hwmon1/name", "ina3221\n"),
            ("sys/class/hwmon/hwmon1/in1_label", "VDD_IN\n"),
            ("sys/class/hwmon/hwmon1/in1_input", "5072\n"),
            ("sys/class/hwmon/hwmon1/curr1_input", "987\n"),
            ("sys/class/hwmon/hwmon1/in2_label", "VDD_CPU_GPU_CV\n"),
            ("sys/class/hwmon/hwmon1/in2_input", "5064\n"),
            ("sys/class/hwmon/hwmon1/curr2_input", "159\n"),
            ("sys/class/hwmon/hwmon1/in3_label", "VDD_SOC\n"),
            ("sys/class/hwmon/hwmon1/in3_input", "5072\n"),
            ("sys/class/hwmon/hwmon1/curr3_input", "295\n"),
            ("sys/class/hwmon/hwmon1/in4_input", "4\n"),
            ("sys/class/hwmon/hwmon1/in5_input", "0\n"),
            ("sys/class/hwmon/hwmon1/in6_input", "1\n"),
            (
                "sys/class/hwmon/hwmon1/in7_label",
                "sum of shunt voltages\n",
            ),
            ("sys/class/hwmon/hwmon1/in7_input", "7\n"),
            ("sys/class/hwmon/hwmon1/curr4_input", "1441\n"),
            ("sys/class/hwmon/hwmon2/name", "pwmfan\n"),
            ("sys/class/hwmon/hwmon2/pwm1", "0\n"),
        ],
    )
}

/// Two cpufreq policies (cores 0-3 and 4-5) with the Orin Nano's clock table.
fn jetson_cpufreq(root: &Path) -> io::Result<()> {
    let levels = [
        115_200, 192_000, 268_800, 345_600, 422_400, 499_200, 576_000, 652_800, 729_600, 806_400,
        883_200, 960_000, 1_036_800, 1_113_600, 1_190_400, 1_267_200, 1_344_000, 1_420_800,
        1_497_600, 1_510_400,
    ]
    .map(|l: u32| l.to_string())
    .join(" ");
    for (policy, cpus) in [(0, "0 1 2 3"), (4, "4 5")] {
        let base = format!("sys/devices/system/cpu/cpufreq/policy{policy}");
        put_all(
            root,
            &[
                (&format!("{base}/related_cpus"), &format!("{cpus}\n")),
                (
                    &format!("{base}/scaling_available_frequencies"),
                    &format!("{levels}\n"),
                ),
                (&format!("{base}/scaling_max_freq"), "1510400\n"),
                (&format!("{base}/scaling_cur_freq"), "729600\n"),
                (&format!("{base}/cpuinfo_max_freq"), "1510400\n"),
                (&format!("{base}/cpuinfo_min_freq"), "115200\n"),
                (&format!("{base}/scaling_governor"), "schedutil\n"),
            ],
        )?;
    }
    Ok(())
}

/// A JetPack 4 INA3221 IIO directory with three rails (power in mW) written into `dir`.
pub fn write_jetpack4_ina3221(dir: &Path) -> io::Result<()> {
    put_all(
        dir,
        &[
            ("rail_name_0", "POM_5V_IN\n"),
            ("in_power0_input", "3120\n"),
            ("in_voltage0_input", "5056\n"),
            ("in_current0_input", "617\n"),
            ("rail_name_1", "POM_5V_GPU\n"),
            ("in_power1_input", "78\n"),
            ("rail_name_2", "POM_5V_CPU\n"),
            ("in_power2_input", "546\n"),
        ],
    )
}
