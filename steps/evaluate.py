"""Score the base and the tuned model on held-out prompts with every configured reward."""

from typing import Annotated, Optional

from zenml import log_metadata, step

from srpo.artifacts import ModelFolder
from srpo.config import EvalConfig, PolicyConfig
from srpo.evaluation.scoring import evaluate_models
from srpo.models.flux import load_policy
from srpo.rewards import RewardConfig, load_reward
from steps._log import library_logging


@step
def evaluate(heldout_prompts: list[str], tuned: ModelFolder, policy: PolicyConfig, reward: RewardConfig,
             evaluation: EvalConfig, extra_rewards: Optional[dict[str, RewardConfig]] = None) -> Annotated[
    dict, "evaluation"
]:
    """Mean score per model and metric (``base`` vs ``tuned``), also logged as run metadata."""
    library_logging()
    metrics = {"reward": reward, **(extra_rewards or {})}
    rewards = {name: load_reward(cfg) for name, cfg in metrics.items()}
    loaders = {"base": lambda: load_policy(policy),
               "tuned": lambda: load_policy(policy, transformer=str(tuned.path))}
    report = evaluate_models(loaders, heldout_prompts, rewards, evaluation, policy.height, policy.width)
    deltas = {f"delta_{m}": report.delta(m) for m in rewards}
    log_metadata(metadata={"means": report.means, **deltas, "num_prompts": len(report.prompts)})
    return {**report.as_dict(), "deltas": deltas}
