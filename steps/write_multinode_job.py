"""Write the training job for the multi-node command step onto the volume every pod mounts."""

from pathlib import Path
from typing import Annotated

from zenml import step

from srpo.artifacts import RolloutSet
from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.rewards import RewardConfig
from srpo.training.job import write_job


@step
def write_multinode_job(rollouts: RolloutSet, policy: PolicyConfig, reward: RewardConfig, rollout: RolloutConfig,
                        train: TrainConfig, work_dir: str) -> Annotated[str, "multinode_job"]:
    """``work_dir/job`` in :mod:`srpo.training.job`'s format (validated there); returns its path.

    ``work_dir`` is the shared folder that ``python -m ops.multinode`` reads on every pod;
    ``train.checkpoint_dir`` must lie on the same volume (the pods resume from it).
    """
    return str(write_job(Path(work_dir) / "job", policy, reward, rollout, train, rollouts))
