"""ZenML steps: thin, typed wrappers around the ``srpo`` library, one per file."""

import materializers  # noqa: F401  (registers the model-folder and rollout materializers)
from steps.evaluate import evaluate
from steps.generate_rollouts import generate_rollouts
from steps.prepare_prompts import prepare_prompts
from steps.train_srpo import train_srpo

__all__ = ["prepare_prompts", "generate_rollouts", "train_srpo", "evaluate"]
