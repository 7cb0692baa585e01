"""Check and un-blind the raters' annotation files; report shares of Excellent, rates and agreement."""

import tempfile
from pathlib import Path
from typing import Annotated

from zenml import log_metadata, step
from zenml.client import Client

from srpo.evaluation.artifacts import HumanEvalReport
from srpo.evaluation.config import HumanEvalImportConfig
from srpo.evaluation.human_eval import headline, import_human_eval as run_import, read_key
from srpo.evaluation.human_eval.importer import check_key


@step
def import_human_eval(config: HumanEvalImportConfig) -> Annotated[HumanEvalReport, "human_eval_report"]:
    """The key comes from ``config.key`` or, when unset, the latest ``human_eval_key`` artifact."""
    if config.key is not None:
        key = read_key(config.key)
    else:
        try:
            key = Client().get_artifact_version("human_eval_key").load()
        except KeyError as err:
            raise ValueError("no human_eval_key artifact exists: run export_human_eval first, or set key to the "
                             "key's JSON file") from err
        check_key(key, "the latest human_eval_key artifact")
    report = run_import(config, key, Path(tempfile.mkdtemp(prefix="srpo-human-report-")) / "report")
    data = report.read_json()
    log_metadata(metadata={"excellent_share": headline(data),
                           "hacking_rate": {r["model"]: r["hacking_rate"] for r in data["hacking"]
                                            if r["category"] == "all"},
                           "agreement": {f"{r['study']}/{r['dimension']}": r["alpha"] for r in data["agreement"]}})
    return report
