"""The entry point of each pod of a multi-pod training step: one ``torchrun`` of ``python -m ops.train`` per pod.

    python -m ops.multinode WORK_DIR [--nproc-per-node N]

Where the pod stands comes from the variables ZenML and Kubernetes set (:mod:`srpo.training.multinode`);
``WORK_DIR/job`` is the job (:func:`srpo.training.job.write_job`) and ``WORK_DIR/out`` receives the result.
torchrun's elastic agent runs in this process (not a second interpreter that imports torch again): the
pod's processes are this launcher and its ``nproc_per_node`` trainers.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ops.train import ENTRY
from srpo.training.job import JOB_FILE, TrainingJob
from srpo.training.multinode import NPROC_PER_NODE, WORK_DIR, check_world, pod_place, torchrun_command

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.multinode", description=__doc__.split("\n")[0])
    parser.add_argument("work_dir", nargs="?", default=os.environ.get(WORK_DIR),
                        help=f"shared folder with job/ (default ${WORK_DIR})")
    parser.add_argument("--nproc-per-node", type=int, default=int(os.environ.get(NPROC_PER_NODE, "1")),
                        help="training processes per pod, one per GPU (default $SRPO_NPROC_PER_NODE or 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not args.work_dir:
        parser.error(f"WORK_DIR is not given and ${WORK_DIR} is not set: pass the shared folder that holds job/")
    job = Path(args.work_dir) / "job" / JOB_FILE
    if not job.is_file():
        parser.error(f"WORK_DIR {args.work_dir}: no {job.relative_to(args.work_dir)} there; write the job first "
                     "(srpo.training.job.write_job) on a volume every pod mounts at the same path")
    try:
        place = pod_place()
    except ValueError as err:
        parser.error(str(err))
    try:
        check_world(TrainingJob.model_validate_json(job.read_text()).train, place.count, args.nproc_per_node)
    except ValueError as err:
        parser.error(str(err))
    cmd = torchrun_command(place, args.work_dir, args.nproc_per_node, ENTRY)
    log.info("pod %d of %d (main %s:%d): %s", place.index, place.count, place.address, place.port, " ".join(cmd))
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the trainers inherit it: one thread each unless told
    return run_torchrun(cmd)


def run_torchrun(cmd: list[str]) -> int:
    """Run ``cmd`` (``python -m torch.distributed.run ...``, as torchrun_command builds it) in this process;
    the exit status the command would have had: 0, 1 when a trainer failed, 128 + N when signal N stopped it."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    prefix = [sys.executable, "-m", torchrun.__name__]
    if cmd[:3] != prefix:
        raise ValueError(f"torchrun command {cmd[:3]}: expected it to start with {prefix}")
    try:
        torchrun.main(cmd[3:])
    except ChildFailedError as err:  # which trainer failed, its exit code and error file: as torchrun prints them
        log.error("%s", err)
        return 1
    except SignalException as err:  # the agent stopped its trainers first
        return 128 + int(err.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
