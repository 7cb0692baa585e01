"""Promote the run's Model version: ``production`` (the old one ``archived``), ``staging`` or nothing.

The rule is :mod:`srpo.evaluation.promotion`; this step reads and writes ZenML's Model Control
Plane. Production's evaluation is *stored*, not re-run: every version this step judges gets, as
version metadata, the per-prompt scores of the rule's metrics (``promotion_scores``) and a
fingerprint of how they were measured (``promotion_settings``: prompts, seeds, sampler settings,
resolution, base model, metric configs). The evaluation is seeded, so re-running production on the
same prompts would repeat those numbers at the cost of a second generation pass (hours of GPU on
HPDv2); the fingerprint makes sure the stored numbers are for the same prompts, seeds and metrics.
When they are not (production was promoted by hand, or the held-out set changed), the new version
is compared with the base model instead and can reach ``staging`` at most.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Optional

from zenml import get_step_context, step
from zenml.client import Client
from zenml.enums import ModelStages

from srpo.artifacts import ModelFolder
from srpo.config import PolicyConfig
from srpo.evaluation.config import EvalConfig, MetricConfig
from srpo.evaluation.promotion import NONE, PRODUCTION, STAGING, Decision, PromotionConfig, comparable, decide


def evaluation_settings(evaluation: dict, eval_config: EvalConfig, policy: PolicyConfig,
                        metrics: Optional[dict[str, MetricConfig]], cfg: PromotionConfig) -> dict:
    """What must be equal for two versions' scores to be compared prompt by prompt."""
    prompts = json.dumps([evaluation["prompts"], evaluation.get("categories")], ensure_ascii=False)
    named = [cfg.primary_metric, *cfg.judges]
    return {"prompts_sha256": hashlib.sha256(prompts.encode()).hexdigest()[:16],
            "num_prompts": len(evaluation["prompts"]), "evaluation": eval_config.model_dump(
                mode="json", exclude={"edits"} if eval_config.edits is None else None),  # as before edits existed
            "height": policy.height, "width": policy.width, "base_model": policy.pretrained,
            "metrics": {m: metrics[m].model_dump(mode="json") if metrics and m in metrics else "reward" for m in named}}


def run_promotion(client: Client, model_name: str, version_id, evaluation: dict, cfg: PromotionConfig,
                  settings: dict, published_update: Optional[int]) -> Decision:
    """Judge version ``version_id`` of ``model_name`` against production (or the base model) and set its stage.

    Logs the decision, its numbers and reason, and what later runs compare against, as version metadata.
    """
    scores = evaluation["per_prompt"]
    named = [cfg.primary_metric, *cfg.judges]
    for model in ("tuned", "base"):
        if model not in scores:
            raise ValueError(f"promotion needs the evaluation of 'tuned' and 'base' (got {sorted(scores)}): "
                             "run it after evaluate in srpo_training")
    try:
        production = client.get_model_version(model_name, ModelStages.PRODUCTION)
    except KeyError:
        production = None
    note = ""
    if production is not None and production.id != version_id:
        meta = production.run_metadata
        stored = meta.get("promotion_scores")
        why = comparable(settings, meta.get("promotion_settings"))
        if why is None and stored is not None:
            decision = decide(scores["tuned"], stored, evaluation.get("categories"), cfg,
                              published_update=published_update, against=f"production (version {production.name})")
        else:
            note = f"not comparable with production (version {production.name}): {why or 'no stored scores'}; "
            decision = decide(scores["tuned"], scores["base"], evaluation.get("categories"), cfg,
                              published_update=published_update, against="base")
            if decision.stage == PRODUCTION:
                decision.stage, decision.code = STAGING, "not-comparable"
    else:
        decision = decide(scores["tuned"], scores["base"], evaluation.get("categories"), cfg,
                          published_update=published_update, against="base")
        note = "first version of the Model; " if production is None else ""
    decision.reason = note + decision.reason
    # `zenml model version list` shows stages and tags (not metadata): the short reason goes into a tag,
    # the full one into the description and metadata; force: the version now in the stage is archived
    client.update_model_version(model_name_or_id=model_name, version_name_or_id=version_id,
                                stage=decision.stage if decision.stage != NONE else None, force=True,
                                description=f"promotion {decision.stage}: {decision.reason}",
                                add_tags=[f"promotion:{decision.code}"])
    client.create_run_metadata(
        metadata={**decision.metadata(), "promotion_settings": settings, "promotion_published_update": published_update,
                  "promotion_scores": {m: [float(v) for v in scores["tuned"][m]] for m in named}},
        resources=[_resource(version_id)])
    return decision


def _resource(version_id):
    from zenml.enums import MetadataResourceTypes
    from zenml.models import RunMetadataResource

    return RunMetadataResource(id=version_id, type=MetadataResourceTypes.MODEL_VERSION)


@step
def promote_model(evaluation: dict, tuned: ModelFolder, promotion: PromotionConfig, policy: PolicyConfig,
                  eval_config: EvalConfig, metrics: Optional[dict[str, MetricConfig]] = None
                  ) -> Annotated[str, "promotion_stage"]:
    """Set the run's Model version to ``production``, ``staging`` or leave it; returns the stage given."""
    model_version = get_step_context().model_version
    if model_version is None:
        raise ValueError("promotion needs the run's ZenML Model: keep the pipeline's model (or the config's "
                         "`model:` section)")
    log = tuned.path / "training_log.json"
    published = json.loads(log.read_text()).get("published_update") if log.is_file() else None
    settings = evaluation_settings(evaluation, eval_config, policy, metrics, promotion)
    decision = run_promotion(Client(), model_version.model.name, model_version.id, evaluation, promotion, settings, published)
    print(f"promotion: {decision.stage}: {decision.reason}")
    return decision.stage
