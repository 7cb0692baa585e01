"""Scratch folders for step outputs, removed when the process exits.

A step writes its output folder (a tuned model, an evaluation) to local disk and returns it;
ZenML's materializer then copies it into the artifact store. The local copy is not needed
afterwards, but a FLUX fine-tune is tens of GB, so it must not stay in /tmp: the folder is
removed when the process ends: at the end of the whole run on a local orchestrator (all steps
share one process, so until then the folders add up), when the step's pod ends with one pod per
step.
"""

import atexit
import shutil
import tempfile
from pathlib import Path


def scratch_dir(prefix: str) -> Path:
    """A new temporary folder that is deleted, with everything in it, when this process exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
