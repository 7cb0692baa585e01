"""The world's edit model before any reward training: done / kept of its edits on held-out triples.

Trains the edit model (``srpo.world.edit_generator``) with the given steps, or loads a saved one
(``--model``: a folder or ``builtin:shapes-kontext``), then grades 240 held-out edits from pixels
next to the two bounds (the source copied: done 0, kept 1; the drawn targets through the same VAE).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import emit
from srpo.models.families import load_policy_for
from srpo.models.flux_kontext import FluxKontextPolicy
from srpo.published import is_builtin, resolve_builtin
from srpo.world.edit_generator import EditGeneratorConfig, check_edit_model, train_edit_generator
from srpo.world.generator import save_pipeline


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edit_model", description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a saved edit model (folder or builtin:shapes-kontext); else train one")
    parser.add_argument("--steps", type=int, default=EditGeneratorConfig().steps)
    parser.add_argument("--batch-size", type=int, default=EditGeneratorConfig().batch_size)
    parser.add_argument("--identity-fraction", type=float, default=EditGeneratorConfig().identity_fraction)
    parser.add_argument("--init", help="start from this world generator (folder or builtin:shapes-flux); else random")
    parser.add_argument("--held-out", type=int, default=240)
    parser.add_argument("--save", help="folder to save the trained model in")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result: dict = {"threads": torch.get_num_threads()}
    if args.model:
        policy = load_policy_for(args.model, "flux-kontext")
        result["model_source"] = args.model
    else:
        cfg = EditGeneratorConfig(steps=args.steps, batch_size=args.batch_size,
                                  identity_fraction=args.identity_fraction)
        init = resolve_builtin("policy", args.init) if is_builtin(args.init) else args.init
        pipe, info = train_edit_generator(cfg, init=init)
        result["init"] = args.init
        curve = info["flow_curve"]
        result.update(config=cfg.model_dump(mode="json"), train_seconds=round(info["seconds"], 1),
                      transformer_params=info["transformer_params"],
                      loss_first_last=[curve[0], sum(curve[-20:]) / len(curve[-20:])] if curve else None)
        if args.save:
            save_pipeline(pipe, args.save)
        policy = FluxKontextPolicy(pipe, "cpu")
    result.update(check_edit_model(policy, n=args.held_out))
    result["seconds"] = round(time.perf_counter() - start, 1)
    emit(result, args.json_out)
    return result


if __name__ == "__main__":
    main()
