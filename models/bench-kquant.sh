#!/usr/bin/env bash
# K-quant GGUFs of the default model, requantized from its Q4_1 GGUF by llama.cpp's own
# quantizer (llama-cpp-python's `llama_model_quantize`, requantization allowed), imported with
# `--format ggml` (K-quant and Q5 tensors stay in their stored blocks), and their perplexity
# (`--ctx 128`, models/eval/heldout.txt) from thermo beside llama.cpp's on the same file and
# text. A benchmark, not a test: it prints both figures and their relative difference.
#
# PYTHON defaults to the venv `bench-env.sh` makes; FTYPES to "Q4_K_M Q6_K".
set -euo pipefail
cd "$(dirname "$0")/.."
. models/bench-env.sh
threads="${THREADS:-2}"
text=models/eval/heldout.txt
"$thermo" fetch-model --format ggml >/dev/null
src="$root/gguf/SmolLM2-135M-Instruct.gguf"
work="${WORK:-$(mktemp -d)}"
for ftype in ${FTYPES:-Q4_K_M Q6_K}; do
  gguf="$work/SmolLM2-135M-Instruct.$ftype.gguf"
  "$py" - "$src" "$gguf" "$ftype" <<'PY'
import ctypes, sys
import llama_cpp

src, dst, name = sys.argv[1:4]
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}")
params.allow_requantize = True
rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
sys.exit(rc)
PY
  "$thermo" import-gguf "$gguf" "$work/$ftype-ggml" --format ggml
  ours=$("$thermo" perplexity --model "$work/$ftype-ggml" --ctx 128 --threads "$threads" "$text" 2>/dev/null |
    sed -n 's/^PPL = //p')
  peer=$("$py" models/perplexity_llamacpp.py "$gguf" "$text" --ctx 128 --threads "$threads" |
    sed -n 's/^PPL = //p')
  "$py" -c "import sys; o, p = map(float, sys.argv[2:]); print(f'{sys.argv[1]}: thermo ggml PPL {o:.4f}, llama.cpp PPL {p:.4f}, difference {100 * (o - p) / p:+.2f} %')" \
    "$ftype" "$ours" "$peer"
done
