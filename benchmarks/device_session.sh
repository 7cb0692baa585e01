#!/usr/bin/env bash
# Issue #4's GPU checks as one script for a lent GPU: at most 6 minutes (360 s, the sum of the
# timeouts below: install 20 + nvidia-smi 10 + gpu_step 150 + trainer_step 130 + trainer_gpu_check
# 50), so that with the machine's start a second run still fits in the 15 minutes of device time.
#
# Here, once (the device image has torch, transformers, accelerate and peft but not these;
# .whl/ is ignored through .git/info/exclude):
#   .venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl diffusers \
#       open_clip_torch ftfy wcwidth importlib_metadata "pydantic==2.12.5" "pydantic-core==2.41.5" \
#       annotated_types typing_inspection
# Then the device tool: run(command="bash benchmarks/device_session.sh", carry=[".whl"], timeout_s=420),
# and copy the figures, the card's name and the JSON files into docs/performance.md / docs/benchmarks/.
#
# $OUT gets six files (the device tool returns at most 8): gpu.txt; one JSON file per benchmark
# (gpu_step.json, trainer_step.json, trainer_gpu_check.json: written by the benchmark itself with
# --json-out, after every measurement, so a benchmark stopped by its timeout leaves what it had
# measured, marked "partial": true); results.txt (per benchmark: exit status, seconds and that
# file's content); logs.txt (the last lines of each benchmark's stdout and, apart, its stderr).
# A benchmark that fails or runs out of its time does not stop the others.
#
# What is measured, most informative first: gpu_step (eager and compiled passes: rollout MFU at a
# batch of 4 prompts, training MFU of the update apart / fused / VAE channels-last, one profiled
# update and rollout step per pass, 3 timed repeats each; the compiled pass is skipped if the
# eager one ends after 75 s); trainer_step (SRPOTrainer.train_step at FLUX.1 size with gradient
# checkpointing as configs/flux_*.yaml set it, compiled and with fused branches, 3 timed updates);
# trainer_gpu_check (tiny FLUX: full, LoRA and compiled LoRA, resume, finiteness).
set -uo pipefail
OUT=${OUT:-/tmp/srpo-device}
mkdir -p "$OUT"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
timeout 20 python3 -m pip install --quiet --no-deps --no-index .whl/*.whl >/tmp/install.log 2>&1 \
    || { echo "install failed:"; tail -n 20 /tmp/install.log; }
timeout 10 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1

run() {  # name, seconds, module and arguments
    local name=$1 seconds=$2
    shift 2
    local start=$SECONDS log=/tmp/$name.log err=/tmp/$name.err json=$OUT/$name.json
    timeout "$seconds" python3 -m "$@" --json-out "$json" >"$log" 2>"$err"
    local rc=$?
    local result="(no JSON written)"
    [ -s "$json" ] && result=$(cat "$json")
    echo "$name exit=$rc seconds=$((SECONDS - start)) $result" >>"$OUT/results.txt"
    { echo "===== $name (exit $rc): stdout"; tail -n 40 "$log"; echo "===== $name: stderr"; tail -n 60 "$err"; } \
        >>"$OUT/logs.txt"
    echo "$name: exit $rc after $((SECONDS - start)) s: $(cut -c1-300 <<<"$result")"
}

# the MFU goal first: eager and compiled, rollouts of 4, three kinds of update, profiled
run gpu_step 150 benchmarks.gpu_step --rollout-batch 4 --repeats 3 --budget-s 75 --profile
run trainer_step 130 benchmarks.trainer_step --checkpointing --compile --fuse-branches --updates 3
run trainer_gpu_check 50 benchmarks.trainer_gpu_check --compile    # resume, finiteness, compiled vs eager
