"""The multi-node training command step: ``python -m ops.multinode`` on every pod of a multi-pod step.

A ``zenml.CommandStep`` has no inputs or outputs: the pipeline hands it the shared work folder and
the processes per pod through the step's environment (:mod:`srpo.training.multinode`).
"""

from zenml import CommandStep

train_multinode = CommandStep(command=["python", "-m", "ops.multinode"], name="train_multinode")
