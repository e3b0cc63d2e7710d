#!/usr/bin/env bash
# thermo's sentence encoder (all-MiniLM-L6-v2, f32 and q8) against onnxruntime on the same
# graph (`thermo embed --export-onnx`), interleaved in one run at 1 and 2 threads on 64 chunks of
# 200 words and 64 short sentences: the same word-piece ids and the same batching on both
# sides (thermo's time includes tokenizing, onnxruntime's does not), best of ROUNDS rounds
# (default 2) of the best of 3 passes each. Prints texts/s and thermo/onnxruntime as a Markdown
# table.
#
# onnxruntime comes from PYTHON (default: the venv $root/venv-ort, made on first use with
# pinned onnxruntime and numpy).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p edge-runtime --bin thermo
thermo="${CARGO_TARGET_DIR:-target}/release/thermo"
root="${THERMO_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/thermo}"
py="${PYTHON:-$root/venv-ort/bin/python}"
if [ -z "${PYTHON:-}" ] && ! "$py" -c "import onnxruntime, numpy" 2>/dev/null; then
  python3 -m venv "$root/venv-ort"
  "$root/venv-ort/bin/pip" install -q "onnxruntime==1.23.2" "numpy==2.4.6"
fi
rounds="${ROUNDS:-2}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$thermo" embed --export-onnx "$work/encoder.onnx"
"$py" models/bench_embed_ort.py texts "$work"
for set in long short; do
  mapfile -t texts <"$work/$set.txt"
  "$thermo" embed --tokenize "${texts[@]}" >"$work/$set.ids.json"
done
out="$work/results"
for round in $(seq "$rounds"); do
  for threads in 1 2; do
    for set in long short; do
      for precision in f32 q8; do
        "$thermo" bench embed --texts "$work/$set.txt" --threads "$threads" \
          --precision "$precision" 2>/dev/null | sed "s/^/$set thermo-$precision /" >>"$out"
      done
      "$py" models/bench_embed_ort.py run "$work/encoder.onnx" "$work/$set.ids.json" "$threads" 3 |
        sed "s/^/$set ort /" >>"$out"
    done
  done
done
"$py" - "$out" <<'PY'
import json, sys

best = {}
for line in open(sys.argv[1]):
    texts, who, obj = line.split(" ", 2)
    r = json.loads(obj)
    key = (texts, who, r["threads"])
    best[key] = max(best.get(key, 0.0), r["texts_per_s"])

print("| texts | threads | thermo f32 texts/s | thermo q8 texts/s | onnxruntime texts/s | f32 / ORT | q8 / ORT |")
print("|---|---|---|---|---|---|---|")
for texts, label in (("long", "64 chunks of 200 words"), ("short", "64 sentences")):
    for threads in (1, 2):
        f, q, o = (best[(texts, who, threads)] for who in ("thermo-f32", "thermo-q8", "ort"))
        print(f"| {label} | {threads} | {f:.1f} | {q:.1f} | {o:.1f} | {f / o:.2f}x | {q / o:.2f}x |")
PY
