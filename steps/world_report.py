"""Before/after on the shapes world: the demo's table, image grid and curves (ZenML visualizations)."""

import json
from typing import Annotated

from PIL import Image
from zenml import log_metadata, step
from zenml.integrations.pillow.materializers.pillow_image_materializer import PillowImageMaterializer  # noqa: F401
from zenml.types import HTMLString

from srpo.artifacts import ModelFolder, RolloutSet
from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.models.families import load_policy
from srpo.rewards import RewardConfig, load_reward
from srpo.world.report import WorldReportConfig, run_world_report
from steps._log import library_logging


@step
def world_report(rollouts: RolloutSet, tuned: ModelFolder, policy: PolicyConfig, reward: RewardConfig,
                 rollout: RolloutConfig, train: TrainConfig, world: WorldReportConfig) -> tuple[
    Annotated[dict, "world_report"], Annotated[HTMLString, "world_table"],
    Annotated[Image.Image, "world_grid"], Annotated[Image.Image, "world_curves"],
]:
    """Steered attribute share, fidelity and reward, before vs after; replayed curves if ``curve_every``."""
    library_logging()
    history = json.loads((tuned.path / "training_log.json").read_text())["history"]
    result = run_world_report(
        load_base=lambda: load_policy(policy),
        load_tuned=lambda: load_policy(policy, transformer=str(tuned.path)),
        load_reward=lambda: load_reward(reward), rollouts=rollouts, train=train, rollout=rollout, cfg=world,
        history=history, tuned_folder=tuned.path)
    log_metadata(metadata={"movement": result["comparison"]["movement"],
                           "colour_drop": result["comparison"]["colour_drop"],
                           "movement_reached": result["comparison"]["movement_reached"],
                           "fidelity_kept": result["comparison"]["fidelity_kept"]})
    return result["report"], HTMLString(result["html"]), result["grid"], result["curves"]
