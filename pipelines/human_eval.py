"""``srpo_human_eval``: read the raters' exported files, check and un-blind them, report.

    zenml pipeline run pipelines.human_eval.srpo_human_eval --config configs/human_eval_import.yaml

The key is the ``human_eval_key`` artifact of the run that exported the pages, found by the
annotation files' export id, unless ``annotations.key`` names it (a JSON file or an artifact
version id).
"""

from ops.pipeline import pipeline

from srpo.evaluation.config import HumanEvalImportConfig
from steps import import_human_eval


@pipeline(enable_cache=False)
def srpo_human_eval(annotations: HumanEvalImportConfig) -> None:
    import_human_eval(config=annotations)
