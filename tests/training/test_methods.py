"""The method registry: one row per train.method name, the needs each declares, the checks it owns."""

import ast
from pathlib import Path

import pytest

from srpo.config import RolloutConfig, TrainConfig
from srpo.training.methods import METHODS, Method, check_method, method_for
from srpo.training.methods.direct_align import DirectAlign

METHODS_DIR = Path(__file__).resolve().parents[2] / "srpo" / "training" / "methods"


def test_every_row_is_a_method_named_by_its_key_and_built_fresh_per_run():
    for name, row in METHODS.items():
        cfg = TrainConfig(method=name, inversion=name == "srpo")
        method = method_for(cfg)
        assert isinstance(method, Method) and method.name == name and row.summary
        assert method_for(cfg) is not method  # a method may hold state (GRPO's reference): one per run


def test_an_unknown_method_is_refused_with_the_rows():
    cfg = TrainConfig().model_copy(update={"method": "ppo"})
    with pytest.raises(ValueError, match=r"^train.method 'ppo' is not a training method: use one of \[.*'grpo'"):
        check_method(cfg, RolloutConfig())


def test_only_srpo_trains_the_inversion_branch():
    assert method_for(TrainConfig()).branches(TrainConfig()) == ("denoise", "inversion")
    assert method_for(TrainConfig()).branches(TrainConfig(inversion=False)) == ("denoise",)
    assert [n for n, m in METHODS.items() if m.has_inversion] == ["srpo"]
    for name, row in METHODS.items():
        if issubclass(row, DirectAlign) and name != "srpo":
            cfg = TrainConfig(method=name, inversion=False)
            assert method_for(cfg).branches(cfg) == ("denoise",)


def test_score_only_rewards_are_refused_by_the_rows_that_need_a_gradient():
    takers = " or ".join(sorted(n for n, m in METHODS.items() if m.takes_score_only))
    assert takers == "awm or grpo or mixgrpo or nft"
    rollout = RolloutConfig(num_steps=25)  # room for every row's default settings (AWM's strata, MixGRPO's window)
    for name, row in METHODS.items():
        cfg = TrainConfig(method=name, inversion=False)
        if row.takes_score_only:
            check_method(cfg, rollout, score_only=True, reward_label="'toy'")
        else:
            with pytest.raises(ValueError, match=rf"^train.method '{name}' backpropagates through the reward, "
                                                 rf"but the reward 'toy' is score-only: use train.method {takers}"):
                check_method(cfg, rollout, score_only=True, reward_label="'toy'")


def test_draft_refuses_more_steps_than_the_rollout_has():
    cfg = TrainConfig(method="draft", inversion=False, draft_steps=5)
    with pytest.raises(ValueError, match=r"^train.draft_steps 5 exceeds the rollout's 4 steps"):
        check_method(cfg, RolloutConfig(num_steps=4))
    check_method(cfg, RolloutConfig(num_steps=5))


def test_no_method_imports_the_trainer_or_the_job():
    for path in METHODS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith(("srpo.training.trainer", "srpo.training.job", "srpo.training.launch")), \
                    f"{path.name} imports {name}"
