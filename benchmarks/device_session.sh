#!/usr/bin/env bash
# The GPU checks as one script for a lent GPU: at most 9 minutes (540 s, the sum of the timeouts
# below: install 20 + nvidia-smi 10 + gpu_step 120 + real_size 240 + trainer_step 100 +
# trainer_gpu_check 50); with the machine's start (1-2 minutes) that is about 11 of the 15 minutes
# of device time, so one run fits and a second does not: check every part first on the CPU
# (tests/benchmarks/test_real_size.py and test_training_benchmarks.py run each one tiny).
#
# Here, once (the device image has torch, transformers, accelerate and peft but not these;
# .whl/ is ignored through .git/info/exclude):
#   .venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl diffusers \
#       open_clip_torch ftfy wcwidth importlib_metadata "pydantic==2.12.5" "pydantic-core==2.41.5" \
#       annotated_types typing_inspection torchao
# Then the device tool: run(command="bash benchmarks/device_session.sh", carry=[".whl"], timeout_s=590),
# and copy the figures, the card's name and the JSON files into docs/performance.md / docs/benchmarks/.
#
# $OUT gets seven files (the device tool returns at most 8): gpu.txt; one JSON file per benchmark
# (gpu_step.json, real_size.json, trainer_step.json, trainer_gpu_check.json: written by the benchmark itself with
# --json-out, after every measurement, so a benchmark stopped by its timeout leaves what it had
# measured, marked "partial": true); results.txt (per benchmark: exit status, seconds and that
# file's content); logs.txt (the last lines of each benchmark's stdout and, apart, its stderr).
# A benchmark that fails or runs out of its time does not stop the others.
#
# What is measured, most informative first: gpu_step (eager and compiled passes: rollout MFU at a
# batch of 4 prompts, training MFU of the update apart / fused / VAE channels-last, one profiled
# update and rollout step per pass, 3 timed repeats each; the compiled pass is skipped if the
# eager one ends after 75 s); real_size (one real-size LoRA SRPO update per family, random bf16
# weights, both branches, per-block checkpointing as the configs set it: seconds per update after a
# warm-up, MFU by the family's FLOP formula, peak memory against the memory plan; the frozen base
# in bf16 where the plan fits the card, else int8 / nf4: FLUX.2 [dev]'s 32 B base is 64 GB in bf16,
# so on an 80 GB H100 it runs int8 or nf4 and in bf16 only on the H200; families ordered so that
# those never run on a GPU come first and FLUX.2 [dev], the largest, last but one); trainer_step (SRPOTrainer.train_step at FLUX.1 size with gradient
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
run gpu_step 120 benchmarks.gpu_step --rollout-batch 4 --repeats 3 --budget-s 75 --profile
# every family at real size: one warm-up and 2 timed LoRA updates each, within 240 s together
run real_size 240 benchmarks.real_size --device cuda --method srpo --repeats 2 --quantization auto \
    --family qwen-image --family sd3 --family flux2-klein --family z-image --family flux2 --family flux
run trainer_step 100 benchmarks.trainer_step --checkpointing --compile --fuse-branches --updates 3
run trainer_gpu_check 50 benchmarks.trainer_gpu_check --compile    # resume, finiteness, compiled vs eager
