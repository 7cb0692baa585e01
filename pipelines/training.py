"""``srpo_training``: prompts -> rollouts -> SRPO training -> evaluation.

    zenml pipeline run pipelines.training.srpo_training --config configs/tiny_cpu.yaml
"""

from typing import Optional

from zenml import pipeline

from srpo.config import EvalConfig, PolicyConfig, RolloutConfig, TrainConfig
from srpo.prompts import PromptConfig
from srpo.rewards import RewardConfig
from steps import evaluate, generate_rollouts, prepare_prompts, train_srpo


@pipeline
def srpo_training(
    prompts: PromptConfig,
    reward: RewardConfig,
    policy: PolicyConfig = PolicyConfig(),
    rollouts: RolloutConfig = RolloutConfig(),
    train: TrainConfig = TrainConfig(),
    evaluation: EvalConfig = EvalConfig(),
    extra_rewards: Optional[dict[str, RewardConfig]] = None,
) -> None:
    train_prompts, heldout_prompts = prepare_prompts(config=prompts)
    rollout_set = generate_rollouts(train_prompts=train_prompts, policy=policy, rollouts=rollouts)
    tuned = train_srpo(rollouts=rollout_set, policy=policy, reward=reward, rollout=rollouts, train=train)
    evaluate(heldout_prompts=heldout_prompts, tuned=tuned, policy=policy, reward=reward,
             evaluation=evaluation, extra_rewards=extra_rewards)
