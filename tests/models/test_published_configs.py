"""The published configs the memory plan and the FLOP counts use when no weights are at hand."""

import inspect

import diffusers
import pytest
import torch

from srpo.models.families import FAMILIES
from srpo.models.published_configs import PUBLISHED


def test_every_family_has_a_published_config_its_transformer_class_builds_on_the_meta_device():
    assert set(PUBLISHED) == set(FAMILIES)
    for family, published in PUBLISHED.items():
        with torch.device("meta"):
            getattr(diffusers, FAMILIES[family].transformer_class).from_config(published["transformer"])
            getattr(diffusers, published["vae_class"]).from_config(published["vae"])


@pytest.mark.parametrize("family, cls", [("flux2", "Flux2Transformer2DModel"), ("qwen-image", "QwenImageTransformer2DModel"),
                                         ("z-image", "ZImageTransformer2DModel")])
def test_published_configs_equal_the_diffusers_class_defaults_that_mirror_the_hub_configs(family, cls):
    """diffusers' defaults for these classes are the flagship models' published configs: the plan's
    real sizes are checked against a maintained source, not typed from memory alone."""
    defaults = {k: v.default for k, v in inspect.signature(getattr(diffusers, cls).__init__).parameters.items()}
    as_list = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    assert {k: as_list(v) for k, v in PUBLISHED[family]["transformer"].items()} == \
        {k: as_list(defaults[k]) for k in PUBLISHED[family]["transformer"]}
