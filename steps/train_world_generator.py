"""Train the shapes world's FLUX generator (flow matching on drawn images) into a model folder."""

from typing import Annotated

from zenml import log_metadata, step

from srpo.artifacts import ModelFolder
from srpo.world.bootstrap import bootstrap_generator
from srpo.world.generator import GeneratorConfig
from srpo.world.shapes import WorldSpec
from steps._log import library_logging
from steps._scratch import scratch_dir


@step
def train_world_generator(generator: GeneratorConfig, world: WorldSpec) -> Annotated[ModelFolder, "shapes_flux"]:
    """A diffusers FLUX pipeline folder: trained transformer, fixed 8x8-block VAE, offline tokenizers."""
    library_logging()
    out = scratch_dir("shapes-flux-")
    info = bootstrap_generator(generator, world, out)
    log_metadata(metadata={"seconds": info["seconds"], "transformer_params": info["transformer_params"],
                           "final_loss": sum(info["flow_curve"][-50:]) / max(1, len(info["flow_curve"][-50:])),
                           "loss_curve_every_50": info["flow_curve"][::50]})
    return ModelFolder(out, kind="diffusers")
