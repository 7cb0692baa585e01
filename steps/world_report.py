"""Before/after on the shapes world: the demo's table, image grid and curves (ZenML visualizations)."""

import json
from typing import Annotated

from PIL import Image
from zenml import log_metadata, step
from zenml.integrations.pillow.materializers.pillow_image_materializer import PillowImageMaterializer  # noqa: F401
from zenml.types import HTMLString

from srpo.artifacts import ModelFolder
from srpo.config import PolicyConfig, TrainConfig
from srpo.models.families import load_policy, resolve_device
from srpo.rewards import RewardConfig, load_reward
from srpo.training.fit import ROLLOUT_BATCH, check_inference_fits
from srpo.world.report import WorldReportConfig, run_world_report
from steps._log import library_logging


@step
def world_report(tuned: ModelFolder, policy: PolicyConfig, reward: RewardConfig, train: TrainConfig,
                 world: WorldReportConfig) -> tuple[
    Annotated[dict, "world_report"], Annotated[HTMLString, "world_table"],
    Annotated[Image.Image, "world_grid"], Annotated[Image.Image, "world_curves"],
]:
    """Steered attribute share, fidelity and reward, before vs after; curves from the training's guard checks."""
    library_logging()
    check_inference_fits(policy, resolve_device(policy.device), batch=ROLLOUT_BATCH, num_samples=ROLLOUT_BATCH,
                         decode_batch=ROLLOUT_BATCH, step="world report")  # before any weight loads
    training_log = json.loads((tuned.path / "training_log.json").read_text())
    result = run_world_report(
        load_base=lambda: load_policy(policy),
        load_tuned=lambda: load_policy(policy, transformer=str(tuned.path)),
        load_reward=lambda: load_reward(reward), train=train, cfg=world, history=training_log["history"],
        guard=training_log.get("guard"))
    log_metadata(metadata={"movement": result["comparison"]["movement"],
                           "colour_drop": result["comparison"]["colour_drop"],
                           "movement_reached": result["comparison"]["movement_reached"],
                           "fidelity_kept": result["comparison"]["fidelity_kept"]})
    return result["report"], HTMLString(result["html"]), result["grid"], result["curves"]
