"""Train several job folders, one after another, in one launched process group (``JOB_DIR OUT_DIR`` pairs).

The multi-process tests start this under torchrun instead of ``ops.train`` (whose per-process setup it
repeats: the suite's scorer registered, the guard's metrics built) when they train several jobs: the
processes, imports and gloo group are paid once, not once per job.
"""

import sys

import torch.distributed as dist

import srpo.evaluation.metrics  # noqa: F401  (registers the suite's scorer, as ops.train does)
from srpo.training.job import run_job
from srpo.world.guard_metrics import build_job_guard_metrics

if __name__ == "__main__":
    pairs = sys.argv[1:]
    assert pairs and len(pairs) % 2 == 0, "usage: JOB_DIR OUT_DIR [JOB_DIR OUT_DIR ...]"
    try:
        for job_dir, out_dir in zip(pairs[::2], pairs[1::2]):
            run_job(job_dir, out_dir, guard_metrics=build_job_guard_metrics)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
