#!/usr/bin/env bash
# Prefill/decode speed and peak RSS of the default model per weight format and thread count,
# and of llama.cpp on the same GGUF when its Python binding is importable (PYTHON=...).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p edge-runtime --bin thermo
thermo=target/release/thermo
root="${THERMO_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/thermo}"
echo "| model | threads | prefill-32 tok/s | prefill-128 tok/s | decode-64 tok/s | peak RSS MB |"
echo "|---|---|---|---|---|---|"
for format in q4 f32; do
  "$thermo" fetch-model --format "$format" >/dev/null 2>&1
  for threads in 1 2; do
    "$thermo" bench-llm --model "$root/models/SmolLM2-135M-Instruct-$format" --threads "$threads" 2>/dev/null
  done
done
py="${PYTHON:-python3}"
if "$py" -c "import llama_cpp" 2>/dev/null; then
  for threads in 1 2; do
    "$py" models/bench_llamacpp.py "$root/gguf/SmolLM2-135M-Instruct.gguf" "$threads"
  done
fi
