"""The world's generator: the fixed VAE is exact; flow matching runs and lowers its loss."""

import torch
import torch.nn.functional as F

from srpo.world.generator import GeneratorConfig, build_pipeline, encode, fit_latent_scaling, train_generator
from srpo.world.shapes import draw

TINY = dict(layers=1, single_layers=1, heads=2, head_dim=8, axes_dims_rope=(2, 2, 4), text_dim=16, pooled_dim=16,
            t5_max_length=16, steps=12, batch_size=16, learning_rate=3e-3, pool_size=32)


def test_analytic_vae_encodes_block_means_and_decodes_them_exactly_and_differentiably():
    pipe = build_pipeline(GeneratorConfig(**TINY))
    images, _, _ = draw(16, seed=5)
    with torch.no_grad():
        z = pipe.vae.encode(images * 2 - 1).latent_dist.mode()  # [16, 3, 8, 8]
        assert torch.allclose(z, F.avg_pool2d(images * 2 - 1, 8), atol=1e-4)
        decoded = pipe.vae.decode(z).sample
        assert torch.allclose(decoded, F.interpolate(z, scale_factor=8, mode="nearest"), atol=1e-4)
    z = z.clone().requires_grad_(True)
    pipe.vae.decode(z).sample.sum().backward()
    assert torch.allclose(z.grad, torch.full_like(z.grad, 64.0), atol=1e-2)  # each latent feeds 8x8 pixels


def test_latent_scaling_normalises_latents():
    pipe = build_pipeline(GeneratorConfig(**TINY))
    images, _, _ = draw(64, seed=6)
    _, _, x0 = fit_latent_scaling(pipe.vae, images)
    assert abs(float(x0.mean())) < 1e-3 and abs(float(x0.std()) - 1.0) < 1e-3
    assert torch.allclose(encode(pipe.vae, images), x0, atol=1e-4)


def test_flow_matching_trains_deterministically_and_the_loss_falls():
    pipe_a, info_a = train_generator(GeneratorConfig(**TINY))
    _, info_b = train_generator(GeneratorConfig(**TINY))
    curve = info_a["flow_curve"]
    assert len(curve) == 12 and info_a["flow_curve"] == info_b["flow_curve"]
    assert sum(curve[-4:]) / 4 < sum(curve[:4]) / 4
    assert pipe_a.transformer.config.in_channels == 12  # 3 latent channels, 2x2 packed
