# Sourced by the benchmark scripts here: builds the release binary and sets `thermo` (its
# path), `root` (the cache, $THERMO_HOME or ~/.cache/thermo) and `py`, a Python with llama.cpp's
# binding. Without PYTHON, `py` is the venv `$root/venv-llama`, made on first use with
# `llama-cpp-python` (built from source by pip, which takes minutes) and numpy.
cargo build --release --locked -p edge-runtime --bin thermo
thermo="${CARGO_TARGET_DIR:-target}/release/thermo"
root="${THERMO_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/thermo}"
py="${PYTHON:-$root/venv-llama/bin/python}"
if [ -z "${PYTHON:-}" ] && ! "$py" -c "import llama_cpp, numpy" 2>/dev/null; then
  python3 -m venv "$root/venv-llama"
  "$root/venv-llama/bin/pip" install -q "llama-cpp-python==0.3.36" numpy
fi
