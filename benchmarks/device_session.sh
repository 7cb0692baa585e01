#!/usr/bin/env bash
# Issue #4's GPU checks as one script for a lent GPU: at most 9 of its 15 minutes (plus the start).
#
# Here, once (the device image has torch, transformers, accelerate and peft but not these;
# .whl/ is ignored through .git/info/exclude):
#   .venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl diffusers \
#       open_clip_torch ftfy wcwidth importlib_metadata "pydantic==2.12.5" "pydantic-core==2.41.5" \
#       annotated_types typing_inspection
# Then the device tool: run(command="bash benchmarks/device_session.sh", carry=[".whl"], timeout_s=600),
# and copy the figures and the card's name into docs/performance.md.
#
# $OUT gets three files (the device tool returns at most 8): gpu.txt, results.txt (each
# benchmark's last line, one JSON object, after its name) and logs.txt (the last 150 lines of
# each log). A benchmark that fails or runs out of its time does not stop the others.
set -uo pipefail
OUT=${OUT:-/tmp/srpo-device}
mkdir -p "$OUT"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install --quiet --no-deps --no-index .whl/*.whl >/tmp/install.log 2>&1 \
    || { echo "install failed:"; tail -n 20 /tmp/install.log; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1

run() {  # name, seconds, module and arguments
    local name=$1 seconds=$2
    shift 2
    local start=$SECONDS log=/tmp/$name.log
    timeout "$seconds" python3 -m "$@" >"$log" 2>&1
    local rc=$?
    echo "$name exit=$rc seconds=$((SECONDS - start)) $(tail -n 1 "$log")" >>"$OUT/results.txt"
    { echo "===== $name (exit $rc)"; tail -n 150 "$log"; } >>"$OUT/logs.txt"
    echo "$name: exit $rc after $((SECONDS - start)) s: $(tail -n 1 "$log" | cut -c1-300)"
}

# the MFU goal first: eager and compiled, rollouts of 4, three kinds of update
run gpu_step_rollout4 210 benchmarks.gpu_step --rollout-batch 4 --budget-s 100 --profile   # apart, fused, VAE NHWC
run trainer_step_compiled_fused 200 benchmarks.trainer_step --compile --fuse-branches   # the trainer itself
run trainer_gpu_check 100 benchmarks.trainer_gpu_check --compile    # resume, finiteness, compiled vs eager
