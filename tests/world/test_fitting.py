"""The world's supervised loop: learning-rate shape, clipping, history and progress callbacks."""

import math

import pytest
import torch

from srpo.world.fitting import Fitter, warmup_cosine


def test_warmup_then_cosine_down_to_a_tenth():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, steps=100, warmup_fraction=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[10] == pytest.approx(1.0) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))


def test_fitter_descends_clips_and_reports_on_schedule():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.full((3,), 100.0))
    calls = []
    fitter = Fitter([w], steps=25, learning_rate=0.5, weight_decay=0.0, warmup_fraction=0.1, label="t",
                    log_every=10, on_log=lambda step, loss: calls.append((step, loss)))
    for step in range(25):
        loss = fitter.update(step, (w ** 2).sum())
        assert float(w.grad.norm()) <= 1.0 + 1e-5  # 2w ~ 200 per entry before clipping
    assert fitter.history[-1] == loss < fitter.history[0]
    assert [s for s, _ in calls] == [0, 10, 20, 24] and calls[-1][1] == fitter.history[-1]
