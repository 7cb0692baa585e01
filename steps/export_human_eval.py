"""Export blinded human-evaluation pages from evaluation results; the key is a separate artifact."""

import tempfile
from pathlib import Path
from typing import Annotated, Tuple

from zenml import log_metadata, step

from srpo.evaluation.artifacts import EvalResults, HumanEvalPages
from srpo.evaluation.config import HumanEvalConfig
from srpo.evaluation.human_eval import export_human_eval as export
from steps._log import library_logging


@step
def export_human_eval(results: EvalResults, config: HumanEvalConfig) -> Tuple[
    Annotated[HumanEvalPages, "human_eval_pages"], Annotated[dict, "human_eval_key"]
]:
    """One self-contained page per study and rater (``human_eval_pages``) and the un-blinding key."""
    library_logging()
    pages, key = export(results, config, Path(tempfile.mkdtemp(prefix="srpo-human-eval-")) / "pages")
    manifest = pages.read_json()
    log_metadata(metadata={"export_id": key["export_id"], "pages": len(manifest["pages"]),
                           "studies": manifest["studies"]})
    return pages, key
