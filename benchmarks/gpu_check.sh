#!/usr/bin/env bash
# The GPU check, in one run of at most 8 minutes by its own budget (docs/gpu.md).
#
# On the offline CUDA host (Python 3.12, CUDA 13 and cuDNN 9 as pip packages, no TensorFlow,
# no network), from the project root:
#   OUT=/path/to/results benchmarks/gpu_check.sh
# It installs onnxruntime-gpu from the carried parts if need be (.gpu/assemble.sh, see
# ../shared/gpu/README.md), builds dlinfer, runs the gpu-marked tests (CUDA against CPU for
# every zoo model, the IO-binding regression, device arrays, provider options), `dlinfer
# doctor --json`, `benchmarks/bench_zoo.py --device cpu,cuda --io-binding` and the serving
# benchmark on CUDA, and writes logs, tables, plots and summary.md under $OUT.
# Without an NVIDIA GPU it says so and exits 0 before doing anything else.
#
# Where TensorFlow is (the build machine), `benchmarks/gpu_check.sh --prepare` exports the zoo
# into .gpu/models-1, .gpu/models-2, ... (each small enough to travel in one 64 MiB transfer
# with the working tree); every run on the host collects whatever .gpu/models-* it was given
# into $GPU_CHECK_MODELS, so the folders can arrive over several calls.
#
# Environment: OUT (default ./gpu-check-out), PYTHON (python3; --prepare: .venv/bin/python),
# GPU_CHECK_ONLY (--prepare: comma-separated zoo names), GPU_CHECK_BUDGET_S (480),
# GPU_CHECK_MODELS (/tmp/gpu-models), GPU_CHECK_BATCHES (1,8,32,128), GPU_CHECK_MAX_SECONDS
# (per benchmark cell, 0.5), GPU_CHECK_COLLECT_ONLY=1 (collect parts and models, then stop),
# EXPECT_PARTS (onnxruntime-gpu wheel parts, 5).  GPU_CHECK_REHEARSE=1 walks every step on a
# machine without a GPU (no detection, no build: the source tree; CPU devices only), to check
# the script itself; its numbers mean nothing.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ "${1:-}" = "--prepare" ]; then
  # Build machine: export every zoo model (needs TensorFlow) and group the files for transfer.
  py=${PYTHON:-$root/.venv/bin/python}
  mkdir -p .gpu/export
  grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  PYTHONPATH=$root/python${PYTHONPATH:+:$PYTHONPATH} "$py" benchmarks/bench_zoo.py \
    --export-only --models .gpu/export ${GPU_CHECK_ONLY:+--only "$GPU_CHECK_ONLY"} || exit 1
  rm -rf .gpu/models-*
  limit=$(( 60 * 1024 * 1024 - $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) ))
  group=1 size=0
  for f in $(ls -S .gpu/export/*.onnx); do
    bytes=$(stat -c %s "$f")
    if [ $(( size + bytes )) -gt "$limit" ] && [ "$size" -gt 0 ]; then
      group=$(( group + 1 )) size=0
    fi
    mkdir -p ".gpu/models-$group"
    cp "$f" ".gpu/models-$group/"
    size=$(( size + bytes ))
  done
  for d in .gpu/models-*; do
    echo "$d: $(ls "$d" | wc -l) models, $(( $(du -cb "$d"/*.onnx | tail -1 | cut -f1) / 1048576 )) MiB"
  done
  echo "carry one folder per call (run: carry=[\".gpu/models-N\"]), the last with the check"
  exit 0
fi

budget=${GPU_CHECK_BUDGET_S:-480}
start=$(date +%s)
OUT=${OUT:-$root/gpu-check-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
MODELS=${GPU_CHECK_MODELS:-/tmp/gpu-models}
failed=()
rehearse=${GPU_CHECK_REHEARSE:-}
gpu=cuda
[ -n "$rehearse" ] && gpu=cpu

log() { echo "[gpu_check +$(( $(date +%s) - start ))s] $*" | tee -a "$OUT/gpu_check.log"; }
elapsed() { echo $(( $(date +%s) - start )); }

# step NAME CAP RESERVE CMD...: run CMD with at most CAP seconds, and never into the RESERVE
# seconds the later steps need; its output goes to $OUT/NAME.log.
step() {
  local name=$1 cap=$2 reserve=$3 limit rc
  shift 3
  limit=$(( budget - $(elapsed) - reserve ))
  [ "$limit" -gt "$cap" ] && limit=$cap
  if [ "$limit" -lt 10 ]; then
    log "$name: not run, the budget is spent"
    failed+=("$name (no time left)")
    return 1
  fi
  log "$name: $* (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    log "$name: ok"
  else
    [ $rc -eq 124 ] && log "$name: TIMED OUT after ${limit}s" || log "$name: FAILED (exit $rc)"
    tail -n 15 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$OUT/gpu_check.log"
    failed+=("$name (exit $rc)")
  fi
  return $rc
}

# -- 0. is there a GPU at all? --------------------------------------------------------------
gpus=""
if command -v nvidia-smi > /dev/null 2>&1; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -i '^GPU' || true)
fi
if [ -n "$rehearse" ]; then
  gpus="none: a rehearsal on CPU (GPU_CHECK_REHEARSE=1), every CUDA step runs on CPU"
elif [ -z "$gpus" ] && ! ls /dev/nvidia[0-9]* > /dev/null 2>&1; then
  log "no NVIDIA GPU detected (nvidia-smi lists none, no /dev/nvidia0): nothing to check on this machine"
  exit 0
fi
log "GPU: ${gpus:-a /dev/nvidia device (no nvidia-smi)}; budget ${budget}s; results in $OUT"

# -- 1. onnxruntime-gpu and the zoo models, possibly carried over several calls ---------------
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
has_cuda_ep() {
  "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" 2>/dev/null
}
if ! has_cuda_ep && [ -f .gpu/assemble.sh ]; then
  log "onnxruntime-gpu: collecting the carried wheel parts (.gpu/assemble.sh)"
  EXPECT_PARTS=${EXPECT_PARTS:-5} bash .gpu/assemble.sh >> "$OUT/gpu_check.log" 2>&1
  case ":${PYTHONPATH:-}:" in *:/tmp/site:*) ;; *) export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH};; esac
fi
mkdir -p "$MODELS"
for d in .gpu/models-* .gpu/models; do
  [ -d "$d" ] && cp -n "$d"/*.onnx "$MODELS"/ 2>/dev/null
done
log "zoo models in $MODELS: $(ls "$MODELS"/*.onnx 2>/dev/null | xargs -n1 basename 2>/dev/null | tr '\n' ' ')"
if [ "${GPU_CHECK_COLLECT_ONLY:-}" = 1 ]; then
  log "GPU_CHECK_COLLECT_ONLY=1: parts and models collected, stopping here"
  exit 0
fi
if ! has_cuda_ep; then
  log "onnxruntime here has no CUDAExecutionProvider: install onnxruntime-gpu (see ../shared/gpu/README.md)"
  exit 1
fi
"$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" \
  | tee -a "$OUT/gpu_check.log"

# -- 2. build dlinfer ----------------------------------------------------------------------
site=/tmp/dlinfer-site
if [ -n "$rehearse" ]; then
  site=$root/python  # the source tree, with its compiled extension
else
  step build 200 260 "$PY" -m pip install --no-build-isolation --no-deps --no-index --upgrade \
    --target "$site" -Cbuild-dir=/tmp/dlinfer-build . || { log "cannot go on without dlinfer"; exit 1; }
fi
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
export DLINFER_ZOO_ONNX=$MODELS

# -- 3. the gpu-marked tests, and the CPU half of the IO-binding regression ---------------------
step tests 150 170 "$PY" -m pytest -p no:cacheprovider -q -rs -m gpu --junitxml="$OUT/gpu-tests.xml" \
  tests/test_io_binding.py tests/test_device_arrays.py tests/test_provider_options.py \
  tests/test_devices_zoo.py tests/test_devices.py tests/test_bench.py
step io-binding-cpu 30 160 "$PY" -m pytest -p no:cacheprovider -q tests/test_io_binding.py

# -- 4. doctor --------------------------------------------------------------------------------
step doctor 40 130 sh -c "'$PY' -m dlinfer doctor --json > '$OUT/doctor.json'" &&
  step doctor-json 10 130 "$PY" -c "import json; json.load(open('$OUT/doctor.json'))"

# -- 5. the zoo on CPU and CUDA, and serving on CUDA ---------------------------------------------
step zoo 200 60 "$PY" benchmarks/bench_zoo.py --device "cpu,$gpu" --io-binding --no-keras \
  --models "$MODELS" --out "$OUT/zoo" --readme "$OUT/README.md" \
  --batch-sizes "${GPU_CHECK_BATCHES:-1,8,32,128}" --max-seconds "${GPU_CHECK_MAX_SECONDS:-0.5}"
serve_model=$MODELS/mnist_cnn.onnx
[ -f "$serve_model" ] || serve_model=$(ls "$MODELS"/*.onnx 2>/dev/null | head -1)
if [ -n "$serve_model" ]; then
  step serve 60 5 "$PY" benchmarks/bench_serve.py "$serve_model" --device "$gpu" --no-http \
    --seconds 1.5 --rounds 1 --requests 3000
else
  log "serve: no model to serve"; failed+=("serve (no model)")
fi

# -- 6. summary ------------------------------------------------------------------------------
"$PY" - "$OUT" "$(elapsed)" "${failed[*]:-}" <<'EOF' | tee "$OUT/summary.md"
import json, os, sys, xml.etree.ElementTree as ET
out, seconds, failed = sys.argv[1], sys.argv[2], sys.argv[3]
print(f"# GPU check ({seconds} s)\n")
print("Failed steps: " + (failed or "none") + "\n")
try:
    suite = ET.parse(os.path.join(out, "gpu-tests.xml")).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    print(f"gpu tests: {suite.get('tests')} run, {suite.get('failures')} failed, "
          f"{suite.get('errors')} errors, {suite.get('skipped')} skipped\n")
    for case in suite.iter("testcase"):
        state = "FAILED" if case.find("failure") is not None or case.find("error") is not None \
            else "skipped" if case.find("skipped") is not None else "passed"
        print(f"- {case.get('name')}: {state}")
    print()
except (OSError, ET.ParseError, IndexError) as exc:
    print(f"gpu tests: no report ({exc})\n")
try:
    facts = json.load(open(os.path.join(out, "doctor.json")))
    print(f"doctor: usable providers {facts['providers']['usable']}; GPU "
          f"{[d['name'] for d in facts['gpu']['devices']]}\n")
except (OSError, ValueError, KeyError) as exc:
    print(f"doctor: no report ({exc})\n")
readme = os.path.join(out, "README.md")
if os.path.exists(readme):
    print(open(readme).read())
serve = os.path.join(out, "serve.log")
if os.path.exists(serve):
    print("\nServing benchmark (bench_serve.py --no-http):\n\n```")
    print(open(serve).read().strip()[-4000:])
    print("```")
EOF
log "done in $(elapsed)s of ${budget}s; ${#failed[@]} step(s) failed: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
