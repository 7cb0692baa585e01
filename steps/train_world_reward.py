"""Train the shapes world's CLIP reward (contrastive, on the world's captions) into a model folder."""

from typing import Annotated

from zenml import log_metadata, step

from srpo.artifacts import ModelFolder
from srpo.world.bootstrap import bootstrap_reward
from srpo.world.reward import RewardTrainConfig
from srpo.world.shapes import WorldSpec
from steps._log import library_logging
from steps._scratch import scratch_dir


@step
def train_world_reward(reward: RewardTrainConfig, world: WorldSpec) -> Annotated[ModelFolder, "shapes_clip"]:
    """A transformers CLIPModel folder (tokenizer and image processor included): the ``hf_clip`` layout."""
    library_logging()
    out = scratch_dir("shapes-clip-")
    info = bootstrap_reward(reward, world, out)
    log_metadata(metadata={"seconds": info["seconds"], "params": info["params"],
                           "final_loss": sum(info["loss_curve"][-50:]) / max(1, len(info["loss_curve"][-50:])),
                           "planted_bias": str(reward.bias)})
    return ModelFolder(out, kind="hf_clip")
