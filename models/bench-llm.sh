#!/usr/bin/env bash
# thermo (q4 and ggml folders) against llama.cpp on the same GGUF, interleaved in one run at 1 and 2
# threads, best of ROUNDS rounds (default 2): prefill-32/128 and decode-64 tok/s, peak RSS, load
# seconds (the shortest, so a second load, with the files in the page cache),
# the thermo/llama.cpp ratios, and for decode the weight bytes read per token (the GGUF's
# size: every weight, the tied head included, is read once per token) over the time per
# token, beside the machine's single-thread read bandwidth.
#
# llama.cpp comes from its Python binding in PYTHON (default: the venv `bench-env.sh` makes).
# The f32 folder is not compared.
set -euo pipefail
cd "$(dirname "$0")/.."
. models/bench-env.sh
rounds="${ROUNDS:-2}"
gguf="$root/gguf/SmolLM2-135M-Instruct.gguf"
for format in q4 ggml; do
  "$thermo" fetch-model --format "$format" >/dev/null 2>&1
done
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for round in $(seq "$rounds"); do
  for threads in 1 2; do
    for format in q4 ggml; do
      "$thermo" bench llm --json --model "$root/models/SmolLM2-135M-Instruct-$format" \
        --threads "$threads" 2>/dev/null | sed "s/^/thermo-$format /" >>"$out"
    done
    "$py" models/bench_llamacpp.py "$gguf" "$threads" --json | sed 's/^/llama /' >>"$out"
  done
done
"$py" - "$out" "$gguf" <<'PY'
import json, os, sys, time
import numpy as np

rows = {}
for line in open(sys.argv[1]):
    who, obj = line.split(" ", 1)
    r = json.loads(obj)
    key = (who, r["threads"])
    best = rows.setdefault(key, dict(r))
    for k in ("prefill32_tps", "prefill128_tps", "decode64_tps"):
        best[k] = max(best[k], r[k])
    best["peak_rss_mb"] = min(best["peak_rss_mb"], r["peak_rss_mb"])
    best["load_s"] = min(best["load_s"], r["load_s"])

a = np.ones(64 << 20)  # 512 MB of f64, read end to end
bw = 0.0
for _ in range(3):
    t = time.perf_counter()
    a.sum()
    bw = max(bw, a.nbytes / (time.perf_counter() - t) / 1e9)
weight_gb = os.path.getsize(sys.argv[2]) / 1e9

print("| | threads | prefill-32 tok/s | prefill-128 tok/s | decode-64 tok/s | peak RSS MB | decode GB/s | load s |")
print("|---|---|---|---|---|---|---|---|")
for threads in (1, 2):
    ours = [("thermo q4", rows.get(("thermo-q4", threads))),
            ("thermo ggml", rows.get(("thermo-ggml", threads)))]
    peer = rows.get(("llama", threads))
    for who, r in ours + [("llama.cpp", peer)]:
        if r:
            print(f"| {who} | {threads} | {r['prefill32_tps']:.1f} | {r['prefill128_tps']:.1f} | "
                  f"{r['decode64_tps']:.1f} | {r['peak_rss_mb']:.0f} | "
                  f"{r['decode64_tps'] * weight_gb:.2f} | {r['load_s']:.2f} |")
    for who, t in ours:
        if not (t and peer):
            continue
        l = peer
        print(f"| {who} / llama.cpp | {threads} | {t['prefill32_tps'] / l['prefill32_tps']:.2f}x | "
              f"{t['prefill128_tps'] / l['prefill128_tps']:.2f}x | "
              f"{t['decode64_tps'] / l['decode64_tps']:.2f}x | "
              f"{t['peak_rss_mb'] / l['peak_rss_mb']:.2f}x | | |")
print(f"\nweights read per decoded token: {weight_gb * 1e3:.0f} MB (GGUF size); "
      f"measured single-thread read bandwidth: {bw:.1f} GB/s")
PY
