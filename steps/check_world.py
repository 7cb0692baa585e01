"""Check the bootstrapped world against the issue's targets; a sample grid as a visualization."""

from typing import Annotated

from PIL import Image
from zenml import log_metadata, step
from zenml.integrations.pillow.materializers.pillow_image_materializer import PillowImageMaterializer  # noqa: F401

from srpo.artifacts import ModelFolder
from srpo.models.families import load_policy_for
from srpo.rewards import RewardConfig, load_reward
from srpo.world.bootstrap import WorldCheckConfig, check_world as _check
from srpo.world.plots import image_grid
from srpo.world.shapes import WorldSpec
from steps._log import library_logging


@step
def check_world(generator: ModelFolder, reward: ModelFolder, world: WorldSpec, checks: WorldCheckConfig) -> tuple[
    Annotated[dict, "world_checks"], Annotated[Image.Image, "world_samples"]
]:
    """Reward ranking of attribute words (held-out images) and generator colour correctness (graded samples)."""
    library_logging()
    policy = load_policy_for(str(generator.path), device="cpu")
    clip = load_reward(RewardConfig(name="hf_clip", checkpoint=str(reward.path)))
    report, samples, sample_prompts = _check(policy, clip, world, checks)
    images, prompts = samples[::checks.samples_per_prompt], sample_prompts[::checks.samples_per_prompt]  # one a prompt
    grid = image_grid([images[i:i + 12] for i in range(0, 48, 12)], ["", "", "", ""], scale=2, label_width=4,
                      title="generator samples, one per prompt: " + "; ".join(prompts[:2]) + " ...")
    log_metadata(metadata={"reward_attribute_words": report["reward"]["attribute_words"],
                           "generator_colours": report["generator"]["colours"], "passed": report["passed"],
                           "reward_saturation_preference": report["reward"]["saturation_preference"]})
    return report, grid
