"""Rank candidate control words for a reward: which words separate the look you want from the one you do not.

    python -m ops.find_control_words --reward hpsv2.1 --checkpoint s3://models/HPS_v2.1_compressed.pt \\
        --images-a wanted/ --images-b unwanted/ --prompts prompts.txt --out report/
    python -m ops.find_control_words --reward hf_clip --checkpoint builtin:shapes-clip \\
        --images-a world:bright --images-b world:dark --candidates bright dark vivid muted red circle

Writes ``control_words.csv``, ``report.json`` and ``index.html`` into ``--out`` and prints the
table (see :mod:`srpo.rewards.word_finder` for the statistic).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from srpo.evaluation.word_report import PAPER_WORDS, WordFinderConfig, run_word_finder
from srpo.rewards.config import RewardConfig
from srpo.rewards.word_finder import COLUMNS


def read_lines(values: list[str] | None) -> list[str] | None:
    """Words/prompts from the command line; a single existing file is read one entry a line."""
    if values and len(values) == 1 and Path(values[0]).is_file():
        return [line.strip() for line in Path(values[0]).read_text().splitlines() if line.strip()]
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reward", required=True, help="reward name (hpsv2.1, pickscore, clip, hf_clip, hpsv3)")
    parser.add_argument("--checkpoint", default=None, help="the reward's checkpoint (path, s3:// URL, hub id, builtin:...)")
    parser.add_argument("--images-a", required=True, help="the wanted look: image folder or world:<word>")
    parser.add_argument("--images-b", required=True, help="the unwanted look: image folder or world:<word>")
    parser.add_argument("--prompts", nargs="+", default=None, help="prompts, or one file with a prompt a line")
    parser.add_argument("--candidates", nargs="+", default=None,
                        help=f"candidate words, or one file with a word a line (default: {', '.join(PAPER_WORDS)})")
    parser.add_argument("--max-images", type=int, default=64)
    parser.add_argument("--num-samples", type=int, default=500, help="bootstrap resamples")
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("control_words"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fields = {"prompts": read_lines(args.prompts), "candidates": read_lines(args.candidates)}
    cfg = WordFinderConfig(reward=RewardConfig(name=args.reward, checkpoint=args.checkpoint), images_a=args.images_a,
                           images_b=args.images_b, max_images=args.max_images, num_samples=args.num_samples,
                           confidence=args.confidence, seed=args.seed, **{k: v for k, v in fields.items() if v})
    report, scores = run_word_finder(cfg, args.out)
    print("  ".join(f"{c:>10}" for c in COLUMNS))
    for s in scores:
        print("  ".join(f"{v:>10.3f}" if isinstance(v, float) else f"{v!s:>10}" for v in s.row().values()))
    print(f"report: {report.index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
