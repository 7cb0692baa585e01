"""Start the processes of a multi-process training job on this node.

The job folder is :func:`srpo.training.job.write_job`'s; each process runs an entry point that
reads it and trains (:func:`srpo.training.job.run_job`). The entry point lives above the
evaluation suite and the world, because it builds the guard's metric functions: it is
``python -m ops.train JOB_DIR OUT_DIR``, whose module name the caller passes in (``entry``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def process_command(job_dir: str | Path, out_dir: str | Path, num_processes: int, cpu: bool, entry: str) -> list[str]:
    """The command running module ``entry`` (``entry JOB_DIR OUT_DIR``) as ``num_processes`` processes.

    GPUs: ``accelerate launch --multi_gpu`` (one process per GPU, NCCL). CPU: ``torchrun``, which
    accelerate then sees as a multi-CPU run over gloo (``accelerate launch --cpu`` would start
    independent processes instead).
    """
    if cpu:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(num_processes)]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
               str(num_processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return cmd + ["-m", entry, str(job_dir), str(out_dir)]


def launch_processes(job_dir: str | Path, out_dir: str | Path, num_processes: int, cpu: bool, entry: str) -> None:
    """Run :func:`process_command` and wait for it (an error if any process fails)."""
    cmd = process_command(job_dir, out_dir, num_processes, cpu, entry)
    log.info("launching: %s", " ".join(cmd))
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
