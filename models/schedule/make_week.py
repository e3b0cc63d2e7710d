"""Writes week.csv, the week `thermo bench schedule` plans over, from NREL's TMY3 record for
Greensboro, NC (station 723170, shipped in pvlib's wheel as pvlib/data/723170TYA.CSV; get it
with `pip download --no-deps pvlib==0.16.1`): 13-20 July, hourly dry-bulb temperature as the
board's ambient and global horizontal irradiance (GHI). TMY3 hours end at the stated local
standard time (UTC-5); each row here starts its hour, in UTC, in 2026.

The grid intensity is modelled, not measured: the US mean of 384 g CO2e/kWh (Ember, Global
Electricity Review 2025) lowered while the sun shines, in proportion to the irradiance, as
solar output displaces fossil generation: g(h) = 384 * (1 - 0.5 * (s(h) - mean(s))), with s
the GHI over the week's highest GHI. The week keeps its mean at 384.

Usage: python3 make_week.py PATH/TO/723170TYA.CSV > week.csv
"""

import csv
import datetime
import sys

US_MEAN_G_PER_KWH = 384.0
SWING = 0.5


def main(path):
    rows = list(csv.reader(open(path, newline="")))
    header = rows[1]
    dry, ghi = header.index("Dry-bulb (C)"), header.index("GHI (W/m^2)")
    week = []
    for r in rows[2:]:
        month, day, _ = r[0].split("/")
        if month == "07" and 13 <= int(day) <= 20:
            hour_end = int(r[1].split(":")[0])
            start = datetime.datetime(2026, 7, int(day), tzinfo=datetime.timezone.utc)
            start += datetime.timedelta(hours=hour_end - 1 + 5)
            week.append((start, float(r[dry]), float(r[ghi])))
    peak = max(g for _, _, g in week)
    mean_s = sum(g / peak for _, _, g in week) / len(week)
    print("# Greensboro NC (NREL TMY3 723170, via pvlib 0.16.1), 13-20 July; grid intensity")
    print("# modelled from irradiance around the US mean (Ember 2025): see make_week.py")
    print("time_utc,ambient_c,ghi_w_m2,grid_g_co2e_per_kwh")
    for start, t, g in week:
        grid = US_MEAN_G_PER_KWH * (1 - SWING * (g / peak - mean_s))
        print(f"{start:%Y-%m-%dT%H:%M:%SZ},{t:.1f},{g:.0f},{grid:.1f}")


if __name__ == "__main__":
    main(sys.argv[1])
