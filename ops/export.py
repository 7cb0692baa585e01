"""Export a ZenML Model version's tuned transformer: ``python -m ops.export MODEL [--version N | --stage production]
--format diffusers|single-file|comfyui|kohya --out PATH`` (a local folder or ``s3://bucket/prefix``).

Reads the version's ``tuned_transformer`` artifact and the configs of the step that trained it
(``ops.lineage``), then writes the format with :func:`srpo.export.writer.export_model`, a model
card beside it.
"""

from __future__ import annotations

import argparse

from srpo.export.layouts import EXPORT_FORMATS


def export(model: str, fmt: str, out: str, version: str | None = None, stage: str | None = None, client=None) -> str:
    from zenml.client import Client

    from ops.lineage import TUNED_ARTIFACT, trace
    from srpo.export.card import card_info
    from srpo.export.writer import export_model

    client = client or Client()
    if stage is not None:
        try:
            version = str(client.get_model_version(model, stage).name)
        except KeyError:
            raise LookupError(f"model {model!r} has no version in stage {stage!r}: `zenml model version list "
                              f"--model {model}` shows the stages") from None
    lineage = trace(model, version, client)
    model_version = client.get_model_version(model, lineage.version)
    folder = model_version.get_model_artifact(TUNED_ARTIFACT).load()
    params = lineage.step("train_srpo").parameters
    meta = lineage.metadata
    evaluation = {"means": meta.get("evaluation_means", {}),
                  "deltas": {k: v for k, v in meta.items() if k.startswith("delta_")}}
    promotion = {k.removeprefix("promotion_"): meta[k] for k in ("promotion_stage", "promotion_reason") if k in meta}
    card = card_info(model, lineage.version, folder.path, params["policy"], params.get("train", {}), evaluation,
                     promotion or None, licence=model_version.model.license)
    return export_model(folder.path, folder.kind, params["policy"]["pretrained"], fmt, out, card)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.export", description=__doc__.split("\n")[0])
    parser.add_argument("model", metavar="MODEL", help="a ZenML Model's name, e.g. srpo-flux-hps")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", help="a version number or name (default: the latest)")
    which.add_argument("--stage", choices=["production", "staging", "latest"], help="the version in this stage")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    parser.add_argument("--out", required=True, help="destination folder: a local path or s3://bucket/prefix")
    args = parser.parse_args(argv)
    try:
        print(export(args.model, args.format, args.out, args.version, args.stage))
    except (LookupError, ValueError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")


if __name__ == "__main__":
    main()
