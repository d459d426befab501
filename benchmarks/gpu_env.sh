# Sourced by benchmarks/gpu.sh and benchmarks/gpu_pipeline.sh: `cuda_python MODULE=PACKAGE...` sets PY to a
# Python whose torch sees a CUDA GPU and that imports the modules named, and PYTHONPATH to the repository (run from
# its root). python3 as it is when its torch sees a GPU (a preinstalled CUDA torch); otherwise a venv in $VENV
# (default /tmp/llmpipe-venv-gpu) with torch installed there. Missing modules: from wheels carried in .whl/ where
# that folder exists (machines without a package index: `pip download` them elsewhere, README "On a GPU"), else
# from the package index.

has_cuda_torch() { "$1" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }

cuda_python() {
  PY=python3
  if ! has_cuda_torch "$PY"; then
    VENV=${VENV:-${TMPDIR:-/tmp}/llmpipe-venv-gpu}
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    PY="$VENV/bin/python"
    if ! has_cuda_torch "$PY"; then
      echo "no torch with CUDA here; installing torch into $VENV (PyPI's Linux build is CUDA-enabled)"
      "$PY" -m pip install --quiet torch || { echo "could not install torch; install a CUDA build of torch first" >&2; return 1; }
    fi
  fi
  if [ -d .whl ]; then
    local site=${TMPDIR:-/tmp}/llmpipe-site
    if [ "$(ls .whl)" != "$(cat "$site/.wheels" 2>/dev/null)" ]; then  # a rerun on the same machine skips this
      echo "installing $(ls .whl | wc -l) carried wheels into $site"
      "$PY" -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$site" .whl/*.whl || return 1
      ls .whl > "$site/.wheels"
    fi
    export PYTHONPATH="$site"
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the repository on the path instead of an install
  local missing=() pair
  for pair in "$@"; do
    "$PY" -c "import ${pair%%=*}" 2>/dev/null || missing+=("${pair#*=}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    "$PY" -m pip install --quiet "${missing[@]}" || { echo "could not install ${missing[*]} (offline? carry them in .whl/)" >&2; return 1; }
  fi
  "$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "torch sees no CUDA device"
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {p.name}, {p.total_memory / 2**30:.0f} GiB, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
PY
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>/dev/null || true
}
