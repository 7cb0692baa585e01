"""Every model family behind the one policy interface, on tiny pipelines built offline.

Per family: our rollout equals the family's own diffusers pipeline for the same noise, steps and
guidance; Direct-Align recovers x0 exactly through the adapter's packing; a LoRA adapter and the
full transformer reload through diffusers; decode is differentiable.
"""

import json

import pytest
import torch

from srpo.direct_align import denoise_recover, inversion_recover
from srpo.models.families import FAMILIES, adapter_class, load_policy_for

SIZE = 32  # pixels
PROMPT = "a red circle"

# family -> the tiny model tests/conftest.py's family_dirs builds (FLUX.1's is tiny_flux_dir)
TINY = {"qwen-image": "tiny-qwen-image", "sd3": "tiny-sd3", "flux2": "tiny-flux2",
        "flux2-klein": "tiny-flux2-klein", "z-image": "tiny-z-image", "flux-kontext": "tiny-flux-kontext"}
ALL = ["flux", *TINY]
EDIT_ONLY = {"tiny-qwen-image-edit", "tiny-qwen-image-edit-plus"}  # need a source: tests/models/test_qwen_image_edit.py


@pytest.fixture(scope="module")
def policies(family_dirs):
    """One policy per family, loaded lazily and shared by the tests that leave it unchanged."""
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = load_policy_for(str(family_dirs[family]))
        return cache[family]

    return get


def noise(policy, seed=1, batch=1):
    return torch.randn(batch, *policy.latent_shape(SIZE, SIZE), generator=torch.Generator().manual_seed(seed))


def pipeline_latents(policy, eps, steps, guidance):
    """The family's own pipeline from ``eps`` (packed as it expects), mapped back to our latent space."""
    pipe, h, w = policy.pipe, eps.shape[-2], eps.shape[-1]
    common = dict(height=SIZE, width=SIZE, num_inference_steps=steps, output_type="latent")
    if policy.family == "flux":
        out = pipe(PROMPT, guidance_scale=guidance, latents=policy.pack(eps),
                   max_sequence_length=pipe.tokenizer_2.model_max_length, **common).images
        return policy.unpack(out, h, w)
    if policy.family == "flux-kontext":  # no source image: Kontext as text-to-image (tests/models/test_flux_kontext.py edits)
        out = pipe(prompt=PROMPT, guidance_scale=guidance, latents=policy.pack(eps), max_area=SIZE * SIZE,
                   max_sequence_length=pipe.tokenizer_2.model_max_length, **common).images
        return policy.unpack(out, h, w)
    if policy.family == "qwen-image":
        out = pipe(PROMPT, negative_prompt=policy.negative_prompt, true_cfg_scale=guidance,
                   latents=policy.pack(eps), max_sequence_length=policy.max_sequence_length, **common).images
        return policy.unpack(out, h, w)
    if policy.family == "sd3":
        return pipe(PROMPT, negative_prompt=policy.negative_prompt, guidance_scale=guidance, latents=eps,
                    max_sequence_length=policy.max_sequence_length, **common).images
    if policy.family in ("flux2", "flux2-klein"):
        out = pipe(prompt=PROMPT, guidance_scale=guidance, latents=eps,
                   max_sequence_length=policy.max_sequence_length, **common).images
        if policy.family == "flux2-klein":
            return policy.from_vae_latents(out)  # [klein] returns the denormalised, unpatchified VAE latent
        return policy.unpack(out, h, w)  # [dev] returns the packed tokens
    if policy.family == "z-image":
        return pipe(PROMPT, negative_prompt=policy.negative_prompt, guidance_scale=guidance, latents=eps,
                    cfg_normalization=False, cfg_truncation=1.0, max_sequence_length=policy.max_sequence_length,
                    **common).images
    raise AssertionError(policy.family)


# guidance that exercises each family's kind: distilled values, true CFG (> 1; Z-Image: > 0)
GUIDANCE = {"flux": 3.5, "qwen-image": 4.0, "sd3": 5.0, "flux2": 4.0, "flux2-klein": 4.0, "z-image": 3.0,
            "flux-kontext": 2.5}


def test_the_family_table_names_a_policy_for_every_pipeline():
    for name, family in FAMILIES.items():
        cls = adapter_class(name)
        assert cls.family == name and cls.pipeline_class == family.pipeline_class


@pytest.mark.parametrize("family", ALL)
def test_the_family_is_read_from_model_index_json(family, family_dirs, policies):
    policy = policies(family)
    assert type(policy) is adapter_class(family)
    index = json.loads((family_dirs[family] / "model_index.json").read_text())
    assert index["_class_name"] == policy.pipeline_class
    assert set(policy.block_classes) <= {type(m).__name__ for m in policy.transformer.modules()}


def test_an_unknown_pipeline_class_is_a_clear_error(family_dirs, tmp_path):
    import shutil

    folder = tmp_path / "other"
    shutil.copytree(family_dirs["z-image"], folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyPipeline"}))
    with pytest.raises(ValueError, match="KandinskyPipeline.*supported are.*QwenImagePipeline") as err:
        load_policy_for(str(folder))
    assert "policy.family" in str(err.value)
    forced = load_policy_for(str(folder), "z-image")  # an explicit family overrides model_index.json
    assert forced.family == "z-image"
    with pytest.raises(ValueError, match="not a supported model family"):
        load_policy_for(str(folder), "sdxl")


@pytest.mark.parametrize("family", ALL)
def test_rollout_equals_the_diffusers_pipeline(family, policies):
    """Same noise, steps and guidance (true CFG with the negative prompt where the family uses it)."""
    policy = policies(family)
    eps = noise(policy)
    guidance = GUIDANCE[family]
    ours = policy.rollout(policy.encode_prompts([PROMPT]), eps, num_steps=3, guidance=guidance)
    theirs = pipeline_latents(policy, eps, 3, guidance)
    assert ours.shape == eps.shape and not torch.allclose(ours, eps, atol=1e-3)
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["qwen-image", "sd3", "z-image"])
def test_true_cfg_costs_two_forwards_in_the_rollout_and_is_off_in_training_by_default(family, policies, monkeypatch):
    policy = policies(family)
    calls = []
    forward = policy._transformer_velocity
    monkeypatch.setattr(policy, "_transformer_velocity", lambda *a: calls.append(1) or forward(*a))
    cond, eps = policy.encode_prompts([PROMPT]), noise(policy)
    policy.rollout(cond, eps, num_steps=2, guidance=GUIDANCE[family])
    assert len(calls) == 4
    calls.clear()
    v = policy.velocity(eps, torch.tensor([0.9]), cond, GUIDANCE[family])
    assert len(calls) == 1
    monkeypatch.setattr(policy, "cfg_in_training", True)
    guided = policy.velocity(eps, torch.tensor([0.9]), cond, GUIDANCE[family])
    assert len(calls) == 3 and not torch.allclose(v, guided)


def test_klein_guidance_follows_its_distilled_flag(policies):
    policy = policies("flux2-klein")
    assert policy.guidance_kind == "cfg" and policy.uses_cfg(4.0) and policy.default_num_steps == 50
    policy.pipe.register_to_config(is_distilled=True)
    try:
        assert policy.guidance_kind == "none" and not policy.uses_cfg(4.0) and policy.default_num_steps == 4
    finally:
        policy.pipe.register_to_config(is_distilled=False)


@pytest.mark.parametrize("family", ALL)
def test_the_schedule_comes_from_the_scheduler_config_unless_a_shift_is_given(family, policies):
    from srpo.schedules import sigma_schedule

    policy = policies(family)
    h, w = policy.latent_shape(SIZE, SIZE)[1:]
    assert torch.equal(policy.rollout_sigmas(4, 3.0, h, w), sigma_schedule(4, 3.0))
    own = policy.rollout_sigmas(4, None, h, w)
    assert own.shape == (5,) and own[0] <= 1 and own[-1] == 0 and (own.diff() < 0).all()
    if policy.pipe.scheduler.config.use_dynamic_shifting:  # the shift grows with the resolution
        big = policy.rollout_sigmas(4, None, 4 * h, 4 * w)
        assert (big[1:-1] >= own[1:-1]).all() and (big[1:-1] > own[1:-1]).any()  # a terminal shift pins the last


@pytest.mark.parametrize("family", ALL)
def test_direct_align_recovers_x0_exactly_through_the_packing(family, policies):
    """A perfect velocity given in the transformer's token layout, unpacked by the adapter."""
    policy = policies(family)
    x0, eps = noise(policy, seed=2, batch=2), noise(policy, seed=3, batch=2)
    h, w = x0.shape[-2:]
    tokens = policy.pack(eps - x0)
    assert tokens.shape[1] == policy.image_seq_len(h, w) or family == "sd3"

    def perfect(x, sigma):
        return policy.unpack(tokens, h, w)

    for recover in (denoise_recover, inversion_recover):
        torch.testing.assert_close(recover(perfect, x0, eps, torch.tensor([0.7, 0.9]), 0.05), x0,
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["flux", "qwen-image", "flux2", "flux2-klein", "flux-kontext"])
def test_pack_matches_the_pipelines_own_packing(family, policies):
    policy = policies(family)
    x = noise(policy, batch=2)
    b, c, h, w = x.shape
    packer = type(policy.pipe)._pack_latents
    theirs = packer(x) if family.startswith("flux2") else packer(x, b, c, h, w)
    assert torch.equal(policy.pack(x), theirs)
    assert torch.equal(policy.unpack(policy.pack(x), h, w), x)


@pytest.mark.parametrize("family", ALL)
def test_a_saved_lora_is_loaded_by_the_familys_pipeline_with_the_trained_velocity(family, family_dirs, tmp_path):
    from safetensors.torch import load_file

    from srpo.models.base import LORA_WEIGHTS
    from srpo.training.lora import add_lora, lora_state_dict, save_lora

    policy = load_policy_for(str(family_dirs[family]))
    cond, x, sigma = policy.encode_prompts([PROMPT]), noise(policy), torch.tensor([0.8])
    add_lora(policy.transformer, rank=4, alpha=8, targets=list(policy.lora_targets))
    base = policy.velocity(x, sigma, cond, GUIDANCE[family])  # B = 0: the base model
    with torch.no_grad():
        for name, p in policy.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))
    trained = policy.velocity(x, sigma, cond, GUIDANCE[family])
    assert not torch.allclose(base, trained)
    save_lora(policy, policy.transformer, tmp_path / "policy")  # what the trainer writes
    saved = load_file(tmp_path / "policy" / LORA_WEIGHTS)
    assert {k.removeprefix("transformer.") for k in saved} == set(lora_state_dict(policy.transformer))
    reloaded = load_policy_for(str(family_dirs[family]), transformer=str(tmp_path / "policy"))
    v = reloaded.velocity(x, sigma, reloaded.encode_prompts([PROMPT]), GUIDANCE[family])
    torch.testing.assert_close(v, trained, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ALL)
def test_the_full_transformer_reloads_with_from_pretrained(family, family_dirs, policies, tmp_path):
    policy = policies(family)
    with torch.no_grad():
        for p in policy.transformer.parameters():
            p.add_(0.01)
    try:
        out = policy.save_transformer(tmp_path / "tuned")
        assert (out / "config.json").exists() and list(out.glob("*.safetensors"))
        tuned = load_policy_for(str(family_dirs[family]), transformer=str(out))
        for (name, a), b in zip(tuned.transformer.state_dict().items(), policy.transformer.state_dict().values()):
            assert torch.equal(a, b), name
    finally:
        with torch.no_grad():
            for p in policy.transformer.parameters():
                p.sub_(0.01)


@pytest.mark.parametrize("family", ALL)
def test_decode_is_differentiable_and_encode_images_inverts_the_normalisation(family, policies):
    policy = policies(family)
    x0 = noise(policy).requires_grad_(True)
    images = policy.decode(x0)
    assert images.shape == (1, 3, SIZE, SIZE) and 0 <= images.min() and images.max() <= 1
    images.mean().backward()
    assert x0.grad is not None and x0.grad.abs().sum() > 0
    assert all(p.grad is None for p in policy.pipe.vae.parameters())  # frozen
    z = torch.randn(2, *policy.to_vae_latents(x0.detach()).shape[1:])
    torch.testing.assert_close(policy.to_vae_latents(policy.from_vae_latents(z)), z, atol=1e-5, rtol=1e-5)
    latents = policy.encode_images(torch.rand(2, 3, SIZE, SIZE))
    assert latents.shape == (2, *policy.latent_shape(SIZE, SIZE))


@pytest.mark.parametrize("family", ALL)
def test_conditioning_is_cached_and_repeats(family, policies):
    policy = policies(family)
    a = policy.encode_prompts(["a red circle", "a blue square with a long description of its colour"])
    cached = len(policy.prompt_cache)
    b = policy.encode_prompts(["a blue square with a long description of its colour", "a red circle"])
    assert len(policy.prompt_cache) == cached
    assert torch.equal(a.tokens[0], b.tokens[1])
    assert a.repeat(3).tokens.shape[0] == 6
    x = noise(policy, batch=2)
    v = policy.velocity(x, torch.tensor([0.9, 0.5]), a, GUIDANCE[family])
    single = policy.velocity(x[:1], torch.tensor([0.9]), policy.encode_prompts(["a red circle"]), GUIDANCE[family])
    torch.testing.assert_close(v[:1], single, atol=1e-5, rtol=1e-4)  # padding a batch changes nothing


def test_builtin_tiny_families_are_built_once_and_reproducibly(tmp_path, monkeypatch):
    from srpo.models.tiny_families import TINY_FAMILY_BUILDERS, builtin_family_path

    assert set(TINY_FAMILY_BUILDERS) == set(TINY.values()) | EDIT_ONLY
    monkeypatch.setenv("SRPO_CACHE", str(tmp_path))
    a = load_policy_for("builtin:tiny-z-image")
    assert a.family == "z-image" and builtin_family_path("tiny-z-image").parent == tmp_path / "builtin"
    b = load_policy_for("builtin:tiny-z-image", "z-image")
    assert all(torch.equal(x, y) for x, y in zip(a.transformer.parameters(), b.transformer.parameters()))
    with pytest.raises(ValueError, match="unknown built-in"):
        load_policy_for("builtin:tiny-sdxl")


def test_blocks_compile_for_a_model_without_diffusers_repeated_blocks(family_dirs):
    policy = load_policy_for(str(family_dirs["sd3"]))
    assert not getattr(policy.transformer, "_repeated_blocks", None)  # SD3: diffusers has no regional list
    cond, x, sigma = policy.encode_prompts([PROMPT]), noise(policy), torch.tensor([0.8])
    eager = policy.velocity(x, sigma, cond, 1.0)
    policy.compile_blocks(backend="eager")
    blocks = [m for m in policy.transformer.modules() if type(m).__name__ in policy.block_classes]
    assert blocks and all(getattr(b, "_compiled_call_impl", None) is not None for b in blocks)
    torch.testing.assert_close(policy.velocity(x, sigma, cond, 1.0), eager)
