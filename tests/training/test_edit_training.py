"""Edit training: (source, instruction) rollouts on the tiny Kontext model, their sources through the updates to
the policy's conditioning and to the reward."""

import json

import pytest
import torch

from srpo.artifacts import RolloutSet
from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.models.families import load_policy
from srpo.rewards import RewardConfig, load_reward
from srpo.rewards.combine import MultiReward, RewardTerm
from srpo.rewards.scores import ScoreReward
from srpo.training.rollouts import edit_rollouts
from srpo.training.trainer import SRPOTrainer
from srpo.world.edits import edit_score

COLOURS = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (230, 230, 40)]
NAMES = ["red", "blue", "green", "yellow"]
SRPO = {"steps": 2, "batch_size": 2, "learning_rate": 1e-3, "max_grad_norm": 1.0, "num_injections": 1,
        "discount": "linear"}


@pytest.fixture(scope="module")
def edit_folder(tmp_path_factory):
    """Four 32x32 flat-colour sources, each with an instruction, a target and both captions."""
    from PIL import Image

    root = tmp_path_factory.mktemp("edits")
    lines = []
    for i, colour in enumerate(COLOURS):
        Image.new("RGB", (32, 32), colour).save(root / f"{i}.png")
        Image.new("RGB", (32, 32), COLOURS[(i + 1) % 4]).save(root / f"{i}_t.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "instruction": f"make the background {NAMES[(i + 1) % 4]}",
                                 "target": f"{i}_t.png", "target_text": f"a {NAMES[(i + 1) % 4]} background",
                                 "source_text": f"a {NAMES[i]} background"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def kontext_cfg(family_dirs):
    return PolicyConfig(pretrained=str(family_dirs["flux-kontext"]), height=32, width=32, device="cpu")


@pytest.fixture(scope="module")
def edit_set(kontext_cfg, edit_folder):
    return edit_rollouts(load_policy(kontext_cfg), RolloutConfig(num_steps=2, edits=str(edit_folder)), kontext_cfg)


@pytest.fixture(scope="module")
def clip():
    return load_reward(RewardConfig(name="clip", checkpoint="builtin:tiny"))


def test_edit_rollouts_keep_sources_and_captions_through_save_and_load(edit_set, tmp_path):
    assert edit_set.prompts[0] == "make the background blue" and edit_set.sources.shape == (4, 3, 32, 32)
    assert edit_set.target_prompts[0] == "a blue background" and edit_set.source_prompts[3] == "a yellow background"
    assert torch.allclose(edit_set.sources[0, :, 0, 0], torch.tensor(COLOURS[0]) / 255)
    edit_set.save(tmp_path)
    back = RolloutSet.load(tmp_path)
    assert torch.equal(back.sources, edit_set.sources) and back.target_prompts == edit_set.target_prompts
    assert back.batch([2]).source_prompts == ["a green background"]


def test_offline_edit_rollouts_encode_the_targets(kontext_cfg, edit_folder):
    policy = load_policy(kontext_cfg)
    roll = edit_rollouts(policy, RolloutConfig(mode="offline", edits=str(edit_folder), num_prompts=2), kontext_cfg)
    target = torch.tensor(COLOURS[1]).view(1, 3, 1, 1).expand(1, 3, 32, 32) / 255
    assert roll.mode == "offline" and torch.allclose(roll.x0[:1], policy.encode_images(target), atol=1e-5)


def test_edit_rollouts_refuse_a_text_to_image_family(policy_cfg, edit_folder):
    with pytest.raises(ValueError, match=r"^rollouts.edits .* with policy.family 'flux', a text-to-image model"):
        edit_rollouts(load_policy(policy_cfg), RolloutConfig(edits=str(edit_folder)), policy_cfg)


def _srpo(kontext_cfg, reward, edit_set):
    trainer = SRPOTrainer(load_policy(kontext_cfg), reward, edit_set, TrainConfig(**SRPO), RolloutConfig(num_steps=2))
    before = {n: p.detach().clone() for n, p in trainer.policy.transformer.named_parameters()}
    history = trainer.train()
    after = {n: p.detach().clone() for n, p in trainer.policy.transformer.named_parameters()}
    return history, before, after


def test_srpo_on_edits_trains_with_the_source_terms_reproducibly(kontext_cfg, clip, edit_set, monkeypatch):
    import srpo.rewards.combine as combine

    seen = []
    real = combine.source_similarity
    monkeypatch.setattr(combine, "source_similarity",
                        lambda reward, images, sources: seen.append(sources.detach().clone()) or real(reward, images, sources))
    terms = MultiReward([RewardTerm(name="text", reward=clip, positive_words=["Real"], negative_words=["Painting"]),
                         RewardTerm(name="keep", reward=clip, weight=0.5, against="source"),
                         RewardTerm(name="direction", reward=clip, weight=0.5, against="direction")])
    history, before, after = _srpo(kontext_cfg, terms, edit_set)
    assert set(history[0].terms) == {"text", "keep", "direction"} and all(not log.skipped for log in history)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    # the reward saw this step's sources: for each call, one per image, rows of the rollout set's sources
    assert seen and all(s.shape[1:] == (3, 32, 32) for s in seen)
    stored = {tuple(s[:, 0, 0].tolist()) for s in edit_set.sources}
    assert all(tuple(row[:, 0, 0].tolist()) in stored for s in seen for row in s)
    history2, _, again = _srpo(kontext_cfg, terms, edit_set)
    assert all(torch.equal(after[n], again[n]) for n in after)
    assert [log.reward for log in history] == [log.reward for log in history2]


def test_grpo_on_edits_scores_with_the_sources(kontext_cfg, edit_set, monkeypatch):
    from srpo.models.flux_kontext import FluxKontextPolicy

    seen, conditioned = [], []
    real = FluxKontextPolicy.encode_sources
    monkeypatch.setattr(FluxKontextPolicy, "encode_sources",
                        lambda self, images: conditioned.append(images.shape) or real(self, images))

    def spy(images, prompts, sources=None):
        seen.append((list(prompts), sources))
        return edit_score(images, prompts, sources=sources)

    def run():
        cfg = TrainConfig(method="grpo", inversion=False, steps=1, batch_size=2, learning_rate=1e-3,
                          max_grad_norm=1.0, grpo={"group_size": 2, "clip_range": 0.2})
        trainer = SRPOTrainer(load_policy(kontext_cfg), ScoreReward(spy, "shapes-edit"), edit_set, cfg,
                              RolloutConfig(num_steps=3))
        before = {n: p.detach().clone() for n, p in trainer.policy.transformer.named_parameters()}
        trainer.train()
        return before, {n: p.detach().clone() for n, p in trainer.policy.transformer.named_parameters()}

    before, after = run()
    prompts, sources = seen[0]
    assert len(prompts) == 4 and sources is not None and sources.shape == (4, 3, 32, 32)
    for prompt, source in zip(prompts, sources):  # each member's source is its instruction's
        row = edit_set.prompts.index(prompt)
        assert torch.equal(source, edit_set.sources[row].to(source))
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert (4, 3, 32, 32) in conditioned  # the group's sampling conditioned on its sources
    _, again = run()
    assert all(torch.equal(after[n], again[n]) for n in after)


def _job(policy_cfg, rollout, **kw):
    from srpo.training.job import TrainingJob

    reward = kw.pop("reward", RewardConfig(name="clip", checkpoint="builtin:tiny"))
    train = kw.pop("train", TrainConfig(**SRPO))
    return TrainingJob(policy=policy_cfg, reward=reward, rollout=rollout, train=train, **kw)


def test_validation_refuses_edit_runs_that_cannot_work(policy_cfg, kontext_cfg, edit_folder):
    from srpo.rewards.config import MultiRewardConfig

    edits = RolloutConfig(edits=str(edit_folder))
    _job(kontext_cfg, edits).validate_run()
    with pytest.raises(ValueError, match=r"^rollouts.edits '.*' with policy.family 'flux', a text-to-image model: "
                                         r"use an edit family"):
        _job(policy_cfg, edits).validate_run()
    with pytest.raises(ValueError, match=r"^rollouts.edits is not set, but policy.family 'flux-kontext' .* edits "
                                         r"images: set rollouts.edits"):
        _job(kontext_cfg, RolloutConfig()).validate_run()
    keep = MultiRewardConfig(rewards=[{"reward": {"name": "clip", "checkpoint": "builtin:tiny"}, "name": "keep",
                                       "against": "source", "form": "plain"}])
    with pytest.raises(ValueError, match=r"^rewards entry 'keep' has against: source, .* the run has no sources: "
                                         r"set rollouts.edits"):
        _job(policy_cfg, RolloutConfig(), rewards=keep).validate_run()
    judge = RewardConfig(name="score", function="shapes-edit")
    with pytest.raises(ValueError, match=r"^reward.function 'shapes-edit' judges an edit against its source, but "
                                         r"the run has no sources"):
        _job(policy_cfg, RolloutConfig(), reward=judge,
             train=TrainConfig(method="grpo", inversion=False, batch_size=2)).validate_run()
    with pytest.raises(ValueError, match=r"rollouts.images .* with rollouts.edits"):
        RolloutConfig(mode="offline", images="x", edits=str(edit_folder))


def test_the_memory_plan_counts_the_source_tokens():
    """Kontext is FLUX.1 [dev]'s transformer: its activations exceed FLUX.1's by the source image's tokens."""
    from srpo.training.memory import plan_memory

    train = TrainConfig(batch_size=1, finetune="lora", lora_rank=16)
    acts = {}
    for family, model in [("flux", "black-forest-labs/FLUX.1-dev"), ("flux-kontext", "black-forest-labs/FLUX.1-Kontext-dev")]:
        policy = PolicyConfig(pretrained=model, family=family, height=512, width=512, gradient_checkpointing=True)
        acts[family] = dict(plan_memory(policy, train).rows())["activations (per-block checkpointing)"]
    assert acts["flux-kontext"] > 1.5 * acts["flux"]


def test_qwen_image_edit_trains_from_rows_stored_per_instruction_and_source(family_dirs, edit_folder, clip):
    """Qwen-Image-Edit's text rows depend on the source: the trainer finds them by (instruction, source)."""
    cfg = PolicyConfig(pretrained=str(family_dirs["qwen-image-edit"]), height=32, width=32, device="cpu")
    roll = edit_rollouts(load_policy(cfg), RolloutConfig(num_steps=2, edits=str(edit_folder)), cfg)
    terms = MultiReward([RewardTerm(name="keep", reward=clip, against="source")])
    policy = load_policy(cfg, text_encoders=False)  # the training process: stored rows only
    trainer = SRPOTrainer(policy, terms, roll, TrainConfig(**SRPO), RolloutConfig(num_steps=2))
    history = trainer.train()
    assert len(history) == 2 and all(not log.skipped for log in history)
