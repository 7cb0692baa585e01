"""Train several job folders, one after another, in one launched process group (``JOB_DIR OUT_DIR`` pairs).

The multi-process tests start this under torchrun instead of ``ops.train`` when they compare several
methods: the processes, imports and gloo group are paid once, not once per method.
"""

import sys

import torch.distributed as dist

from srpo.training.job import run_job

if __name__ == "__main__":
    pairs = sys.argv[1:]
    assert pairs and len(pairs) % 2 == 0, "usage: JOB_DIR OUT_DIR [JOB_DIR OUT_DIR ...]"
    try:
        for job_dir, out_dir in zip(pairs[::2], pairs[1::2]):
            run_job(job_dir, out_dir)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
