"""Export blinded human-evaluation pages from evaluation results; the key is a separate artifact."""

from typing import Annotated

from zenml import log_metadata, save_artifact, step

from srpo.evaluation.artifacts import EvalResults, HumanEvalPages
from srpo.evaluation.config import HumanEvalConfig
from srpo.evaluation.human_eval import export_human_eval as export
from srpo.evaluation.human_eval.export import export_location
from steps._artifacts import KEY_ARTIFACT
from steps._log import library_logging
from steps._scratch import scratch_dir


def save_key_artifact(key: dict) -> None:
    """Save the key as this step's ``human_eval_key`` output now, with its export id as metadata.

    Saved inside the step (ZenML would save a returned output only after the step function
    returned), so the key is stored before any page is published to ``output_dir``, and stays
    stored if the step fails later.
    """
    save_artifact(key, name=KEY_ARTIFACT, user_metadata={"export_id": key["export_id"]})


@step
def export_human_eval(results: EvalResults, config: HumanEvalConfig) -> Annotated[HumanEvalPages, "human_eval_pages"]:
    """One self-contained page per study and rater (``human_eval_pages``); the un-blinding key is the
    ``human_eval_key`` artifact, saved (also an output of this step) before the pages are published to
    ``<output_dir>/<export_id>/``."""
    library_logging()
    pages, key = export(results, config, scratch_dir("srpo-human-eval-") / "pages",
                        store_key=save_key_artifact)
    manifest = pages.read_json()
    metadata = {"export_id": key["export_id"], "pages": len(manifest["pages"]), "studies": manifest["studies"]}
    if config.output_dir:
        metadata["published_to"] = export_location(config.output_dir, key["export_id"])
    log_metadata(metadata=metadata)
    return pages
