"""FLUX.1 Kontext with a source image, on the tiny built-in (``builtin:tiny-flux-kontext``).

The family-wide checks without a source (rollout = pipeline as text-to-image, LoRA, reload,
decode) are in test_families.py; here the source image's tokens: the rollout equals
``FluxKontextPipeline``'s latents for the same source, instruction, noise and steps; the source
changes the velocity and only the noisy tokens' velocity is read; Direct-Align recovers x0
exactly with the source attached; a LoRA trained with a source reloads through the pipeline.
"""

import pytest
import torch

from srpo.direct_align import denoise_recover, inversion_recover
from srpo.models.families import load_policy_for
from srpo.models.flux import latent_image_ids, pack_latents
from srpo.models.flux_kontext import FluxKontextPolicy, KontextCond, preferred_kontext_size, source_image_ids

SIZE = 32  # output side in pixels
INSTRUCTION = "make the circle red"


@pytest.fixture(scope="module")
def policy(family_dirs):
    return load_policy_for(str(family_dirs["flux-kontext"]))


def images(n=1, height=SIZE, width=SIZE, seed=0):
    """Smooth source images [n, 3, H, W] in [0, 1] (a gradient and a square: not noise, not constant)."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    base = torch.stack([ys, xs, 1 - ys]).expand(n, 3, height, width).clone()
    for i in range(n):
        r = int(torch.randint(0, height // 2, (1,), generator=g))
        base[i, :, r:r + height // 2, r:r + width // 2] = torch.rand(3, 1, 1, generator=g)
    return base


def noise(policy, seed=1, batch=1, size=SIZE):
    return torch.randn(batch, *policy.latent_shape(size, size), generator=torch.Generator().manual_seed(seed))


def test_source_ids_differ_from_the_noisy_ids_in_the_first_axis_only():
    from diffusers import FluxKontextPipeline

    ids = source_image_ids(6, 4)
    theirs = FluxKontextPipeline._prepare_latent_image_ids(1, 3, 2, "cpu", torch.float32)
    theirs[..., 0] = 1  # what prepare_latents does to the image's ids
    assert torch.equal(ids, theirs)
    assert torch.equal(ids[:, 1:], latent_image_ids(6, 4)[:, 1:]) and (ids[:, 0] == 1).all()


@pytest.mark.parametrize("source_size", [SIZE, 48])  # the source may have another size than the output
def test_rollout_with_a_source_equals_the_kontext_pipeline(policy, source_size):
    source = images(height=source_size, width=source_size)
    cond = policy.encode_prompts([INSTRUCTION], policy.encode_sources(source))
    assert isinstance(cond, KontextCond) and cond.source.shape == (1, *policy.latent_shape(source_size, source_size))
    eps = noise(policy)
    ours = policy.rollout(cond, eps, num_steps=3, guidance=2.5)
    pipe = policy.pipe
    # a [0, 1] tensor at a multiple of 16: the pipeline's own preprocessing; _auto_resize off keeps its size
    theirs = pipe(prompt=INSTRUCTION, image=source, height=SIZE, width=SIZE, max_area=SIZE * SIZE, _auto_resize=False,
                  num_inference_steps=3, guidance_scale=2.5, latents=pack_latents(eps), output_type="latent",
                  max_sequence_length=pipe.tokenizer_2.model_max_length).images
    torch.testing.assert_close(ours, policy.unpack(theirs, *eps.shape[-2:]), atol=2e-5, rtol=1e-4)
    plain = policy.rollout(policy.encode_prompts([INSTRUCTION]), eps, num_steps=3, guidance=2.5)
    assert not torch.allclose(ours, plain, atol=1e-4)  # the source is seen


def test_a_pil_source_prepared_by_source_pixels_equals_the_pipelines_auto_resize(policy):
    """The pipeline's default path: a PIL image resized to the nearest Kontext resolution (_auto_resize)."""
    from PIL import Image

    pil = Image.fromarray((images(height=48, width=64)[0] * 255).round().byte().permute(1, 2, 0).numpy())
    pixels = policy.source_pixels(pil)
    assert tuple(pixels.shape[-2:]) == preferred_kontext_size(48, 64) != (48, 64)
    eps = noise(policy)
    ours = policy.rollout(policy.encode_prompts([INSTRUCTION], policy.encode_sources(pixels[None])), eps,
                          num_steps=2, guidance=2.5)
    pipe = policy.pipe
    theirs = pipe(prompt=INSTRUCTION, image=pil, height=SIZE, width=SIZE, max_area=SIZE * SIZE, num_inference_steps=2,
                  guidance_scale=2.5, latents=pack_latents(eps), output_type="latent",
                  max_sequence_length=pipe.tokenizer_2.model_max_length).images
    torch.testing.assert_close(ours, policy.unpack(theirs, *eps.shape[-2:]), atol=2e-5, rtol=1e-4)


def test_the_velocity_depends_on_the_source_and_the_batch_rows_stay_apart(policy):
    sources = policy.encode_sources(images(2, seed=3))
    cond = policy.encode_prompts([INSTRUCTION, INSTRUCTION], sources)
    x, sigma = noise(policy, batch=2), torch.tensor([0.8, 0.8])
    v = policy.velocity(x, sigma, cond, 2.5)
    assert v.shape == x.shape
    assert not torch.allclose(v[0], v[1], atol=1e-5)  # same x and text, different sources
    single = policy.velocity(x[1:], sigma[1:], policy.encode_prompts([INSTRUCTION], sources[1:]), 2.5)
    torch.testing.assert_close(v[1:], single, atol=1e-5, rtol=1e-4)
    stacked = policy.velocity(torch.cat([x, x]), sigma.repeat(2), cond.repeat(2), 2.5)  # two Direct-Align branches
    torch.testing.assert_close(stacked, torch.cat([v, v]), atol=1e-5, rtol=1e-4)


def test_the_direct_align_branch_is_differentiable_with_a_source(policy):
    """The denoise branch's x0hat, decoded, gives the transformer gradients; the source stays a constant."""
    sources = policy.encode_sources(images(seed=6))
    cond = policy.encode_prompts([INSTRUCTION], sources)
    x0, eps = noise(policy, seed=4), noise(policy, seed=5)
    x0hat = denoise_recover(policy.velocity_fn(cond, 2.5), x0, eps, torch.tensor([0.8]), 0.05)
    policy.decode(x0hat).mean().backward()
    grads = [p.grad for p in policy.transformer.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads) and not cond.source.requires_grad
    policy.transformer.zero_grad(set_to_none=True)


def test_direct_align_recovers_x0_exactly_through_the_packing_with_a_source(policy, monkeypatch):
    """A perfect model in the token layout: the transformer returns eps - x0 on the noisy tokens and
    garbage on the source tokens, which the adapter must drop."""
    x0, eps = noise(policy, seed=2, batch=2), noise(policy, seed=3, batch=2)
    h, w = x0.shape[-2:]
    cond = policy.encode_prompts([INSTRUCTION] * 2, policy.encode_sources(images(2, height=48, width=48)))
    seen = []

    def perfect(hidden_states, img_ids, **kwargs):
        seen.append((hidden_states.shape, img_ids))
        n = policy.image_seq_len(h, w)
        target = pack_latents(eps - x0).repeat(hidden_states.shape[0] // x0.shape[0], 1, 1)
        return (torch.cat([target, 1e3 * torch.ones_like(hidden_states[:, n:])], dim=1),)

    monkeypatch.setattr(policy, "_forward_module", perfect)
    for recover in (denoise_recover, inversion_recover):
        out = recover(policy.velocity_fn(cond, 2.5), x0, eps, torch.tensor([0.7, 0.9]), 0.05)
        torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    shape, ids = seen[0]
    n, ns = policy.image_seq_len(h, w), policy.image_seq_len(6, 6)  # a 48-pixel source: 6 x 6 latent cells
    assert shape == (2, n + ns, 4 * policy.latent_channels)
    assert (ids[:n, 0] == 0).all() and (ids[n:, 0] == 1).all()


def test_stored_text_rows_and_source_latents_are_all_a_policy_without_text_encoders_needs(policy, family_dirs):
    """Kontext's text rows do not depend on the source: the rollout set stores them as for text-to-image,
    and the source latents beside x0."""
    prompts = [INSTRUCTION, "make it brighter"]
    sources = policy.encode_sources(images(2, seed=4))
    stored = policy.stored_conditioning(prompts)
    bare = load_policy_for(str(family_dirs["flux-kontext"]), text_encoders=False)
    bare.use_stored_conditioning(prompts, stored)
    x, sigma = noise(policy, batch=2), torch.tensor([0.7, 0.9])
    torch.testing.assert_close(bare.velocity(x, sigma, bare.encode_prompts(prompts, sources), 2.5),
                               policy.velocity(x, sigma, policy.encode_prompts(prompts, sources), 2.5))


def test_sources_are_refused_by_text_to_image_families_and_checked_by_kontext(policy, family_dirs):
    flux = load_policy_for(str(family_dirs["flux"]))
    with pytest.raises(ValueError, match="policy.family 'flux' is a text-to-image model.*flux-kontext"):
        flux.encode_prompts([INSTRUCTION], torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="takes no source image"):
        flux.encode_sources(images())
    with pytest.raises(ValueError, match="2 source images for 1 prompts"):
        policy.encode_prompts([INSTRUCTION], policy.encode_sources(images(2)))
    with pytest.raises(ValueError, match="multiples of 16"):
        policy.encode_sources(images(height=40, width=32))
    with pytest.raises(ValueError, match=r"sources must be source latents \[B, 4"):
        policy.encode_prompts([INSTRUCTION], images())  # pixels where latents belong
    cond = policy.encode_prompts([INSTRUCTION], policy.encode_sources(images()))
    with pytest.raises(ValueError, match="cond.repeat"):
        policy.velocity(noise(policy, batch=2), torch.tensor([0.5, 0.5]), cond, 2.5)


def test_a_lora_trained_with_a_source_reloads_through_the_kontext_pipeline(family_dirs, tmp_path):
    from srpo.training.lora import add_lora, save_lora

    policy = load_policy_for(str(family_dirs["flux-kontext"]))
    sources = policy.encode_sources(images())
    x, sigma = noise(policy), torch.tensor([0.8])
    add_lora(policy.transformer, rank=4, alpha=8, targets=list(policy.lora_targets))
    with torch.no_grad():
        for name, p in policy.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))
    trained = policy.velocity(x, sigma, policy.encode_prompts([INSTRUCTION], sources), 2.5)
    save_lora(policy, policy.transformer, tmp_path / "policy")
    pipe = type(policy.pipe).from_pretrained(str(family_dirs["flux-kontext"]))
    pipe.load_lora_weights(str(tmp_path / "policy"))  # the pipeline's own loader
    reloaded = FluxKontextPolicy(pipe)
    v = reloaded.velocity(x, sigma, reloaded.encode_prompts([INSTRUCTION], sources), 2.5)
    torch.testing.assert_close(v, trained, atol=1e-5, rtol=1e-4)


def test_preferred_size_is_the_pipelines_choice():
    assert preferred_kontext_size(1024, 1024) == (1024, 1024)
    h, w = preferred_kontext_size(480, 640)  # 4:3 -> the nearest Kontext training resolution
    assert h % 16 == w % 16 == 0 and abs(w / h - 4 / 3) < 0.1
