"""Export the run's tuned transformer into the formats users load (``srpo.export.writer``)."""

from typing import Annotated, Optional

from zenml import get_step_context, log_metadata, step

from srpo.artifacts import ModelFolder
from srpo.config import PolicyConfig, TrainConfig
from srpo.export.card import card_info
from srpo.export.writer import ExportConfig, export_model as write_export


@step
def export_model(tuned: ModelFolder, policy: PolicyConfig, train: TrainConfig, export: ExportConfig,
                 evaluation: Optional[dict] = None, promotion_stage: Optional[str] = None
                 ) -> Annotated[list[str], "exports"]:
    """Write every format in ``export.formats`` under ``export.out/<version>/<format>``; returns the locations."""
    model = get_step_context().model_version
    name, version = (model.model.name, str(model.name)) if model is not None else ("srpo", "unversioned")
    card = card_info(name, version, tuned.path, policy.model_dump(mode="json"), train.model_dump(mode="json"),
                     {k: evaluation[k] for k in ("means", "deltas") if k in evaluation} if evaluation else None,
                     {"stage": promotion_stage} if promotion_stage else None,
                     licence=get_step_context().model.license if model is not None else None)
    root = export.out.rstrip("/")
    out = [write_export(tuned.path, tuned.kind, policy.pretrained, fmt, f"{root}/{version}/{fmt}", card)
           for fmt in export.formats]
    log_metadata(metadata={"exports": out})
    return out
