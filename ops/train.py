"""One process of a training job: train the job in JOB_DIR into OUT_DIR (started alone, or by accelerate / torchrun).

    python -m ops.train JOB_DIR OUT_DIR                                      # one process
    accelerate launch --multi_gpu --num_processes 8 -m ops.train JOB_DIR OUT_DIR   # one node, 8 GPUs
    torchrun --standalone --nproc-per-node 2 -m ops.train JOB_DIR OUT_DIR     # CPU, 2 processes (gloo)
    torchrun --nnodes 4 --nproc-per-node 8 --node-rank $RANK --master-addr $ADDR \\
        --master-port 29500 -m ops.train JOB_DIR OUT_DIR                     # several nodes

The job folder is :func:`srpo.training.job.write_job`'s. This entry point sits above the
evaluation suite and the world: it builds the guard's metric functions
(:func:`srpo.world.guard_metrics.build_job_guard_metrics`) and registers the suite's scorer, so a
``reward: {name: score, metric: ...}`` loads in every process. Running the same command again
resumes from the newest valid checkpoint in ``train.checkpoint_dir``.
"""

from __future__ import annotations

import argparse
import logging

import srpo.evaluation.metrics  # noqa: F401  (registers the suite's scorer: reward {name: score, metric: ...})
from srpo.training.job import run_job
from srpo.world.guard_metrics import build_job_guard_metrics

#: This module, as the launchers name it (``-m ops.train``).
ENTRY = "ops.train"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.train",
                                     description="One process of a training job (alone, or started by accelerate or "
                                                 "torchrun): train the job in JOB_DIR into OUT_DIR.")
    parser.add_argument("job_dir", metavar="JOB_DIR", help="the folder the job was written to (srpo.training.job)")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where the tuned transformer is written")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        run_job(args.job_dir, args.out_dir, guard_metrics=build_job_guard_metrics)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # every process leaves gloo / NCCL together, before interpreter teardown


if __name__ == "__main__":
    main()
