"""Clean samples for training: policy rollouts (online) or encoded real images (offline)."""

from typing import Annotated

from zenml import log_metadata, step

from srpo.artifacts import RolloutSet
from srpo.config import PolicyConfig, RolloutConfig
from srpo.models.families import inference_config, load_policy
from srpo.training.fit import check_rollouts_fit
from srpo.training.rollouts import edit_rollouts, encode_image_folder, generate_rollouts as _generate
from steps._log import library_logging


@step
def generate_rollouts(train_prompts: list[str], policy: PolicyConfig, rollouts: RolloutConfig) -> Annotated[
    RolloutSet, "rollouts"
]:
    """x0 and its noise prior for each training prompt (online) or each real image (offline), or each edit pair."""
    library_logging()
    check_rollouts_fit(policy, rollouts, len(train_prompts))  # before any weight loads
    model = load_policy(inference_config(policy))
    if rollouts.edits:  # edit families: (source, instruction) pairs instead of the prompts
        result = edit_rollouts(model, rollouts, policy)
    elif rollouts.mode == "online":
        result = _generate(model, train_prompts, rollouts, policy)
    else:
        result = encode_image_folder(model, rollouts, policy)
    log_metadata(metadata={"mode": result.mode, "num_rollouts": len(result),
                           "latent_shape": list(result.x0.shape[1:])})
    return result
