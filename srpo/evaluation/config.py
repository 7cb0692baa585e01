"""Typed configuration of the evaluation suite: benchmark, metrics, models, report, human evaluation.

Generation settings (steps, guidance, seeds) are :class:`EvalConfig`; the rest is what the
evaluation suite needs on top. Every model forbids unknown keys, and
combinations that cannot work raise an error that names the field and the fix.
"""

from __future__ import annotations

import re
from typing import Literal, Mapping, Optional, Sequence

from pydantic import Field, field_validator, model_validator

from srpo.config import StrictModel, one_of


class EditEvalConfig(StrictModel):
    """An edit model's held-out edits: a folder of (source image, instruction) pairs (:mod:`srpo.edit_data`).

    Never the training pairs: ``srpo_training`` refuses the folder ``rollouts.edits`` trains on, and any
    held-out pair whose source image (its bytes) and instruction also occur there. ``grader: shapes``
    grades every edit from pixels with the shapes world's grader (:mod:`srpo.world.edits`: the share of
    edits done and of the unnamed attributes kept, overall and per attribute).
    """

    source: str = Field(min_length=1, description="folder or s3:// prefix with metadata.jsonl and the sources")
    grader: Optional[Literal["shapes"]] = Field(None, description="shapes: the shapes world's pixel grader")


class EvalConfig(StrictModel):
    """How base and tuned models are compared on held-out prompts (or, for an edit model, held-out ``edits``)."""

    num_prompts: Optional[int] = Field(None, ge=1, description="score the first N prompts (default: all); only for "
                                       "single-category prompts: use benchmark.per_category on a benchmark")
    num_steps: int = Field(50, ge=1)
    guidance: float = Field(3.5, ge=0)
    shift: float = Field(3.0, gt=0)
    seed: int = 42  # the paper: seed 42 + index * 1000 per prompt
    seed_stride: int = 1000
    edits: Optional[EditEvalConfig] = Field(None, description="edit models: the held-out edits to evaluate on "
                                            "instead of prompts (num_prompts: the first N pairs)")


# ----------------------------------------------------------------------------------- benchmark

#: The HPDv2 benchmark's four categories, in the order their prompts are numbered.
HPDV2_CATEGORIES = ("anime", "concept-art", "paintings", "photo")
#: Category prefix of the style-word variants (``style/<word>``) used by the paired style study.
STYLE_CATEGORY_PREFIX = "style/"


class StyleVariantsConfig(StrictModel):
    """Extra prompts for the paired style study: the first ``num_prompts`` of ``category`` with a style word.

    The paper takes the first 200 photo prompts (simple, no style terms of their own) and adds
    one style word to each; every variant becomes an evaluation item of category ``style/<word>``.
    """

    words: list[str] = Field(min_length=1)
    category: str = "photo"
    num_prompts: int = Field(200, ge=1)
    template: str = Field("{prompt}, {word} style", description="how a word is added; needs {prompt} and {word}")

    @field_validator("template")
    @classmethod
    def _placeholders(cls, template: str) -> str:
        if "{prompt}" not in template or "{word}" not in template:
            raise ValueError(f"style template {template!r} must contain both {{prompt}} and {{word}}")
        return template

    @field_validator("words")
    @classmethod
    def _no_blank_words(cls, words: list[str]) -> list[str]:
        words = [w.strip() for w in words]
        if any(not w for w in words) or len(set(words)) != len(words):
            raise ValueError(f"style words must be non-blank and distinct, got {words}")
        return words


class BenchmarkConfig(StrictModel):
    """Where the evaluation prompts come from.

    ``format``:
    - ``hpdv2``: a folder (local or ``s3://``) with the HPDv2 benchmark's four JSON files
      ``anime.json``, ``concept-art.json``, ``paintings.json``, ``photo.json`` (each a JSON list
      of prompt strings; 800 each in the official release, checked when ``expected_per_category``
      is set);
    - ``geneval``: GenEval's ``prompts/evaluation_metadata.jsonl`` (one JSON object per line
      with ``prompt``, ``tag``, ``include`` and optional ``exclude``); category = ``tag``, and
      each prompt keeps its whole record for the ``geneval`` metric;
    - ``txt``: one prompt per line, category ``all``;
    - ``csv``: a header row; prompts in column ``column``, categories in ``category_column``
      when the file has it (else ``all``);
    - ``auto``: ``hpdv2`` for a folder, ``geneval`` for a ``.jsonl`` file, else from the suffix.

    A prompt's index (its position in the full benchmark) fixes its seed; ``categories`` and
    ``per_category`` keep every prompt's index, so a subset gets the full run's seeds.
    """

    source: str = Field(min_length=1, description="folder (hpdv2) or file (geneval/txt/csv), local or s3://")
    format: Literal["auto", "hpdv2", "geneval", "txt", "csv"] = "auto"
    column: str = "prompt"
    category_column: str = "category"
    categories: Optional[list[str]] = Field(None, description="keep only these categories (default: all)")
    per_category: Optional[int] = Field(None, ge=1, description="first N prompts of each category (default: all)")
    expected_per_category: Optional[int] = Field(None, ge=1, description="hpdv2: fail unless each file has N prompts")
    style_variants: Optional[StyleVariantsConfig] = None


# ------------------------------------------------------------------------------------- metrics

#: In-process metrics (tiny random models of each via ``checkpoint: builtin:tiny``).
MODEL_METRICS = ("hpsv2.1", "pickscore", "clip_score", "sgp_hps", "aesthetic_v2.5", "imagereward")
#: Metrics computed by an external program (their own heavy environments).
EXTERNAL_METRICS = ("geneval", "deqa")
KNOWN_METRICS = MODEL_METRICS + EXTERNAL_METRICS

#: Which optional fields each metric reads; any other field set is an error.
_METRIC_FIELDS: dict[str, set[str]] = {
    "hpsv2.1": {"checkpoint", "architecture"},
    "pickscore": {"checkpoint", "processor"},
    "clip_score": {"checkpoint", "processor"},
    "sgp_hps": {"checkpoint", "architecture", "positive_prefix", "negative_prefix", "temperature"},
    "aesthetic_v2.5": {"checkpoint", "encoder"},
    "imagereward": {"checkpoint", "processor", "vision_heads", "text_heads"},
    "geneval": {"command", "results", "timeout_s"},
    "deqa": {"command", "results", "timeout_s"},
}
_COMMON_FIELDS = {"name", "seed", "batch_size"}
#: In an external metric's ``results`` path: replaced by the evaluated model's name (one file per model).
MODEL_PLACEHOLDER = "{model}"
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


class MetricConfig(StrictModel):
    """One evaluation metric and where its weights come from.

    ``name`` (see ``docs/evaluation.md`` for each formula):

    - ``hpsv2.1``: open_clip ViT-H-14 + the HPS v2.1 state dict; cosine.
    - ``pickscore``: transformers CLIP-H (PickScore_v1); ``logit_scale.exp() * cos`` (the raw
      score, about 22-23 for FLUX, not the /20 used as a training reward).
    - ``clip_score``: transformers CLIP (default ``openai/clip-vit-large-patch14``);
      ``max(100 * cos, 0)``.
    - ``sgp_hps``: HPS with control-word prefixes, ``sigmoid(T * (HPS(x, pos + p) - HPS(x, neg + p)))``.
    - ``aesthetic_v2.5``: SigLIP so400m-patch14-384 vision tower + the v2.5 MLP head.
    - ``imagereward``: BLIP ViT-L + BERT with cross-attention + MLP, standardised.
    - ``geneval`` / ``deqa``: an external command, or result files written by one.

    ``checkpoint``: local path, ``s3://`` URL, hub id or ``builtin:tiny`` (a tiny random model of
    the architecture, for tests and the CPU demo). ``encoder``: the SigLIP folder/hub id for the
    aesthetic predictor. ``processor``: tokenizer/processor folder or hub id (ImageReward: the
    ``bert-base-uncased`` tokenizer; PickScore / CLIP: the CLIP processor).

    ``command``: argv list for external metrics; ``{images}``, ``{metadata}`` and ``{output}``
    are replaced by the image folder, its ``metadata.jsonl`` and the result file to write.
    ``results``: read existing result files instead of running anything, one per model: the
    path's ``{model}`` placeholder becomes the model's name (``s3://b/deqa/{model}.json``);
    required when more than one model is evaluated.
    """

    name: str
    checkpoint: Optional[str] = None
    architecture: Optional[str] = None
    encoder: Optional[str] = None
    processor: Optional[str] = None
    positive_prefix: Optional[str] = None
    negative_prefix: Optional[str] = None
    temperature: Optional[float] = Field(None, gt=0)
    vision_heads: Optional[int] = Field(None, ge=1)
    text_heads: Optional[int] = Field(None, ge=1)
    command: Optional[list[str]] = None
    results: Optional[str] = None
    timeout_s: Optional[float] = Field(None, gt=0)
    seed: int = 0
    batch_size: int = Field(16, ge=1)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        return one_of("metric", name, KNOWN_METRICS)

    @model_validator(mode="after")
    def _fields_fit_metric(self) -> "MetricConfig":
        allowed = _METRIC_FIELDS[self.name] | _COMMON_FIELDS
        stray = sorted(f for f in self.model_fields_set if f not in allowed)
        if stray:
            raise ValueError(f"metric {self.name!r} does not use {', '.join(stray)}: remove "
                             f"{'it' if len(stray) == 1 else 'them'} (it reads {', '.join(sorted(_METRIC_FIELDS[self.name]))})")
        if self.name in EXTERNAL_METRICS and (self.command is None) == (self.results is None):
            raise ValueError(f"metric {self.name!r} runs outside this environment: give exactly one of "
                             "`command` (argv with {images}/{metadata}/{output} placeholders) or `results` "
                             "(a result file it already wrote)")
        if self.command is not None and not self.command:
            raise ValueError(f"metric {self.name!r}: command must be a non-empty argv list")
        if self.results is not None and _PLACEHOLDER.search(self.results.replace(MODEL_PLACEHOLDER, "")):
            raise ValueError(f"metric {self.name!r}: results {self.results!r} has a placeholder other than "
                             f"{MODEL_PLACEHOLDER} (the model's name): use {MODEL_PLACEHOLDER} only")
        return self


class ModelSpec(StrictModel):
    """One model to evaluate: the pipeline's policy with another base and/or transformer.

    ``pretrained`` defaults to ``policy.pretrained``; ``transformer`` optionally replaces its
    transformer by a diffusers folder (local or ``s3://``), e.g. a tuned model.
    """

    pretrained: Optional[str] = None
    transformer: Optional[str] = None


class EvalReportConfig(StrictModel):
    """How results are batched, summarised and shown."""

    batch_size: int = Field(4, ge=1, description="images generated per forward pass")
    baseline: str = Field("base", description="model that deltas are taken against")
    bootstrap_samples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    bootstrap_seed: int = 0
    grid_prompts: int = Field(8, ge=0, description="prompts shown in the HTML image grid")
    thumbnail_size: int = Field(160, ge=16)


# --------------------------------------------------------------------------- human evaluation

class QualityStudyConfig(StrictModel):
    """The paper's main study: four dimensions rated Excellent / Good / Pass / Failed, per image."""

    models: Optional[list[str]] = Field(None, description="models to compare (default: every evaluated model)")
    categories: Optional[list[str]] = Field(None, description="default: every benchmark category (no style variants)")
    prompts_per_category: int = Field(125, ge=1)
    raters_per_prompt: int = Field(5, ge=1)
    num_raters: int = Field(5, ge=1, description="rater slots; each prompt goes to raters_per_prompt of them")

    @model_validator(mode="after")
    def _enough_raters(self) -> "QualityStudyConfig":
        _check_raters(self.raters_per_prompt, self.num_raters)
        return self


class HackingStudyConfig(StrictModel):
    """The 3-way hacking-rate study: three images per prompt, the rater marks the worst one."""

    models: list[str] = Field(min_length=3, max_length=3)
    num_prompts: int = Field(200, ge=1)
    categories: Optional[list[str]] = None
    raters_per_prompt: int = Field(5, ge=1)
    num_raters: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _enough_raters(self) -> "HackingStudyConfig":
        _check_raters(self.raters_per_prompt, self.num_raters)
        if len(set(self.models)) != 3:
            raise ValueError(f"the hacking study compares three different models, got {self.models}")
        return self


class StyleStudyConfig(StrictModel):
    """The paired style study: two images of a style-word prompt; which follows the style better."""

    models: list[str] = Field(min_length=2, max_length=2)
    num_prompts: int = Field(200, ge=1, description="prompts per style word")
    raters_per_prompt: int = Field(5, ge=1)
    num_raters: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _enough_raters(self) -> "StyleStudyConfig":
        _check_raters(self.raters_per_prompt, self.num_raters)
        if len(set(self.models)) != 2:
            raise ValueError(f"the style study compares two different models, got {self.models}")
        return self


def _check_raters(per_prompt: int, slots: int) -> None:
    if per_prompt > slots:
        raise ValueError(f"raters_per_prompt ({per_prompt}) cannot exceed num_raters ({slots}): each prompt "
                         "goes to distinct raters; raise num_raters")


class HumanEvalConfig(StrictModel):
    """What ``export_human_eval`` writes: blinded annotation pages per study and rater.

    Image ids and the per-prompt image order come from the operating system's randomness unless
    ``blinding_seed`` is set (tests); the sample and the rater assignment come from ``seed``.
    ``output_dir`` (local or ``s3://``) optionally receives a copy of the pages in
    ``<output_dir>/<export_id>/`` (never the key).
    """

    enabled: bool = True
    quality: Optional[QualityStudyConfig] = Field(default_factory=QualityStudyConfig)
    hacking: Optional[HackingStudyConfig] = None
    style: Optional[StyleStudyConfig] = None
    seed: int = 0
    blinding_seed: Optional[int] = None
    image_max_side: int = Field(768, ge=16, description="images are downscaled to this and embedded as JPEG")
    jpeg_quality: int = Field(90, ge=30, le=100)
    output_dir: Optional[str] = None
    title: str = "Image quality study"


class HumanEvalImportConfig(StrictModel):
    """Where ``import_human_eval`` reads the raters' files and the blinding key.

    ``annotations``: files (``.json`` or ``.csv`` exported by the page) or folders holding them,
    local or ``s3://``. ``key``: the key JSON file or its artifact version id; when left out, the
    ``human_eval_key`` artifact of the files' export is used.
    """

    annotations: list[str] = Field(min_length=1)
    key: Optional[str] = None
    allow_incomplete: bool = Field(False, description="accept pages whose rater left images unrated")
    bootstrap_samples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    bootstrap_seed: int = 0


class PromptAnalysisConfig(StrictModel):
    """The word-frequency report of a prompt set (paper, supplement S3)."""

    top_k: int = Field(40, ge=1)
    min_length: int = Field(3, ge=1, description="shorter words are ignored")
    stopwords: bool = Field(True, description="drop common English function words")
    control_words: list[str] = Field(
        default_factory=lambda: ["Natural-lighting", "Detail", "Detailed", "Real", "Realistic photo", "CG Render",
                                 "Concept art", "Painting", "Anime", "Flat", "Oil", "Cyberpunk", "Renaissance"],
        description="words/phrases whose frequency is always reported")


def check_results_per_model(label: str, results: Optional[str], models: Sequence[str]) -> None:
    """Refuse one external ``results`` file for several models (every model would get the same scores)."""
    if results is not None and len(models) > 1 and MODEL_PLACEHOLDER not in results:
        raise ValueError(f"{label}.results {results!r} is one file for {len(models)} models ({', '.join(models)}): "
                         f"every model would get the same scores; put {MODEL_PLACEHOLDER} in the path (e.g. "
                         f".../{label.rsplit('.', 1)[-1]}_{MODEL_PLACEHOLDER}.jsonl) and write one file per model")


def check_external_metrics(models: list[str], metrics: Mapping[str, MetricConfig], geneval_specs: bool) -> None:
    """Refuse external metrics that would give wrong scores for these models and prompts.

    ``results`` without ``{model}`` would give every model the scores in one file; GenEval
    without its per-prompt ``include`` specs counts every image as correct.
    """
    for key, metric in metrics.items():
        check_results_per_model(f"metrics.{key}", metric.results, models)
        if metric.name == "geneval" and not geneval_specs:
            raise ValueError(f"metrics.{key} (geneval) needs GenEval's per-prompt include/exclude specs, which only "
                             "a GenEval benchmark carries: set benchmark.format: geneval with GenEval's "
                             "prompts/evaluation_metadata.jsonl, or remove the metric")


def check_evaluation_plan(models: list[str], report: EvalReportConfig, human_eval: HumanEvalConfig,
                          style_prompts: bool, metrics: Optional[Mapping[str, MetricConfig]] = None,
                          geneval_specs: bool = False) -> None:
    """Refuse settings that are each valid but wrong together, before any image is generated.

    ``models``: the names the evaluation will have; ``style_prompts``: whether it has
    ``style/<word>`` prompts (``benchmark.style_variants``); ``metrics``: the configured metrics;
    ``geneval_specs``: whether the prompts carry GenEval's specs (``benchmark.format: geneval``).
    """
    check_external_metrics(models, metrics or {}, geneval_specs)
    if report.baseline not in models:
        raise ValueError(f"report.baseline {report.baseline!r} is not an evaluated model ({models}): no deltas "
                         "would be computed; set report.baseline to one of them")
    if not human_eval.enabled:
        return
    for name in ("quality", "hacking", "style"):
        study = getattr(human_eval, name)
        unknown = [m for m in ((study.models or []) if study is not None else []) if m not in models]
        if unknown:
            raise ValueError(f"human_eval.{name}.models {unknown} are not evaluated models ({models}): fix the "
                             "names or evaluate those models")
    if human_eval.style is not None and not style_prompts:
        raise ValueError("human_eval.style needs style-variant prompts (categories style/<word>): set "
                         "benchmark.style_variants in srpo_evaluation, or remove human_eval.style")


def check_metric_config(config: dict, setting: str) -> "MetricConfig":
    """``config`` as a :class:`MetricConfig`, or a ``ValueError`` whose first line names ``setting``."""
    from pydantic import ValidationError

    try:
        return MetricConfig(**config)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{setting}{'.' + where if where else ''}: {first['msg']} (got {config!r})") from None
