"""A reward tower inside the training graph: open_clip's attention layout at batch 1 and 2.

    python -m benchmarks.reward_backward             # ViT-H-14 (HPS v2.1's tower), random weights, 224 px
    python -m benchmarks.reward_backward --layers 8  # the first 8 of its 32 blocks, 4x quicker
    python -m benchmarks.reward_backward --quick     # srpo's tiny open_clip, a check of the script

Times the image tower's forward and backward to its input pixels (what SRPO's update does:
the reward is frozen, its gradient flows into the image) at batch 1 and batch 2, with open_clip's
own batch-first layout and with :func:`srpo.rewards.open_clip_reward.use_sequence_first_attention`,
which the reward wrapper applies. ``slowdown_at_batch_2`` is seconds per image at batch 2 over
seconds per image at batch 1 (1.0: batching costs nothing per image, below 1: it pays).
"""

from __future__ import annotations

import argparse
import copy

import torch

from benchmarks.common import emit, machine, median, time_it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="srpo's tiny open_clip instead of ViT-H-14")
    parser.add_argument("--layers", type=int, default=None, help="keep only the first N transformer blocks")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from srpo.rewards.open_clip_reward import TINY_ARCHITECTURE, create_open_clip_model, use_sequence_first_attention

    architecture = TINY_ARCHITECTURE if args.quick else "ViT-H-14"
    torch.manual_seed(0)
    batch_first = create_open_clip_model(architecture).visual.requires_grad_(False)
    if args.layers:
        batch_first.transformer.resblocks = batch_first.transformer.resblocks[: args.layers]
    towers = {"batch_first": batch_first, "sequence_first": use_sequence_first_attention(copy.deepcopy(batch_first))}
    size = batch_first.image_size[0] if isinstance(batch_first.image_size, tuple) else batch_first.image_size
    results = {}
    for layout, tower in towers.items():
        entry = {}
        for batch in (1, 2):
            pixels = torch.randn(batch, 3, size, size, requires_grad=True)

            def forward_backward():
                tower(pixels).square().sum().backward()

            times = time_it(forward_backward, args.repeats, warmup=1)
            entry[f"seconds_batch_{batch}"] = median(times)
        entry["slowdown_at_batch_2"] = entry["seconds_batch_2"] / 2 / entry["seconds_batch_1"]
        results[layout] = entry
        print(layout, {k: round(v, 3) for k, v in entry.items()}, flush=True)
    speedup = results["batch_first"]["seconds_batch_2"] / results["sequence_first"]["seconds_batch_2"]
    emit({"benchmark": "reward_backward", "architecture": architecture, "image_size": size,
          "blocks": len(batch_first.transformer.resblocks), "layouts": results, "speedup_at_batch_2": speedup,
          "machine": machine()})


if __name__ == "__main__":
    main()
