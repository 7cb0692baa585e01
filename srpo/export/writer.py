"""Export one trained folder (a LoRA or a full transformer) into the layouts other tools load.

``export_model`` writes into a local folder atomically (a failure leaves nothing under the final
name), then copies it to ``s3://...`` or any fsspec URL when the destination is one. Every
safetensors file carries metadata naming the base model, the family and the format.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from srpo.export.card import CardInfo, model_card
from srpo.export.layouts import EXPORT_FORMATS, lora_to_layout, module_scales, peft_modules, to_original_state_dict
from srpo.export.merge import lora_config_metadata, merge_lora, read_lora, read_transformer
from srpo.io import atomic_directory, is_url, strip_file_scheme

ExportFormat = Literal["diffusers", "single-file", "comfyui", "kohya"]


class ExportConfig(BaseModel):
    """The pipeline's optional ``export:`` section: which formats, and where (a local path or ``s3://...``)."""

    model_config = ConfigDict(extra="forbid")

    formats: list[ExportFormat] = Field(default_factory=lambda: ["diffusers"], min_length=1)
    out: str = Field(description="destination folder: a local path or an fsspec URL (s3://bucket/prefix)")


def _save(tensors: dict, path: Path, fmt: str, base_model: str, family: str, extra: Optional[dict] = None) -> None:
    from safetensors.torch import save_file

    meta = {"format": fmt, "base_model": base_model, "family": family, "exporter": "srpo", **(extra or {})}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def export_model(tuned: str | Path, kind: str, base_model: str, fmt: str, out: str, card: CardInfo) -> str:
    """Write ``tuned`` (``kind`` "lora" or "diffusers-transformer") as ``fmt`` into ``out``; returns ``out``.

    Formats: ``diffusers`` (the transformer folder ``transformer/``, merged for a LoRA, plus the
    diffusers/PEFT LoRA ``lora/``), ``single-file`` (one merged file in the original layout, what
    ComfyUI's UNETLoader reads), ``comfyui`` and ``kohya`` (the LoRA in those key layouts; for a
    full fine-tune ``comfyui`` is the single file and ``kohya`` does not exist).

    Raises:
        ValueError: an unknown format, or a LoRA layout asked of a full fine-tune.
    """
    from srpo.models.families import detect_family, resolve_location

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format {fmt!r} is not one of {list(EXPORT_FORMATS)}")
    if kind != "lora" and fmt == "kohya":
        raise ValueError("export format 'kohya' is a LoRA layout, but this version is a full fine-tune: export it "
                         "as 'single-file' (or 'diffusers')")
    base_dir = _base_folder(resolve_location(base_model))
    family = detect_family(str(base_dir))
    card.family = family
    tuned = Path(tuned)
    lora, config = read_lora(tuned) if kind == "lora" else (None, None)
    files: dict[str, str] = {}
    local = Path(strip_file_scheme(out)) if not is_url(out) else None
    target = local if local is not None else Path(_staging(out))
    with atomic_directory(target) as tmp:
        if fmt in ("diffusers", "single-file") or (fmt == "comfyui" and lora is None):
            base = read_transformer(base_dir / "transformer")
            weights = merge_lora(base, lora, config) if lora is not None else read_transformer(tuned)
            if fmt == "diffusers":
                (tmp / "transformer").mkdir()
                shutil.copy(base_dir / "transformer" / "config.json", tmp / "transformer" / "config.json")
                _save(weights, tmp / "transformer" / "diffusion_pytorch_model.safetensors", "diffusers", base_model, family)
                files["transformer/"] = "the tuned transformer, diffusers layout (from_pretrained)"
                if lora is not None:
                    (tmp / "lora").mkdir()
                    _save(lora, tmp / "lora" / "pytorch_lora_weights.safetensors", "diffusers-lora", base_model, family,
                          lora_config_metadata(config) if config else None)
                    files["lora/"] = "the LoRA, diffusers / PEFT layout (load_lora_weights)"
            else:
                _save(to_original_state_dict(family, weights), tmp / "model.safetensors", "single-file", base_model,
                      family)
                files["model.safetensors"] = "the merged transformer in the original layout (ComfyUI UNETLoader)"
        else:
            shapes = _shapes(base_dir / "transformer")
            converted = lora_to_layout(family, fmt, lora, module_scales(peft_modules(lora), config), shapes)
            name = f"lora_{fmt}.safetensors"
            _save(converted, tmp / name, f"{fmt}-lora", base_model, family)
            files[name] = f"the LoRA in {fmt}'s key layout (scale folded in, alpha = rank)"
        card.files = files
        (tmp / "README.md").write_text(model_card(card), encoding="utf-8")
        if local is None:
            _upload(tmp, out)
    if local is None:
        shutil.rmtree(target.parent, ignore_errors=True)  # the local staging copy of a remote export
    return out


def _base_folder(location) -> Path:
    """A local folder with the base model's ``model_index.json`` and ``transformer/`` (a hub id is fetched)."""
    from srpo.io import is_hub_id

    if isinstance(location, str) and is_hub_id(location) and not Path(location).exists():
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(location, allow_patterns=["model_index.json", "transformer/*"]))
    return Path(location)


def _shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Weight shapes of a diffusers model folder, read from the safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    shapes = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as handle:
            for key in handle.keys():
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    return shapes


def _staging(url: str) -> str:
    import tempfile

    return str(Path(tempfile.mkdtemp(prefix="srpo-export-")) / "out")


def _upload(folder: Path, url: str) -> None:
    """Copy ``folder``'s files under ``url`` (fsspec); the card goes last, so a listed card means a whole export."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.name == "README.md")
    for p in files:
        fs.put_file(str(p), f"{root.rstrip('/')}/{p.relative_to(folder).as_posix()}")
