"""Each metric on a tiny random model of its architecture, saved here and loaded through the real code.

Every score is compared with an independent computation from the saved weights (open_clip /
transformers forward passes, or plain tensor maths), so a wrong loader, key map, scale or
formula fails.
"""

from __future__ import annotations

import json
import math
import re
import sys
from functools import partial

import open_clip
import pytest
import torch
import torch.nn.functional as F

from srpo.evaluation.config import MetricConfig
from srpo.evaluation.metrics import load_metric
from srpo.rewards.base import CLIP_MEAN, CLIP_STD, preprocess_for_clip
from srpo.rewards.open_clip_reward import TINY_ARCHITECTURE, create_open_clip_model

PROMPTS = ["a red cat on a blue sky", "concept art of a city <b>at night</b>", "a photo of a dog"]


def images(n: int = 3, h: int = 48, w: int = 40) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(7))


@pytest.fixture
def hps_checkpoint(tmp_path):
    """An HPS-style file ({"state_dict": ...}) of a tiny open_clip model, and the model."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = create_open_clip_model(TINY_ARCHITECTURE)
    path = tmp_path / "HPS_tiny.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path, model


def _open_clip_cos(model, imgs, prompts):
    pixels = preprocess_for_clip(imgs, 32, CLIP_MEAN, CLIP_STD)
    with torch.no_grad():
        img = F.normalize(model.encode_image(pixels), dim=-1)
        txt = F.normalize(model.encode_text(open_clip.get_tokenizer(TINY_ARCHITECTURE)(prompts)), dim=-1)
    return (img * txt).sum(-1)


def test_hps_is_the_plain_cosine(hps_checkpoint):
    path, model = hps_checkpoint
    metric = load_metric(MetricConfig(name="hpsv2.1", checkpoint=str(path), architecture=TINY_ARCHITECTURE))
    torch.testing.assert_close(metric.score_batched(images(), PROMPTS), _open_clip_cos(model, images(), PROMPTS))


def test_sgp_hps_is_a_sigmoid_of_the_scaled_prefix_difference(hps_checkpoint):
    path, model = hps_checkpoint
    metric = load_metric(MetricConfig(name="sgp_hps", checkpoint=str(path), architecture=TINY_ARCHITECTURE))
    pos = _open_clip_cos(model, images(), [f"Realistic photo. {p}" for p in PROMPTS])
    neg = _open_clip_cos(model, images(), [f"CG Render. {p}" for p in PROMPTS])
    got = metric.score_batched(images(), PROMPTS)
    torch.testing.assert_close(got, torch.sigmoid(100.0 * (pos - neg)))
    assert ((got > 0) & (got < 1)).all()
    other = load_metric(MetricConfig(name="sgp_hps", checkpoint=str(path), architecture=TINY_ARCHITECTURE,
                                     positive_prefix="Painting", negative_prefix="Anime", temperature=10.0))
    want = torch.sigmoid(10.0 * (_open_clip_cos(model, images(), [f"Painting. {p}" for p in PROMPTS])
                                 - _open_clip_cos(model, images(), [f"Anime. {p}" for p in PROMPTS])))
    torch.testing.assert_close(other.score_batched(images(), PROMPTS), want)


@pytest.fixture
def tiny_hf_clip(tmp_path):
    from transformers import CLIPModel

    from srpo.models.tokenizers import clip_tokenizer
    from srpo.rewards.hf_clip_reward import tiny_clip_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = CLIPModel(tiny_clip_config())
    with torch.no_grad():
        model.logit_scale.fill_(math.log(50.0))
    folder = tmp_path / "clip"
    model.save_pretrained(folder)
    clip_tokenizer(77).save_pretrained(folder)
    return folder, model.eval()


def _hf_cos(model, imgs, prompts):
    from srpo.models.tokenizers import clip_tokenizer

    tok = clip_tokenizer(77)(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        img = model.get_image_features(pixel_values=preprocess_for_clip(imgs, 32))
        txt = model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
    img = img if isinstance(img, torch.Tensor) else img.pooler_output
    txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
    return (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(-1)


def test_pickscore_is_the_raw_logit_scaled_cosine(tiny_hf_clip):
    folder, model = tiny_hf_clip
    metric = load_metric(MetricConfig(name="pickscore", checkpoint=str(folder)))
    torch.testing.assert_close(metric.score_batched(images(), PROMPTS), 50.0 * _hf_cos(model, images(), PROMPTS))


def test_clip_score_is_100_cos_clipped_at_zero(tiny_hf_clip):
    folder, model = tiny_hf_clip
    metric = load_metric(MetricConfig(name="clip_score", checkpoint=str(folder)))
    torch.testing.assert_close(metric.score_batched(images(), PROMPTS),
                               (100.0 * _hf_cos(model, images(), PROMPTS)).clamp(min=0))


# ------------------------------------------------------------------------- aesthetic v2.5

@pytest.fixture
def tiny_aesthetic(tmp_path):
    """A tiny SigLIP (save_pretrained) and a head file in the published key layout."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(11)
    vision = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                                  num_attention_heads=2, image_size=28, patch_size=7)).eval()
    vision.save_pretrained(tmp_path / "siglip")
    widths = [32, 1024, 128, 64, 16, 1]
    head = {}
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        head[f"scoring_head.{2 * i}.weight"] = torch.randn(b, a) / a ** 0.5
        head[f"scoring_head.{2 * i}.bias"] = torch.randn(b) * 0.1
    torch.save(head, tmp_path / "aesthetic_predictor_v2_5.pth")
    return tmp_path / "siglip", tmp_path / "aesthetic_predictor_v2_5.pth", vision, head


def test_aesthetic_predictor_v25_loads_the_head_layout(tiny_aesthetic):
    encoder, head_path, vision, head = tiny_aesthetic
    metric = load_metric(MetricConfig(name="aesthetic_v2.5", checkpoint=str(head_path), encoder=str(encoder)))
    imgs = images(h=28, w=28)  # no resize: the reference sees the same pixels
    with torch.no_grad():
        pooled = vision(pixel_values=(imgs - 0.5) / 0.5).pooler_output
        x = F.normalize(pooled, dim=-1)
        for i in range(5):  # Linear layers only: the head has no activations
            x = F.linear(x, head[f"scoring_head.{2 * i}.weight"], head[f"scoring_head.{2 * i}.bias"])
    torch.testing.assert_close(metric.score_batched(imgs, PROMPTS), x.squeeze(-1))
    assert metric.score_batched(images(h=64, w=96), PROMPTS).shape == (3,)  # resized to 28x28 inside


def test_aesthetic_head_that_does_not_fit_is_refused(tiny_aesthetic, tmp_path):
    encoder, _, _, head = tiny_aesthetic
    bad = dict(head)
    bad.pop("scoring_head.8.bias")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing \['scoring_head.8.bias'\]"):
        load_metric(MetricConfig(name="aesthetic_v2.5", checkpoint=str(tmp_path / "bad.pth"), encoder=str(encoder)))
    with pytest.raises(ValueError, match="needs the head's weights"):
        load_metric(MetricConfig(name="aesthetic_v2.5"))


# ----------------------------------------------------------------------------- ImageReward

def _tiny_bert_vocab_folder(tmp_path):
    from srpo.evaluation.metrics.imagereward import TINY_WORDS

    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS]) + "\n")
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    return folder, 5 + len(TINY_WORDS)


def _reference_text_encoder(sd, ids, mask, image_embeds, heads, layers):
    """BLIP's med.py BERT (bidirectional self-attention + cross-attention), in plain tensor maths."""

    def lin(x, name):
        return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])

    def ln(x, name):
        return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-12)

    def attention(x, ctx, name, key_mask):
        b, lq, d = x.shape
        q = lin(x, f"{name}.self.query").view(b, lq, heads, -1).transpose(1, 2)
        k = lin(ctx, f"{name}.self.key").view(b, ctx.shape[1], heads, -1).transpose(1, 2)
        v = lin(ctx, f"{name}.self.value").view(b, ctx.shape[1], heads, -1).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + (1.0 - key_mask[:, None, None, :]) * -1e9
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, lq, d)
        return ln(lin(out, f"{name}.output.dense") + x, f"{name}.output.LayerNorm")

    p = "blip.text_encoder"
    pos = torch.arange(ids.shape[1])
    x = ln(sd[f"{p}.embeddings.word_embeddings.weight"][ids] + sd[f"{p}.embeddings.position_embeddings.weight"][pos],
           f"{p}.embeddings.LayerNorm")
    ones = torch.ones(image_embeds.shape[:2])
    for i in range(layers):
        l = f"{p}.encoder.layer.{i}"
        x = attention(x, x, f"{l}.attention", mask.float())
        x = attention(x, image_embeds, f"{l}.crossattention", ones)
        h = F.gelu(lin(x, f"{l}.intermediate.dense"))
        x = ln(lin(h, f"{l}.output.dense") + x, f"{l}.output.LayerNorm")
    return x


@pytest.fixture
def imagereward_checkpoint(tmp_path):
    """ImageReward.pt in the original key layout: timm's ViT (BLIP's visual encoder has timm's names),
    BERT weights under BLIP's med.py names, the MLP, plus the unused vision_proj/text_proj/position_ids."""
    import timm.models.vision_transformer as vit

    torch.manual_seed(21)
    visual = vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, mlp_ratio=2.0,
                                   qkv_bias=True, num_classes=0, global_pool="token",
                                   norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)).eval()
    sd = {f"blip.visual_encoder.{k}": v for k, v in visual.state_dict().items()}
    tok_folder, vocab = _tiny_bert_vocab_folder(tmp_path)
    vocab += 2  # BLIP adds [DEC] and [ENC]
    d, dv, inter, layers = 32, 48, 64, 2
    p = "blip.text_encoder"

    def put(name, *shape):
        sd[name] = torch.randn(*shape) * (0.2 if len(shape) > 1 else 0.05)

    put(f"{p}.embeddings.word_embeddings.weight", vocab, d)
    put(f"{p}.embeddings.position_embeddings.weight", 40, d)
    sd[f"{p}.embeddings.position_ids"] = torch.arange(40)[None]
    for ln_name in [f"{p}.embeddings.LayerNorm"]:
        sd[f"{ln_name}.weight"], sd[f"{ln_name}.bias"] = 1 + 0.1 * torch.randn(d), 0.1 * torch.randn(d)
    for i in range(layers):
        l = f"{p}.encoder.layer.{i}"
        for att, ctx in (("attention", d), ("crossattention", dv)):
            for proj, width in (("query", d), ("key", ctx), ("value", ctx)):
                put(f"{l}.{att}.self.{proj}.weight", d, width)
                put(f"{l}.{att}.self.{proj}.bias", d)
            put(f"{l}.{att}.output.dense.weight", d, d)
            put(f"{l}.{att}.output.dense.bias", d)
            sd[f"{l}.{att}.output.LayerNorm.weight"] = 1 + 0.1 * torch.randn(d)
            sd[f"{l}.{att}.output.LayerNorm.bias"] = 0.1 * torch.randn(d)
        put(f"{l}.intermediate.dense.weight", inter, d)
        put(f"{l}.intermediate.dense.bias", inter)
        put(f"{l}.output.dense.weight", d, inter)
        put(f"{l}.output.dense.bias", d)
        sd[f"{l}.output.LayerNorm.weight"] = 1 + 0.1 * torch.randn(d)
        sd[f"{l}.output.LayerNorm.bias"] = 0.1 * torch.randn(d)
    for i, (a, b) in zip((0, 2, 4, 6, 7), ((d, 1024), (1024, 128), (128, 64), (64, 16), (16, 1))):
        sd[f"mlp.layers.{i}.weight"], sd[f"mlp.layers.{i}.bias"] = torch.randn(b, a) / a ** 0.5, torch.randn(b) * 0.1
    sd["blip.vision_proj.weight"], sd["blip.vision_proj.bias"] = torch.randn(16, dv), torch.zeros(16)
    sd["blip.text_proj.weight"], sd["blip.text_proj.bias"] = torch.randn(16, d), torch.zeros(16)
    path = tmp_path / "ImageReward.pt"
    torch.save(sd, path)
    return path, tok_folder, visual, sd


def test_imagereward_checkpoint_maps_onto_transformers_blip(imagereward_checkpoint):
    from transformers import BertTokenizer

    path, tok_folder, visual, sd = imagereward_checkpoint
    metric = load_metric(MetricConfig(name="imagereward", checkpoint=str(path), processor=str(tok_folder),
                                      vision_heads=4, text_heads=2))
    imgs = images()
    tok = BertTokenizer.from_pretrained(str(tok_folder))
    batch = tok(PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    with torch.no_grad():
        image_embeds = visual.forward_features(preprocess_for_clip(imgs, 32))  # [B, 1+16, 48], final norm applied
        hidden = _reference_text_encoder(sd, batch["input_ids"], batch["attention_mask"], image_embeds, 2, 2)
        x = hidden[:, 0]
        for i in (0, 2, 4, 6, 7):
            x = F.linear(x, sd[f"mlp.layers.{i}.weight"], sd[f"mlp.layers.{i}.bias"])
        want = (x.squeeze(-1) - 0.16717362830052426) / 1.0333394966054072
    got = metric.score_batched(imgs, PROMPTS)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert got.std() > 1e-3  # the prompts and images matter: not a constant
    # every checkpoint weight the score uses landed in the module
    for ours, theirs in (("vision.encoder.layers.1.self_attn.qkv.weight", "blip.visual_encoder.blocks.1.attn.qkv.weight"),
                         ("vision.post_layernorm.bias", "blip.visual_encoder.norm.bias"),
                         ("text.encoder.layer.1.crossattention.self.key.weight",
                          "blip.text_encoder.encoder.layer.1.crossattention.self.key.weight"),
                         ("mlp.layers.7.weight", "mlp.layers.7.weight")):
        assert torch.equal(metric.model.state_dict()[ours], sd[theirs])


def test_imagereward_refuses_foreign_keys_and_missing_weights(imagereward_checkpoint, tmp_path):
    path, tok_folder, _, sd = imagereward_checkpoint
    extra = dict(sd, **{"blip.something_else.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=re.escape("not part of ImageReward: ['blip.something_else.weight']")):
        load_metric(MetricConfig(name="imagereward", checkpoint=str(tmp_path / "extra.pt"), processor=str(tok_folder),
                                 vision_heads=4, text_heads=2))
    missing = {k: v for k, v in sd.items() if k != "blip.text_encoder.encoder.layer.0.output.dense.bias"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"missing \['text.encoder.layer.0.output.dense.bias'\]"):
        load_metric(MetricConfig(name="imagereward", checkpoint=str(tmp_path / "missing.pt"),
                                 processor=str(tok_folder), vision_heads=4, text_heads=2))


@pytest.mark.parametrize("name", ["aesthetic_v2.5", "imagereward"])
def test_builtin_tiny_models_are_built_once_and_load_through_the_same_code(name):
    metric = load_metric(MetricConfig(name=name, checkpoint="builtin:tiny"))
    scores = metric.score_batched(images(), PROMPTS)
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    from srpo.io import cache_dir

    built = {p: p.stat().st_mtime_ns for p in (cache_dir() / "builtin").rglob("*") if p.is_file()}
    assert built  # the tiny model was written to the cache
    again = load_metric(MetricConfig(name=name, checkpoint="builtin:tiny"))  # the cached folder this time
    assert {p: p.stat().st_mtime_ns for p in built} == built  # nothing rebuilt or rewritten
    torch.testing.assert_close(again.score_batched(images(), PROMPTS), scores)


def test_metric_config_rejects_fields_the_metric_does_not_use():
    with pytest.raises(ValueError, match="does not use encoder"):
        MetricConfig(name="hpsv2.1", checkpoint="x.pt", encoder="google/siglip")
    with pytest.raises(ValueError, match="unknown metric 'fid'"):
        MetricConfig(name="fid")
    with pytest.raises(ValueError, match="exactly one of `command`"):
        MetricConfig(name="deqa")


# ------------------------------------------------------------------------- GenEval / DeQA

FAKE_DEQA = """
import json, sys, pathlib
images, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
meta = [json.loads(l) for l in (images / "metadata.jsonl").read_text().splitlines()]
json.dump({m["file_name"]: 1.0 + m["index"] + len(m["prompt"]) / 100 for m in meta}, out.open("w"))
"""

FAKE_GENEVAL = """
import json, sys, pathlib
root, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with out.open("w") as f:
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        meta = json.load((d / "metadata.jsonl").open())  # as GenEval's evaluate_images.py reads it
        sample = d / "samples" / "0000.png"
        assert sample.is_file()
        # GenEval's evaluate(): every include clause must be met; here "met" = the class is in the prompt
        correct = all(req["class"] in meta["prompt"] for req in meta.get("include", []))
        f.write(json.dumps({"filename": str(sample), "tag": meta["tag"], "correct": correct}) + "\\n")
"""


def test_deqa_runs_a_command_and_reads_its_scores(tmp_path):
    script = tmp_path / "deqa.py"
    script.write_text(FAKE_DEQA)
    metric = load_metric(MetricConfig(name="deqa", command=[sys.executable, str(script), "{images}", "{output}"]))
    got = metric.score_batched(images(), PROMPTS)
    torch.testing.assert_close(got, torch.tensor([1.0 + i + len(p) / 100 for i, p in enumerate(PROMPTS)]))


def test_deqa_reads_an_existing_result_file_in_csv(tmp_path):
    (tmp_path / "deqa.csv").write_text("file_name,score\n/abs/path/00000.png,4.5\n00001.png,3.25\n00002.png,1\n")
    metric = load_metric(MetricConfig(name="deqa", results=str(tmp_path / "deqa.csv")))
    torch.testing.assert_close(metric.score_batched(images(), PROMPTS), torch.tensor([4.5, 3.25, 1.0]))
    (tmp_path / "short.json").write_text('{"00000.png": 1.0}')
    with pytest.raises(ValueError, match="no score for 2 of 3 images"):
        load_metric(MetricConfig(name="deqa", results=str(tmp_path / "short.json"))).score_batched(images(), PROMPTS)


GENEVAL_RECORDS = [
    {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": PROMPTS[0]},
    {"tag": "two_object", "include": [{"class": "city", "count": 1}, {"class": "car", "count": 1}],
     "prompt": PROMPTS[1]},
    {"tag": "counting", "include": [{"class": "dog", "count": 1}], "exclude": [{"class": "dog", "count": 2}],
     "prompt": PROMPTS[2]},
]


def saved_images(folder, n=3):
    from srpo.evaluation.images import save_png

    return [save_png(img, folder / f"{i}.png") for i, img in enumerate(images(n))]


def test_geneval_writes_each_prompts_record_into_its_layout(tmp_path):
    """GenEval scores ``include``/``exclude`` clauses read from ``<index:05d>/metadata.jsonl``: the whole record."""
    script = tmp_path / "geneval.py"
    script.write_text(FAKE_GENEVAL)
    metric = load_metric(MetricConfig(name="geneval", command=[sys.executable, str(script), "{images}", "{output}"]))
    got = metric.score_files(saved_images(tmp_path), PROMPTS, [r["tag"] for r in GENEVAL_RECORDS],
                             indices=[4, 9, 17], records=GENEVAL_RECORDS, model="base")
    assert got == [1.0, 0.0, 1.0]  # "car" is not in the second prompt

    folder = tmp_path / "layout"
    items = [{"path": path, "prompt": r["prompt"], "category": r["tag"], "index": i, "record": r}
             for path, r, i in zip(saved_images(tmp_path), GENEVAL_RECORDS, [4, 9, 17])]
    names = metric.write_layout(folder, items)
    assert names == ["00004/samples/0000.png", "00009/samples/0000.png", "00017/samples/0000.png"]
    for i, record in zip([4, 9, 17], GENEVAL_RECORDS):
        assert json.load((folder / f"{i:05d}" / "metadata.jsonl").open()) == record
        assert (folder / f"{i:05d}" / "samples" / "0000.png").is_file()


def test_geneval_refuses_prompts_without_include_specs(tmp_path):
    """Without include clauses GenEval's evaluate() marks every image correct: a score of 1.0 for any model."""
    metric = load_metric(MetricConfig(name="geneval", command=["true"]))
    with pytest.raises(ValueError, match=r"3 of 3 prompts carry no GenEval include specs.*benchmark.format: geneval"):
        metric.score_files(saved_images(tmp_path), PROMPTS, ["all"] * 3)
    bare = [{k: v for k, v in r.items() if k != "include"} for r in GENEVAL_RECORDS]
    with pytest.raises(ValueError, match="carry no GenEval include specs"):
        metric.score_files(saved_images(tmp_path), PROMPTS, records=bare)


def test_results_name_one_file_per_model(tmp_path):
    """One ``results`` file read for every model gave every model the same scores (a delta of exactly 0)."""
    from srpo.evaluation.metrics.external import ExternalMetric

    for model, scores in (("FLUX", [3.1, 4.2, 2.0]), ("SRPO", [3.9, 4.4, 2.5])):
        (tmp_path / f"deqa_{model}.json").write_text(json.dumps({f"{i:05d}.png": s for i, s in
                                                                 zip((4, 9, 17), scores)}))
    metric = load_metric(MetricConfig(name="deqa", results=str(tmp_path / "deqa_{model}.json")))
    got = {m: metric.score_files(saved_images(tmp_path), PROMPTS, indices=[4, 9, 17], model=m)
           for m in ("FLUX", "SRPO")}
    assert got == {"FLUX": [3.1, 4.2, 2.0], "SRPO": [3.9, 4.4, 2.5]}
    with pytest.raises(ValueError, match=r"one file per model \(\{model\}\), but no model name"):
        metric.score_files(saved_images(tmp_path), PROMPTS, indices=[4, 9, 17])
    one_file = ExternalMetric("deqa", results=str(tmp_path / "deqa_FLUX.json"))
    one_file.check_models(["FLUX"])
    with pytest.raises(ValueError, match=r"one file for 2 models \(FLUX, SRPO\).*put \{model\} in the path"):
        one_file.check_models(["FLUX", "SRPO"])
    assert one_file.score_files(saved_images(tmp_path), PROMPTS, indices=[4, 9, 17], model="FLUX") == [3.1, 4.2, 2.0]
    with pytest.raises(ValueError, match="every model would get the same scores"):
        one_file.score_files(saved_images(tmp_path), PROMPTS, indices=[4, 9, 17], model="SRPO")
    with pytest.raises(ValueError, match=r"has a placeholder other than \{model\}"):
        MetricConfig(name="deqa", results="deqa_{name}.json")


def test_a_result_file_must_score_exactly_the_images_written(tmp_path):
    (tmp_path / "deqa.json").write_text(json.dumps({"00004.png": 1.0, "00009.png": 2.0, "00017.png": 3.0,
                                                    "00021.png": 4.0}))
    metric = load_metric(MetricConfig(name="deqa", results=str(tmp_path / "deqa.json")))
    with pytest.raises(ValueError, match=r"score 1 images that this evaluation did not write \(e.g. \['00021.png'\]\)"):
        metric.score_files(saved_images(tmp_path), PROMPTS, indices=[4, 9, 17])
    with pytest.raises(ValueError, match=r"no score for 3 of 3 images"):  # named by position, not benchmark index
        metric.score_files(saved_images(tmp_path), PROMPTS, indices=[0, 1, 2])
    (tmp_path / "twice.csv").write_text("file_name,score\na/00004.png,1\nb/00004.png,2\n")
    with pytest.raises(ValueError, match="scores '00004.png' twice"):
        load_metric(MetricConfig(name="deqa", results=str(tmp_path / "twice.csv"))).score_files(
            saved_images(tmp_path, 1), PROMPTS[:1], indices=[4])


def test_a_failing_command_shows_its_output(tmp_path):
    metric = load_metric(MetricConfig(name="deqa", command=[sys.executable, "-c", "import sys; print('CUDA missing'); "
                                                                                "sys.exit(3)"]))
    with pytest.raises(RuntimeError, match=r"(?s)exited with status 3.*CUDA missing"):
        metric.score_batched(images(), PROMPTS)
