"""How an edit reward on a CLIP-style model ranks edits of the shapes world (no training).

On drawn triples shown as the world's VAE returns them (8x8 blocks), the reward
``target_text_term + w * source_term``, and the directional term alone (:mod:`srpo.rewards.edit_reward`),
is computed for the right
edit (the target), for no edit (the source) and for a wrong edit (the same source with another
attribute changed), for several consistency weights ``w``. Reported: the share of triples where the
target scores above the source and above the wrong edit, overall and per attribute. Prints one JSON object.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import emit
from srpo.rewards import RewardConfig, load_reward
from srpo.rewards.combine import MultiReward, RewardTerm
from srpo.world.edits import EDIT_ATTRIBUTES, apply_edits, draw_edits, sample_edits
from srpo.world.reward import blocks
from srpo.world.shapes import render


@torch.no_grad()
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edit_reward", description=__doc__.split("\n")[0])
    parser.add_argument("--reward", default="builtin:shapes-clip", help="an hf_clip checkpoint")
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--weights", default="0,0.25,0.5,1")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    clip = load_reward(RewardConfig(name="hf_clip", checkpoint=args.reward))
    t = draw_edits(args.n, seed=31, attributes=EDIT_ATTRIBUTES)
    wrong_edits = sample_edits(t.source_scenes, seed=97, attributes=EDIT_ATTRIBUTES)
    differs = torch.tensor([w.attribute != e.attribute for w, e in zip(wrong_edits, t.edits)])  # [N]
    src, tgt = blocks(t.sources), blocks(t.targets)  # what the world's VAE decodes
    wrong = blocks(render(apply_edits(t.source_scenes, wrong_edits)))
    attrs = [e.attribute for e in t.edits]
    result: dict = {"reward": args.reward, "n": args.n, "wrong_edits": int(differs.sum())}
    target = RewardTerm(name="target", reward=clip, form="plain")
    setups = {f"keep_weight_{w:g}": [target, RewardTerm(name="keep", reward=clip, form="plain", against="source",
                                                          weight=w)] for w in map(float, args.weights.split(","))}
    setups["direction"] = [RewardTerm(name="direction", reward=clip, form="plain", against="direction")]
    for label, terms in setups.items():
        multi = MultiReward(terms)
        score = {name: multi(x, t.target_texts, sources=src, source_prompts=t.source_texts)[0] for name, x in
                 (("target", tgt), ("source", src), ("wrong", wrong))}
        above_source = score["target"] > score["source"]
        above_wrong = (score["target"] > score["wrong"])[differs]
        result[label] = {
            "target_above_source": above_source.float().mean().item(),
            "target_above_wrong_edit": above_wrong.float().mean().item(),
            "target_above_source_by_attribute": {a: above_source[torch.tensor([x == a for x in attrs])].float().mean().item()
                                                 for a in EDIT_ATTRIBUTES}}
    emit(result, args.json_out)
    return result


if __name__ == "__main__":
    main()
