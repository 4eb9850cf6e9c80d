#!/usr/bin/env bash
# Every accelerator number of bench/RESULTS.md in one call of about 10 minutes (8 before the
# attribution methods' run was added; not yet timed with it):
#
#   bash bench/device.sh [OUT_DIR]          # default bench/results/device (or $OUT on the lent machine)
#   SMOKE=1 bash bench/device.sh /tmp/x     # tiny sizes: checks the script itself on a CPU
#
# Measures, each against the matmul peak measured in the same process: IEM training images/s
# (CE, RE, TE at ImageNet size, bf16), TIS images/s (CE, N = 20), every other attribution
# method's images/s and % of peak (CE; IG with 20 path points, occlusion's m² + 1 passes),
# codebook-level selection steps/s × images (CE, K = 16384), and KV-cache generation tokens/s
# of the cin-sized transformer (random weights). Each benchmark has its own time limit, so one
# that hangs costs only itself; every JSON lands in OUT_DIR and the tables in OUT_DIR/device.log.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/results/device}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# one process per benchmark: let each take the memory it needs, and free it after
export XLA_PYTHON_CLIENT_PREALLOCATE=false

if [ "${SMOKE:-0}" = 1 ]; then
  # --smoke: tiny models (K 512, d 32, 8×8, 10 classes), so the check takes seconds
  iem=(--archs ce,re,te --batch_per_device 2 --dtype bfloat16 --smoke)
  tis=(--archs ce --batch 1 --n_samples 2 --chunk 2 --smoke)
  # the two methods with options and chunk loops; the others share their code path
  methods=(--archs ce --batch 1 --n_samples 2 --chunk 2 --ig_steps 4 --smoke
    --methods integrated_gradients,occlusion)
  sel=(--archs ce --batches 1,2 --steps 2 --smoke)
  gen=(--batch 2 --n_layer 2 --n_embd 128 --n_head 2 --smoke)
  limit=300
else
  iem=(--archs ce,re,te --batch_per_device 256 --dtype bfloat16)
  tis=(--archs ce,re --batch 64 --n_samples 20 --chunk 20)
  methods=(--archs ce --batch 64 --n_samples 20 --chunk 20 --ig_steps 20 --occlusion_chunk 64
    --methods gradient,grad_x_input,integrated_gradients,occlusion,random)
  sel=(--archs ce --batches 1,16,64 --steps 50)
  gen=(--batch 128)
  limit=120
fi

run() {  # name, then the module and its arguments
  local name=$1; shift
  echo "== $name: $*" | tee -a "$out/device.log"
  timeout "$limit" "$py" -m "$@" --json "$out/$name.json" 2>&1 | grep -v "^W0000\|^I0000" \
    | tee -a "$out/device.log"
  echo "   exit ${PIPESTATUS[0]}" | tee -a "$out/device.log"
}

: > "$out/device.log"
"$py" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee -a "$out/device.log"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm \
  --format=csv | tee -a "$out/device.log"
run iem_train bench.iem_train "${iem[@]}"
run tis bench.tis "${tis[@]}"
run tis_methods bench.tis "${methods[@]}"
run selection bench.selection "${sel[@]}"
run generate bench.generate "${gen[@]}"
