"""Train the shapes world's edit model (a tiny FLUX.1 Kontext, from the world generator) into a model folder."""

from typing import Annotated

from zenml import log_metadata, step

from srpo.artifacts import ModelFolder
from srpo.world.bootstrap import bootstrap_edit_generator
from srpo.world.edit_generator import EditGeneratorConfig
from srpo.world.shapes import WorldSpec
from steps._log import library_logging
from steps._scratch import scratch_dir


@step
def train_world_edit_generator(edit: EditGeneratorConfig, world: WorldSpec, generator: ModelFolder
                               ) -> Annotated[ModelFolder, "shapes_kontext"]:
    """A diffusers FluxKontextPipeline folder; its ``world.json`` holds the done / kept check on held-out edits."""
    library_logging()
    out = scratch_dir("shapes-kontext-")
    info = bootstrap_edit_generator(edit, world, out, init=generator.path if edit.warm_start else None,
                                    check_edits=edit.check_edits)
    model = info.get("check", {}).get("model", {})
    log_metadata(metadata={"seconds": info["seconds"], "transformer_params": info["transformer_params"],
                           "final_loss": sum(info["flow_curve"][-50:]) / max(1, len(info["flow_curve"][-50:])),
                           "edits_done": model.get("done"), "edits_kept": model.get("kept")})
    return ModelFolder(out, kind="diffusers")
