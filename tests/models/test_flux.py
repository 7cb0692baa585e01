"""The FLUX adapter on a tiny pipeline that the tests build and save themselves."""

import fsspec
import pytest
import torch

from srpo.config import PolicyConfig
from srpo.models.families import load_policy, load_policy_for
from srpo.models.flux import FluxPolicy, latent_image_ids, pack_latents, unpack_latents


@pytest.fixture(scope="module")
def policy(tiny_flux_dir):
    return load_policy_for(str(tiny_flux_dir), "flux")


def test_pack_unpack_round_trip_matches_diffusers():
    from diffusers import FluxPipeline

    x = torch.randn(2, 4, 8, 6)
    packed = pack_latents(x)
    assert packed.shape == (2, 4 * 3, 16)
    assert torch.equal(packed, FluxPipeline._pack_latents(x, 2, 4, 8, 6))
    assert torch.equal(unpack_latents(packed, 8, 6), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_latent_image_ids_match_diffusers(dtype):
    from diffusers import FluxPipeline

    ids = latent_image_ids(90, 64, dtype=dtype)  # a 720 x 512 image's latent
    assert ids.dtype == dtype and torch.equal(ids, FluxPipeline._prepare_latent_image_ids(1, 45, 32, "cpu", dtype))


def test_latent_shape_and_resolution_errors(policy):
    assert policy.pixel_multiple == 16
    assert policy.latent_shape(64, 32) == (4, 8, 4)
    with pytest.raises(ValueError, match="multiples of 16"):
        policy.latent_shape(72, 64)


def test_prompt_embeddings_are_cached_and_batched(policy):
    a = policy.encode_prompts(["a red circle", "a blue square"])
    assert a.tokens.shape[:2] == (2, policy.pipe.tokenizer_2.model_max_length)
    cached = len(policy.prompt_cache)
    b = policy.encode_prompts(["a blue square", "a red circle"])
    assert len(policy.prompt_cache) == cached  # nothing re-encoded
    assert torch.equal(a.tokens[0], b.tokens[1]) and torch.equal(a.pooled[1], b.pooled[0])


def test_the_prompt_cache_keeps_the_most_recently_used(policy, monkeypatch):
    prompts = [f"a red circle number {i}" for i in range(5)]
    together = policy.encode_prompts(prompts)
    monkeypatch.setattr(policy, "max_cached_prompts", 3)
    policy.encode_prompts(prompts[:2])  # used last: kept
    policy.encode_prompts(["a blue square"])
    assert all(p in policy.prompt_cache for p in [prompts[0], prompts[1], "a blue square"])
    assert len(policy.prompt_cache) == 3
    again = policy.encode_prompts(prompts)  # a batch larger than the cache is still served whole
    assert torch.allclose(again.tokens, together.tokens) and len(policy.prompt_cache) == 5


def test_rollout_is_deterministic_and_matches_a_manual_euler_loop(policy):
    cond = policy.encode_prompts(["a red circle"])
    eps = torch.randn(1, *policy.latent_shape(32, 32), generator=torch.Generator().manual_seed(1))
    x0 = policy.rollout(cond, eps, num_steps=4, shift=3.0, guidance=1.0)
    assert torch.equal(x0, policy.rollout(cond, eps, num_steps=4, shift=3.0, guidance=1.0))
    from srpo.schedules import sigma_schedule

    x = eps
    s = sigma_schedule(4, 3.0)
    with torch.no_grad():
        for a, b in zip(s[:-1], s[1:]):
            x = x + (b - a) * policy.velocity(x, a.expand(1), cond, 1.0)
    assert torch.allclose(x, x0)


def test_velocity_matches_the_diffusers_pipeline_call(policy):
    """Our Euler loop with the pipeline's own sigmas gives the pipeline's own latents."""
    pipe = policy.pipe
    eps = torch.randn(1, *policy.latent_shape(32, 32), generator=torch.Generator().manual_seed(3))
    sigmas = torch.linspace(1.0, 1 / 3, 3)
    out = pipe("a red circle", height=32, width=32, num_inference_steps=3, guidance_scale=2.0,
               latents=pack_latents(eps), sigmas=sigmas.tolist(), output_type="latent",
               max_sequence_length=pipe.tokenizer_2.model_max_length).images
    shifted = pipe.scheduler.sigmas  # what the scheduler really used (it shifts the given sigmas)
    cond = policy.encode_prompts(["a red circle"])
    from srpo.direct_align import euler_sample

    ours = euler_sample(policy.velocity_fn(cond, 2.0), eps, shifted.float())
    assert torch.allclose(pack_latents(ours), out, atol=1e-5)


def test_training_forward_and_decode_are_differentiable(policy):
    cond = policy.encode_prompts(["a cat"])
    x = torch.randn(1, *policy.latent_shape(32, 32))
    v = policy.velocity(x, torch.tensor([0.9]), cond, 3.5)
    images = policy.decode(x - 0.02 * v)
    assert images.shape == (1, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    images.mean().backward()
    grads = [p.grad for p in policy.transformer.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in policy.pipe.vae.parameters())  # frozen
    policy.transformer.zero_grad(set_to_none=True)


def test_encode_images_is_deterministic_and_shaped(policy):
    images = torch.rand(2, 3, 32, 32)
    z = policy.encode_images(images)
    assert z.shape == (2, 4, 4, 4)
    assert torch.equal(z, policy.encode_images(images))


def test_load_from_an_fsspec_url(tiny_flux_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SRPO_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    fs.put(str(tiny_flux_dir), "/models/tiny-flux", recursive=True)
    remote = load_policy_for("memory://models/tiny-flux", "flux")
    local = load_policy_for(str(tiny_flux_dir), "flux")
    for (n, a), (_, b) in zip(remote.transformer.state_dict().items(), local.transformer.state_dict().items()):
        assert torch.equal(a, b), n


def test_saved_transformer_replaces_the_base_one(policy, tiny_flux_dir, tmp_path):
    with torch.no_grad():
        for p in policy.transformer.parameters():
            p.add_(0.01)
    out = policy.save_transformer(tmp_path / "tuned")
    assert (out / "config.json").exists() and list(out.glob("*.safetensors"))
    tuned = load_policy(PolicyConfig(pretrained=str(tiny_flux_dir), device="cpu", height=32, width=32),
                        transformer=str(out))
    for a, b in zip(tuned.transformer.parameters(), policy.transformer.parameters()):
        assert torch.equal(a, b)
    with torch.no_grad():
        for p in policy.transformer.parameters():
            p.sub_(0.01)


def test_missing_weights_path_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_policy_for("/no/such/flux-model", "flux")
    with pytest.raises(ValueError, match="unknown built-in"):
        load_policy_for("builtin:huge-flux", "flux")


def test_builtin_tiny_flux_is_reproducible(tmp_path, monkeypatch):
    monkeypatch.setenv("SRPO_CACHE", str(tmp_path))
    a = load_policy_for("builtin:tiny-flux", "flux")
    b = load_policy_for("builtin:tiny-flux", "flux")
    assert all(torch.equal(x, y) for x, y in zip(a.transformer.parameters(), b.transformer.parameters()))


@pytest.mark.parametrize("autocast, frozen, expected", [("none", None, torch.float32),
                                                        ("bfloat16", None, torch.bfloat16),
                                                        ("bfloat16", "float32", torch.float32)])
def test_frozen_modules_are_stored_in_the_compute_dtype(tiny_flux_dir, autocast, frozen, expected):
    policy = load_policy(PolicyConfig(pretrained=str(tiny_flux_dir), device="cpu", autocast=autocast,
                                      frozen_dtype=frozen))
    assert {m.dtype for m in policy.frozen_modules} == {expected} and policy.frozen_dtype == expected
    assert policy.transformer.dtype == torch.float32  # the trained weights stay in `dtype`
    images = policy.decode(torch.randn(1, *policy.latent_shape(32, 32)))
    assert images.dtype == torch.float32 and torch.isfinite(images).all()


def test_query_key_norms_keep_the_fused_kernel_with_fp32_weights_under_bf16_autocast(tiny_flux_dir):
    import warnings

    from srpo.models.base import InputDtypeRMSNorm

    policy = load_policy(PolicyConfig(pretrained=str(tiny_flux_dir), device="cpu", autocast="bfloat16"))
    norms = [m for m in policy.transformer.modules() if isinstance(m, torch.nn.RMSNorm)]
    assert norms and all(type(m) is InputDtypeRMSNorm for m in norms)
    assert all(m.weight.dtype == torch.float32 for m in norms)  # full fine-tuning: fp32 master weights
    plain = torch.nn.RMSNorm(norms[0].normalized_shape, eps=norms[0].eps)
    assert policy.transformer.state_dict().keys() >= {"transformer_blocks.0.attn.norm_q.weight"}
    assert plain.state_dict().keys() == norms[0].state_dict().keys()  # saved folders are unchanged

    cond = policy.encode_prompts(["a cat"])
    x = torch.randn(1, *policy.latent_shape(32, 32))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Mismatch dtype")  # the composite path warns so
        policy.velocity(x, torch.tensor([0.9]), cond, 3.5).float().square().mean().backward()
    assert all(m.weight.grad is not None and m.weight.grad.dtype == torch.float32 for m in norms)

    q = torch.randn(2, 7, norms[0].normalized_shape[0])
    plain.weight.data.uniform_(0.5, 1.5)
    norms[0].weight.data.copy_(plain.weight)
    assert torch.equal(norms[0](q), plain(q))  # equal dtypes: exactly nn.RMSNorm
    with torch.autocast("cpu", dtype=torch.bfloat16), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused, composite = norms[0](q.bfloat16()), plain(q.bfloat16())
    assert fused.dtype == composite.dtype == torch.bfloat16
    torch.testing.assert_close(fused, composite, rtol=1.6e-2, atol=1e-2)  # one bf16 rounding apart
