"""The shapes world for the benchmarks: the published bootstrap, or a fresh one made the same way.

The benchmarks run on what ``shapes_bootstrap`` published (``$SRPO_CACHE/world/``); when nothing is
published yet they train it here, through the same library functions and the same config file
(``configs/shapes_bootstrap.yaml``), so the numbers refer to the demo's world either way.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import yaml

from srpo.world.bootstrap import WorldCheckConfig, bootstrap_generator, bootstrap_reward
from srpo.world.generator import GeneratorConfig
from srpo.published import publish, published_path, read_record
from srpo.world.reward import RewardTrainConfig
from srpo.world.shapes import WorldSpec

BOOTSTRAP_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "shapes_bootstrap.yaml"


def bootstrap_settings(path: Path = BOOTSTRAP_CONFIG):
    params = (yaml.safe_load(path.read_text()) or {}).get("parameters", {})
    return (WorldSpec(**params.get("world", {})), GeneratorConfig(**params.get("generator", {})),
            RewardTrainConfig(**params.get("reward", {})), WorldCheckConfig(**params.get("checks", {})))


def ensure_world(biased: bool = False, seed: int | None = None) -> dict:
    """Publish the world's generator and reward (and the biased reward) unless already published.

    ``seed``: another bootstrap of the same world (the generator's and the reward's training seeds);
    publish it under its own ``$SRPO_CACHE``, since the names are the demo's.
    """
    spec, gen_cfg, rew_cfg, _ = bootstrap_settings()
    if seed is not None:
        gen_cfg, rew_cfg = gen_cfg.model_copy(update={"seed": seed}), rew_cfg.model_copy(update={"seed": seed})
    wanted = {"shapes-flux": ("generator", gen_cfg), "shapes-clip": ("reward", rew_cfg)}
    if biased:
        wanted["shapes-clip-biased"] = ("reward", rew_cfg.model_copy(update={"bias": "saturation"}))
    for name, (kind, cfg) in wanted.items():
        try:
            published_path(name)
            continue
        except FileNotFoundError:
            pass
        logging.getLogger(__name__).info("training %s (not published yet)", name)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / name
            info = (bootstrap_generator if kind == "generator" else bootstrap_reward)(cfg, spec, out)
            publish(name, out, {"made_by": "benchmarks.world.ensure_world", "seconds": info["seconds"]})
    return read_record()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.world", description=__doc__.split("\n")[0])
    parser.add_argument("--biased", action="store_true", help="also the reward with a planted saturation bias")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    record = ensure_world(biased=args.biased)
    print(record)
    return record


if __name__ == "__main__":
    main()
