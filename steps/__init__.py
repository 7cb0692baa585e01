"""ZenML steps: thin, typed wrappers around the ``srpo`` library, one per file; pipelines import them from here."""

import materializers  # noqa: F401  (registers the model-folder and rollout materializers)
from steps.analyze_prompts import analyze_prompts
from steps.check_world import check_world
from steps.evaluate import evaluate
from steps.evaluate_edits import evaluate_edits
from steps.export_human_eval import export_human_eval
from steps.export_model import export_model
from steps.find_control_words import find_control_words
from steps.generate_rollouts import generate_rollouts
from steps.import_human_eval import import_human_eval
from steps.load_benchmark import load_benchmark
from steps.prepare_prompts import prepare_prompts
from steps.promote_model import promote_model
from steps.publish_world import publish_world
from steps.register_multinode_result import register_multinode_result
from steps.train_multinode import train_multinode
from steps.train_srpo import train_srpo
from steps.train_world_edit_generator import train_world_edit_generator
from steps.train_world_generator import train_world_generator
from steps.train_world_reward import train_world_reward
from steps.world_report import world_report
from steps.write_multinode_job import write_multinode_job

__all__ = ["analyze_prompts", "check_world", "evaluate", "evaluate_edits", "export_human_eval", "export_model", "find_control_words", "generate_rollouts",
           "import_human_eval", "load_benchmark", "prepare_prompts", "promote_model", "publish_world", "register_multinode_result",
           "train_multinode", "train_srpo", "train_world_edit_generator", "train_world_generator", "train_world_reward", "world_report",
           "write_multinode_job"]
