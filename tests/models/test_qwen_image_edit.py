"""Qwen-Image-Edit with a source image, on the tiny built-in (``builtin:tiny-qwen-image-edit``).

Its pipeline cannot run without a source, so the family-wide checks of test_families.py are
repeated here with one: the rollout equals ``QwenImageEditPipeline``'s latents (true CFG with the
negative prompt read with the same source), Direct-Align recovers x0 exactly with the source
tokens present, text rows are cached per (instruction, source), a LoRA reloads through the
pipeline's ``load_lora_weights``.
"""

import pytest
import torch
from PIL import Image

from srpo.direct_align import denoise_recover, inversion_recover
from srpo.models.families import load_policy_for
from srpo.models.flux import pack_latents
from srpo.models.qwen_image_edit import QwenEditCond, preferred_edit_size

SIZE = 32  # output side in pixels
SOURCE = 64  # source side: the pipeline's resize target is patched to this area (it is 1024^2 otherwise)
INSTRUCTION = "make the circle red"


@pytest.fixture(scope="module")
def policy(family_dirs):
    return load_policy_for(str(family_dirs["qwen-image-edit"]))


def images(n=1, side=SOURCE, seed=0):
    """8-bit source images as [n, 3, side, side] in [0, 1] (what a PIL image becomes)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8).float() / 255


def noise(policy, seed=1, batch=1):
    return torch.randn(batch, *policy.latent_shape(SIZE, SIZE), generator=torch.Generator().manual_seed(seed))


def test_rollout_with_a_source_equals_the_edit_pipeline(policy, monkeypatch):
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as edit

    monkeypatch.setattr(edit, "calculate_dimensions", lambda area, ratio: (SOURCE, SOURCE, None))
    source = images()
    cond = policy.encode_prompts([INSTRUCTION], policy.encode_sources(source))
    assert isinstance(cond, QwenEditCond)
    eps = noise(policy)
    ours = policy.rollout(cond, eps, num_steps=3, guidance=4.0)
    pil = Image.fromarray((source[0] * 255).round().byte().permute(1, 2, 0).numpy())
    theirs = policy.pipe(image=pil, prompt=INSTRUCTION, negative_prompt=policy.negative_prompt, true_cfg_scale=4.0,
                         height=SIZE, width=SIZE, num_inference_steps=3, latents=pack_latents(eps),
                         output_type="latent").images
    torch.testing.assert_close(ours, policy.unpack(theirs, *eps.shape[-2:]), atol=2e-5, rtol=1e-4)
    other = policy.rollout(policy.encode_prompts([INSTRUCTION], policy.encode_sources(images(seed=5))), eps,
                           num_steps=3, guidance=4.0)
    assert not torch.allclose(ours, other, atol=1e-4)  # the source is seen


def test_a_pil_source_prepared_by_source_pixels_equals_the_pipelines_own_resize(policy):
    """The pipeline's default path, unpatched: the source resized to 1024^2 pixels for both the VAE and Qwen2.5-VL."""
    pil = Image.fromarray(torch.randint(0, 256, (48, 64, 3), generator=torch.Generator().manual_seed(3),
                                        dtype=torch.uint8).numpy())  # 64 wide, 48 high
    pixels = policy.source_pixels(pil)
    assert tuple(pixels.shape[-2:]) == preferred_edit_size(48, 64) == (896, 1184)
    eps = noise(policy)
    ours = policy.rollout(policy.encode_prompts([INSTRUCTION], policy.encode_sources(pixels[None])), eps,
                          num_steps=2, guidance=4.0)
    theirs = policy.pipe(image=pil, prompt=INSTRUCTION, negative_prompt=policy.negative_prompt, true_cfg_scale=4.0,
                         height=SIZE, width=SIZE, num_inference_steps=2, latents=pack_latents(eps),
                         output_type="latent").images
    torch.testing.assert_close(ours, policy.unpack(theirs, *eps.shape[-2:]), atol=2e-5, rtol=1e-4)


def test_text_rows_are_read_with_the_source_and_cached_per_pair(policy):
    a, b = policy.encode_sources(images(seed=1)), policy.encode_sources(images(seed=2))
    before = len(policy.prompt_cache)
    ca, cb = policy.encode_prompts([INSTRUCTION], a), policy.encode_prompts([INSTRUCTION], b)
    assert len(policy.prompt_cache) == before + 2
    assert ca.tokens.shape != cb.tokens.shape or not torch.allclose(ca.tokens, cb.tokens)
    again = policy.encode_prompts([INSTRUCTION], a)
    assert len(policy.prompt_cache) == before + 2 and torch.equal(again.tokens, ca.tokens)
    both = policy.encode_prompts([INSTRUCTION, INSTRUCTION], policy.encode_sources(torch.cat([images(seed=1),
                                                                                               images(seed=2)])))
    assert len(policy.prompt_cache) == before + 2  # the same pairs: nothing encoded again
    x, sigma = noise(policy, batch=2), torch.tensor([0.8, 0.8])
    v = policy.velocity(x, sigma, both, 4.0)
    torch.testing.assert_close(v[1:], policy.velocity(x[1:], sigma[1:], cb, 4.0), atol=1e-5, rtol=1e-4)
    stacked = policy.velocity(torch.cat([x, x]), sigma.repeat(2), both.repeat(2), 4.0)
    torch.testing.assert_close(stacked, torch.cat([v, v]), atol=1e-5, rtol=1e-4)


def test_direct_align_recovers_x0_exactly_through_the_packing_with_a_source(policy, monkeypatch):
    x0, eps = noise(policy, seed=2, batch=2), noise(policy, seed=3, batch=2)
    h, w = x0.shape[-2:]
    cond = policy.encode_prompts([INSTRUCTION] * 2, policy.encode_sources(images(2)))
    seen = []

    def perfect(hidden_states, img_shapes, **kwargs):
        seen.append((hidden_states.shape, img_shapes))
        n = policy.image_seq_len(h, w)
        return (torch.cat([pack_latents(eps - x0), 1e3 * torch.ones_like(hidden_states[:, n:])], dim=1),)

    monkeypatch.setattr(policy, "_forward_module", perfect)
    for recover in (denoise_recover, inversion_recover):
        torch.testing.assert_close(recover(policy.velocity_fn(cond, 4.0), x0, eps, torch.tensor([0.7, 0.9]), 0.05),
                                   x0, atol=1e-5, rtol=0)
    shape, shapes = seen[0]
    src = SOURCE // policy.pixel_multiple
    assert shape == (2, policy.image_seq_len(h, w) + src * src, 4 * policy.latent_channels)
    assert shapes == [[(1, h // 2, w // 2), (1, src, src)]] * 2


def test_stored_rows_let_a_policy_without_text_encoders_edit_the_same_pairs(policy, family_dirs):
    from dataclasses import replace

    sources = policy.encode_sources(torch.cat([images(seed=7), images(seed=8)]))
    prompts = [INSTRUCTION, "make it brighter"]
    stored = policy.stored_conditioning(prompts, sources)
    assert stored["tokens"].shape[0] == 2 and stored["negative.tokens"].shape[0] == 2  # true CFG: per source
    bare = load_policy_for(str(family_dirs["qwen-image-edit"]), text_encoders=False)
    without_pixels = replace(sources, pixels=None)  # what a rollout set needs to keep: latents and keys
    with pytest.raises(RuntimeError, match="no stored text rows for its source"):
        bare.encode_prompts(prompts, without_pixels)
    bare.use_stored_conditioning(prompts, stored, without_pixels)
    x, sigma = noise(policy, batch=2), torch.tensor([0.7, 0.9])
    cond, bare_cond = policy.encode_prompts(prompts, sources), bare.encode_prompts(prompts, without_pixels)
    torch.testing.assert_close(bare.guided_velocity(x, sigma, bare_cond, 4.0), policy.guided_velocity(x, sigma, cond, 4.0))


def test_a_source_is_required_and_checked(policy, family_dirs):
    with pytest.raises(ValueError, match="edits a source image: pass one per prompt"):
        policy.encode_prompts([INSTRUCTION])
    with pytest.raises(ValueError, match="2 source images for 1 prompts"):
        policy.encode_prompts([INSTRUCTION], policy.encode_sources(images(2)))
    with pytest.raises(ValueError, match="multiples of 16"):
        policy.encode_sources(images(side=40))
    with pytest.raises(ValueError, match="text-to-image model"):
        load_policy_for(str(family_dirs["qwen-image"])).encode_sources(images())


@pytest.mark.parametrize("family", ["qwen-image-edit", "qwen-image-edit-plus"])
def test_a_lora_trained_with_a_source_reloads_through_the_edit_pipeline(family, family_dirs, tmp_path):
    from srpo.models.families import adapter_class
    from srpo.training.lora import add_lora, save_lora

    policy = load_policy_for(str(family_dirs[family]))
    sources = policy.encode_sources(images())
    x, sigma = noise(policy), torch.tensor([0.8])
    add_lora(policy.transformer, rank=4, alpha=8, targets=list(policy.lora_targets))
    with torch.no_grad():
        for name, p in policy.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))
    trained = policy.velocity(x, sigma, policy.encode_prompts([INSTRUCTION], sources), 4.0)
    save_lora(policy, policy.transformer, tmp_path / "policy")
    pipe = type(policy.pipe).from_pretrained(str(family_dirs[family]))
    pipe.load_lora_weights(str(tmp_path / "policy"))  # the pipeline's own loader
    reloaded = adapter_class(family)(pipe)
    v = reloaded.velocity(x, sigma, reloaded.encode_prompts([INSTRUCTION], sources), 4.0)
    torch.testing.assert_close(v, trained, atol=1e-5, rtol=1e-4)


def test_preferred_size_is_the_pipelines_choice():
    assert preferred_edit_size(512, 512) == (1024, 1024)
    h, w = preferred_edit_size(480, 640)
    assert h % 32 == w % 32 == 0 and abs(h * w - 1024 ** 2) < 0.05 * 1024 ** 2


@pytest.fixture(scope="module")
def plus(family_dirs):
    return load_policy_for(str(family_dirs["qwen-image-edit-plus"]))


@pytest.mark.parametrize("slots", [1, 2])
def test_edit_plus_rollout_with_one_or_two_sources_equals_its_pipeline(plus, slots, monkeypatch):
    """Edit-Plus reads each source twice: at the VAE's size (patched to SOURCE) and at the text encoder's
    (patched to SOURCE / 2 here, 384^2 pixels in the pipeline)."""
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as edit_plus

    monkeypatch.setattr(edit_plus, "calculate_dimensions",
                        lambda area, ratio: (SOURCE // 2,) * 2 if area == edit_plus.CONDITION_IMAGE_SIZE else (SOURCE,) * 2)
    sources = [images(seed=10 + i) for i in range(slots)]
    cond = plus.encode_prompts([INSTRUCTION], plus.encode_sources(sources))
    assert [p.shape[-1] for p in cond.sources.pixels] == [SOURCE // 2] * slots
    eps = noise(plus)
    ours = plus.rollout(cond, eps, num_steps=3, guidance=4.0)
    pils = [Image.fromarray((s[0] * 255).round().byte().permute(1, 2, 0).numpy()) for s in sources]
    theirs = plus.pipe(image=pils, prompt=INSTRUCTION, negative_prompt=plus.negative_prompt, true_cfg_scale=4.0,
                       height=SIZE, width=SIZE, num_inference_steps=3, latents=pack_latents(eps),
                       output_type="latent").images
    torch.testing.assert_close(ours, plus.unpack(theirs, *eps.shape[-2:]), atol=2e-5, rtol=1e-4)


def test_edit_plus_batches_rows_with_several_sources_and_recovers_exactly(plus, monkeypatch):
    sources = plus.encode_sources([images(2, seed=20), images(2, seed=21)])
    prompts = [INSTRUCTION, "put the square on the circle"]
    cond = plus.encode_prompts(prompts, sources)
    x, sigma = noise(plus, batch=2), torch.tensor([0.8, 0.6])
    v = plus.velocity(x, sigma, cond, 4.0)
    one = plus.encode_sources([images(2, seed=20)[1:], images(2, seed=21)[1:]])
    torch.testing.assert_close(v[1:], plus.velocity(x[1:], sigma[1:], plus.encode_prompts(prompts[1:], one), 4.0),
                               atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="4 source slots for qwen-image-edit-plus, which reads 1 to 3"):
        plus.encode_sources([images()] * 4)
    x0, eps = noise(plus, seed=2, batch=2), noise(plus, seed=3, batch=2)
    n = plus.image_seq_len(*x0.shape[-2:])
    seen = []

    def perfect(hidden_states, img_shapes, **kwargs):
        seen.append(img_shapes)
        return (torch.cat([pack_latents(eps - x0), torch.ones_like(hidden_states[:, n:])], dim=1),)

    monkeypatch.setattr(plus, "_forward_module", perfect)
    torch.testing.assert_close(denoise_recover(plus.velocity_fn(cond, 4.0), x0, eps, torch.tensor([0.7, 0.9]), 0.05),
                               x0, atol=1e-5, rtol=0)
    src = SOURCE // plus.pixel_multiple
    assert seen[0] == [[(1, 2, 2), (1, src, src), (1, src, src)]] * 2
