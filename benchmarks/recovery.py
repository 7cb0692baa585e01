"""Recovery error of Direct-Align vs standard one-step prediction by noise level (paper fig. 3).

    python -m benchmarks.recovery [--samples 120] [--seed 0]

On the trained shapes-world generator: roll out clean latents x0 from seeded noise eps (the
online setting Direct-Align trains in), inject that same noise at level sigma, and recover x0

- one-step prediction (ReFL):   x0hat = x_sigma - sigma * v(x_sigma, sigma)
- Direct-Align (denoise branch): one model step of size d down to t = sigma - d, then remove the
  known noise: x0hat = (x_t - t * eps) / (1 - t), for d = 0.025 (headline) and 0.075 (the paper's
  two rows)

and report the MSE to x0 (latent space) per sigma, plus the share of recovered images whose
colours the grader still reads right. Both recoveries use the same velocity at (x_sigma, sigma),
so their errors are one vector scaled by sigma and by d / (1 - t): the MSE ratio is
(sigma (1 - sigma + d) / d)^2 for any model (``ratio_analytic``; the benchmark checks the code
reproduces it), while the MSEs themselves, and ``velocity_mse`` = one-step MSE / sigma^2, measure
how far the trained model's velocity is from the true one at each level. Also writes docs/figures/recovery.png (rows: sigma; left:
one-step, right: Direct-Align). Last line: one JSON object with ``sigmas``, ``direct_align_mse``,
``one_step_mse``, ``ratio_at_0_9``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import emit, machine
from benchmarks.world import ensure_world
from srpo.config import PolicyConfig
from srpo.direct_align import add_noise, denoise_recover, one_step_predict
from srpo.world.grader import fidelity, grade
from srpo.world.shapes import all_base_prompts

SIGMAS = [0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]
STEPS = [0.025, 0.075]
FIGURE = Path(__file__).resolve().parent.parent / "docs" / "figures" / "recovery.png"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=3.5)
    parser.add_argument("--figure", type=Path, default=FIGURE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    start = time.perf_counter()
    ensure_world()
    from srpo.models.families import load_policy
    from srpo.world.generator import sample_images  # noqa: F401  (same sampler as the world checks)

    policy = load_policy(PolicyConfig(pretrained="builtin:shapes-flux", device="cpu"))
    prompts = [all_base_prompts()[i % 60] for i in range(args.samples)]
    c, h, w = policy.latent_shape(64, 64)
    eps = torch.stack([torch.randn((c, h, w), generator=torch.Generator().manual_seed(args.seed * 100003 + i))
                       for i in range(args.samples)])
    with torch.no_grad():
        cond = policy.encode_prompts(prompts)
        x0 = policy.rollout(cond, eps, 25, 3.0, args.guidance)  # [N, C, h, w]
        velocity = policy.velocity_fn(cond, args.guidance)
        clean_fid = fidelity(grade(policy.decode(x0)), prompts)["colours"]
        one_step, direct, direct_by_d, colours_one, colours_direct, rows = [], [], {d: [] for d in STEPS}, [], [], []
        for sigma in SIGMAS:
            x_s = add_noise(x0, eps, sigma)
            pred = one_step_predict(velocity, x_s, sigma)
            one_step.append(float(((pred - x0) ** 2).mean()))
            for d in STEPS:
                rec = denoise_recover(velocity, x0, eps, sigma - d, d)  # starts at sigma, one step of size d
                direct_by_d[d].append(float(((rec - x0) ** 2).mean()))
                if d == STEPS[0]:
                    rec_main = rec
            direct.append(direct_by_d[STEPS[0]][-1])
            img_one, img_dir = policy.decode(pred), policy.decode(rec_main)
            colours_one.append(fidelity(grade(img_one), prompts)["colours"])
            colours_direct.append(fidelity(grade(img_dir), prompts)["colours"])
            rows.append((sigma, img_one[:6], img_dir[:6]))
            logging.info("sigma %.2f: one-step MSE %.4f, Direct-Align MSE %.5f", sigma, one_step[-1], direct[-1])
    figure(rows, policy.decode(x0[:6]), args.figure)
    i = SIGMAS.index(0.9)
    d = STEPS[0]
    # both recoveries use the same velocity v(x_sigma, sigma), so their errors are the same vector
    # scaled: sigma * (v - v*) against d / (1 - t) * (v - v*), t = sigma - d. The MSE ratio is then
    # (sigma * (1 - sigma + d) / d)^2 whatever the model; the MSEs themselves measure the model.
    analytic = [(s * (1 - s + d) / d) ** 2 for s in SIGMAS]
    measured = [o / a for o, a in zip(one_step, direct)]
    result = {
        "benchmark": "recovery", "sigmas": SIGMAS, "direct_align_step": d,
        "direct_align_mse": direct, "one_step_mse": one_step, "ratio_at_0_9": measured[i],
        "ratio": measured, "ratio_analytic": analytic,
        "ratio_matches_analytic": all(abs(m / a - 1) < 1e-3 for m, a in zip(measured, analytic)),
        "velocity_mse": [o / s ** 2 for o, s in zip(one_step, SIGMAS)],
        "direct_align_mse_by_step": {str(d): v for d, v in direct_by_d.items()},
        "colours_right_one_step": colours_one, "colours_right_direct_align": colours_direct,
        "colours_right_clean": clean_fid, "samples": args.samples, "seed": args.seed, "guidance": args.guidance,
        "figure": str(args.figure), "seconds": time.perf_counter() - start, "machine": machine(),
    }
    emit(result)
    return result


def figure(rows, clean: torch.Tensor, path: Path) -> None:
    from srpo.world.plots import image_grid, side_by_side

    labels = [f"sigma {s:.2f}" for s, _, _ in rows]
    left = image_grid([clean] + [r[1] for r in rows], ["clean x0"] + labels, scale=1, title="one-step prediction")
    right = image_grid([clean] + [r[2] for r in rows], ["clean x0"] + labels, scale=1,
                       title=f"Direct-Align (d = {STEPS[0]})")
    path.parent.mkdir(parents=True, exist_ok=True)
    side_by_side([left, right], pad=16).save(path)


if __name__ == "__main__":
    main()
