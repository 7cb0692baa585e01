"""ZenML steps: thin, typed wrappers around the ``srpo`` library, one per file."""

import materializers  # noqa: F401  (registers the model-folder and rollout materializers)
from steps.analyze_prompts import analyze_prompts
from steps.evaluate import evaluate
from steps.export_human_eval import export_human_eval
from steps.find_control_words import find_control_words
from steps.generate_rollouts import generate_rollouts
from steps.import_human_eval import import_human_eval
from steps.load_benchmark import load_benchmark
from steps.prepare_prompts import prepare_prompts
from steps.train_srpo import train_srpo

__all__ = ["prepare_prompts", "generate_rollouts", "train_srpo", "evaluate", "load_benchmark", "analyze_prompts",
           "export_human_eval", "import_human_eval", "find_control_words"]
