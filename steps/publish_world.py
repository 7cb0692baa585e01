"""Publish the bootstrapped world where ``builtin:shapes-flux`` / ``builtin:shapes-clip`` (and, when trained,
``builtin:shapes-kontext``) resolve."""

import logging
from typing import Annotated, Optional

from zenml import get_step_context, log_metadata, step

from srpo.artifacts import ModelFolder
from srpo.published import published_fingerprint, publish

log = logging.getLogger(__name__)


@step(enable_cache=False)
def publish_world(generator: ModelFolder, reward: ModelFolder, checks: dict,
                  edit_model: Optional[ModelFolder] = None) -> Annotated[dict, "published_world"]:
    """Copy the model folders into ``$SRPO_CACHE/world/`` (never cached: the copy must exist on this machine)."""
    context = get_step_context()
    provenance = {"pipeline_run": context.pipeline_run.name, "pipeline_run_id": str(context.pipeline_run.id),
                  "checks_passed": bool(checks.get("passed"))}
    paths = {name: str(publish(name, folder.path, provenance))
             for name, folder in (("shapes-flux", generator), ("shapes-clip", reward), ("shapes-kontext", edit_model))
             if folder is not None}
    if not checks.get("passed"):
        log.warning("published a world that misses the bootstrap targets: %s", checks.get("targets"))
    result = {"paths": paths, "fingerprint": published_fingerprint(), **provenance}
    log_metadata(metadata=result)
    return result
