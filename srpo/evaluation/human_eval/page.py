"""The self-contained annotation page: one HTML file with its data, images, rubric and script.

Nothing is loaded from elsewhere. The page's data (prompts, blinded image ids, images as data
URIs) sits in a ``<script type="application/json">`` block written by
:func:`srpo.evaluation.html.json_for_script`, and the script puts prompt text into the page
with ``textContent`` only, so a prompt holding HTML or ``<script>`` shows as text.

What a rater does (also shown on the page under "Keys"):

- quality study: each image gets one of Excellent / Good / Pass / Failed on four dimensions
  (click, or keys ``1``-``4`` on the highlighted cell, which then moves on; ``j``/``k`` or
  arrow down/up move the highlight); the overall rating is derived by the rubric's rule;
- hacking / style study: pick one image (click, or ``1``/``2``/``3``); the page moves on;
- an edit evaluation's page shows the source image first (dashed, not rated), then the edits;
- ``n``/``p`` or arrow right/left: next / previous prompt; ``?``: show the keys;
- every change is saved in the browser (``localStorage``, per page), so closing the tab loses
  nothing; "Export JSON" / "Export CSV" download the ratings for ``import_human_eval``.
"""

from __future__ import annotations

from srpo.evaluation.html import esc, json_for_script
from srpo.evaluation.human_eval.rubric import DIMENSIONS, HACKING_QUESTION, RUBRIC, STYLE_QUESTION

PAGE_FORMAT = "srpo-human-eval-page/1"
ANNOTATION_FORMAT = "srpo-human-eval-annotations/1"

_CSS = """
*{box-sizing:border-box}body{margin:0;font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1d1d1d}
header{position:sticky;top:0;z-index:2;background:#fafafa;border-bottom:1px solid #ddd;padding:.5em 1em;
display:flex;gap:1em;align-items:center;flex-wrap:wrap}header h1{font-size:1.05em;margin:0}
#progress-text{font-variant-numeric:tabular-nums}progress{width:12em}
main{display:grid;grid-template-columns:minmax(0,1fr) 22em;gap:1em;padding:1em}
#rubric{font-size:.82em;border-left:1px solid #ddd;padding-left:1em;max-height:calc(100vh - 5em);overflow:auto;position:sticky;top:4em}
#rubric h3{font-size:1em;margin:.9em 0 .2em}#rubric ul{margin:.2em 0;padding-left:1.2em}
#prompt{font-size:1.1em;background:#f4f6fb;border:1px solid #d9deea;padding:.6em .8em;border-radius:6px;white-space:pre-wrap;overflow-wrap:anywhere}
#question{margin:.6em 0;color:#444}
#cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,520px));gap:1em;margin-top:.8em}
.card{border:2px solid #ddd;border-radius:8px;padding:.5em}.card.picked{border-color:#1a7f37;background:#f0fff4}
.card img{width:100%;height:auto;display:block;border-radius:4px}.card.source{background:#f4f6fb;border-style:dashed}.card .label{font-weight:600;margin:.3em 0}
.row{display:flex;align-items:center;gap:.3em;margin:.2em 0;padding:.15em .2em;border-radius:4px}
.row.cursor{outline:2px solid #3b6fd8;background:#eef3ff}.row .name{flex:1;font-size:.85em}
.level{border:1px solid #bbb;background:#fff;border-radius:4px;padding:.15em .45em;cursor:pointer;font-size:.8em}
.level.on[data-level=Excellent]{background:#1a7f37;color:#fff}.level.on[data-level=Good]{background:#5a9bd5;color:#fff}
.level.on[data-level=Pass]{background:#d9a300;color:#fff}.level.on[data-level=Failed]{background:#c62828;color:#fff}
.overall{font-size:.85em;margin-top:.3em}.choice{margin-top:.4em;width:100%;padding:.4em;cursor:pointer}
nav{display:flex;gap:.5em;margin-top:1em}button{font:inherit}
#help{display:none;background:#fffbe6;border:1px solid #e6d690;padding:.5em 1em;margin:.5em 1em}
#help.open{display:block}#status{color:#666;font-size:.85em}
"""

_JS = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("srpo-data").textContent);
  var DIMS = D.dimensions, LEVELS = D.levels, STORE = "srpo-human-eval:" + D.export_id + ":" + D.page_id;
  var S = load(), cur = {img: 0, dim: 0};
  function load() {
    try { var s = JSON.parse(localStorage.getItem(STORE)); if (s && s.v === 1) return s; } catch (e) {}
    return {v: 1, annotator: "", ratings: {}, choices: {}, pos: 0};
  }
  function save() {
    S.updated = new Date().toISOString();
    try { localStorage.setItem(STORE, JSON.stringify(S)); status("saved in this browser"); }
    catch (e) { status("could not save: " + e.message + " - export now"); }
  }
  function status(t) { document.getElementById("status").textContent = t; }
  function el(tag, cls, text) {
    var e = document.createElement(tag); if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text; return e;
  }
  function overall(r) {
    if (!r) return "";
    for (var i = 0; i < DIMS.length; i++) if (!r[DIMS[i].key]) return "";
    var v = DIMS.map(function (d) { return r[d.key]; });
    var ex = v.filter(function (x) { return x === "Excellent"; }).length;
    if (ex === v.length) return "Excellent";
    if (2 * ex >= v.length) return "Good";
    if (v.indexOf("Failed") < 0) return "Pass";
    return "Failed";
  }
  function done(t) {
    if (D.study !== "quality") return !!S.choices[t.id];
    return t.images.every(function (im) { return overall(S.ratings[im.id]) !== ""; });
  }
  function progress() {
    var n = D.tasks.filter(done).length;
    document.getElementById("progress-text").textContent = n + " / " + D.tasks.length + " done";
    var bar = document.getElementById("progress"); bar.max = D.tasks.length; bar.value = n;
    document.getElementById("position").textContent = "prompt " + (S.pos + 1) + " of " + D.tasks.length;
  }
  function rate(imgId, dim, level) {
    S.ratings[imgId] = S.ratings[imgId] || {}; S.ratings[imgId][dim] = level; save(); render();
  }
  function choose(taskId, imgId) {
    S.choices[taskId] = imgId; save();
    if (S.pos < D.tasks.length - 1) { S.pos += 1; cur = {img: 0, dim: 0}; save(); }
    render();
  }
  function go(delta) {
    var p = Math.max(0, Math.min(D.tasks.length - 1, S.pos + delta));
    if (p !== S.pos) { S.pos = p; cur = {img: 0, dim: 0}; save(); render(); }
  }
  function render() {
    var t = D.tasks[S.pos], cards = document.getElementById("cards");
    document.getElementById("prompt").textContent = t.prompt;
    cards.textContent = "";
    if (t.source) {  // an edit: the source image before the edits, not rated
      var src = el("div", "card source"); src.appendChild(el("div", "label", "Source (before the edit)"));
      var si = el("img"); si.src = t.source; si.alt = "Source image"; src.appendChild(si); cards.appendChild(src);
    }
    t.images.forEach(function (im, i) {
      var card = el("div", "card"); card.setAttribute("data-image", im.id);
      card.appendChild(el("div", "label", "Image " + String.fromCharCode(65 + i) + " (key " + (i + 1) + ")"));
      var img = el("img"); img.src = im.src; img.alt = "Image " + String.fromCharCode(65 + i); card.appendChild(img);
      if (D.study === "quality") {
        var r = S.ratings[im.id] || {};
        DIMS.forEach(function (d, j) {
          var row = el("div", "row" + (cur.img === i && cur.dim === j ? " cursor" : ""));
          row.appendChild(el("span", "name", d.label));
          LEVELS.forEach(function (lv) {
            var b = el("button", "level" + (r[d.key] === lv ? " on" : ""), lv);
            b.type = "button"; b.setAttribute("data-dim", d.key); b.setAttribute("data-level", lv);
            b.addEventListener("click", function () { cur = {img: i, dim: j}; rate(im.id, d.key, lv); });
            row.appendChild(b);
          });
          card.appendChild(row);
        });
        card.appendChild(el("div", "overall", "Overall (derived): " + (overall(r) || "-")));
      } else {
        if (S.choices[t.id] === im.id) card.className += " picked";
        var c = el("button", "choice", D.choice_label + " (" + (i + 1) + ")"); c.type = "button";
        c.addEventListener("click", function () { choose(t.id, im.id); });
        card.appendChild(c);
      }
      cards.appendChild(card);
    });
    progress();
  }
  function move(delta) {
    var t = D.tasks[S.pos], k = cur.img * DIMS.length + cur.dim + delta, last = t.images.length * DIMS.length - 1;
    if (k > last) { if (done(t)) { go(1); return; } k = last; }
    if (k < 0) k = 0;
    cur = {img: Math.floor(k / DIMS.length), dim: k % DIMS.length}; render();
  }
  function csvCell(v) { v = v === undefined || v === null ? "" : String(v); return '"' + v.replace(/"/g, '""') + '"'; }
  function download(name, text, type) {
    var a = document.createElement("a"); a.href = URL.createObjectURL(new Blob([text], {type: type}));
    a.download = name; document.body.appendChild(a); a.click(); a.remove(); status("exported " + name);
  }
  function records() {
    var out = [];
    D.tasks.forEach(function (t) {
      if (D.study === "quality") {
        t.images.forEach(function (im) {
          var r = S.ratings[im.id]; if (!r) return;
          var rec = {task: t.id, image: im.id};
          DIMS.forEach(function (d) { if (r[d.key]) rec[d.key] = r[d.key]; });
          var o = overall(r); if (o) rec.overall = o; out.push(rec);
        });
      } else if (S.choices[t.id]) { out.push({task: t.id, choice: S.choices[t.id]}); }
    });
    return out;
  }
  function header() {
    return {format: D.annotation_format, export_id: D.export_id, page_id: D.page_id, study: D.study,
            rater: D.rater, annotator: S.annotator, exported_at: new Date().toISOString(),
            tasks_done: D.tasks.filter(done).length, tasks_total: D.tasks.length};
  }
  function fileBase() { return D.study + "_" + D.rater + "_annotations"; }
  function exportJSON() { var h = header(); h.records = records(); download(fileBase() + ".json", JSON.stringify(h, null, 1), "application/json"); }
  function exportCSV() {
    var h = header(), cols = ["export_id", "page_id", "study", "rater", "annotator", "task", "image"]
      .concat(D.study === "quality" ? DIMS.map(function (d) { return d.key; }).concat(["overall"]) : ["choice"]);
    var lines = [cols.join(",")];
    records().forEach(function (r) {
      var row = Object.assign({}, h, r);
      lines.push(cols.map(function (c) { return csvCell(row[c]); }).join(","));
    });
    download(fileBase() + ".csv", lines.join("\n") + "\n", "text/csv");
  }
  document.getElementById("next").addEventListener("click", function () { go(1); });
  document.getElementById("prev").addEventListener("click", function () { go(-1); });
  document.getElementById("export-json").addEventListener("click", exportJSON);
  document.getElementById("export-csv").addEventListener("click", exportCSV);
  document.getElementById("help-button").addEventListener("click", function () {
    document.getElementById("help").classList.toggle("open"); });
  var who = document.getElementById("annotator"); who.value = S.annotator || "";
  who.addEventListener("input", function () { S.annotator = who.value.trim(); save(); });
  document.addEventListener("keydown", function (e) {
    if (e.target && (e.target.tagName === "INPUT" || e.target.tagName === "TEXTAREA")) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var k = e.key, t = D.tasks[S.pos];
    if (k === "?") { document.getElementById("help").classList.toggle("open"); e.preventDefault(); return; }
    if (k === "n" || k === "ArrowRight") { go(1); e.preventDefault(); return; }
    if (k === "p" || k === "ArrowLeft") { go(-1); e.preventDefault(); return; }
    if (D.study === "quality") {
      if (k >= "1" && k <= String(LEVELS.length) && k.length === 1) {
        rate(t.images[cur.img].id, DIMS[cur.dim].key, LEVELS[Number(k) - 1]); move(1); e.preventDefault();
      } else if (k === "j" || k === "ArrowDown") { move(1); e.preventDefault(); }
      else if (k === "k" || k === "ArrowUp") { move(-1); e.preventDefault(); }
    } else if (k.length === 1 && k >= "1" && k <= String(t.images.length)) {
      choose(t.id, t.images[Number(k) - 1].id); e.preventDefault();
    }
  });
  render();
  status(Object.keys(S.ratings).length || Object.keys(S.choices).length ? "restored from this browser" : "ready");
})();
"""


def rubric_html(study: str) -> str:
    """The rubric panel for ``study`` (our own text, escaped like everything else)."""
    if study == "hacking":
        return f"<h2>Question</h2><p>{esc(HACKING_QUESTION)}</p>"
    if study == "style":
        return f"<h2>Question</h2><p>{esc(STYLE_QUESTION)}</p>"
    parts = ["<h2>Rubric</h2>"]
    labels = dict(DIMENSIONS) | {"overall": "Overall quality"}
    for key, spec in RUBRIC.items():
        parts.append(f"<h3>{esc(labels[key])}</h3><p>{esc(spec['question'])}</p>")
        if "points" in spec:
            parts.append("<ul>" + "".join(f"<li>{esc(p)}</li>" for p in spec["points"]) + "</ul>")
        if "scoring" in spec:
            parts.append(f"<p><i>{esc(spec['scoring'])}</i></p>")
        if "levels" in spec:
            parts.append("<ul>" + "".join(f"<li><b>{esc(lv)}</b>: {esc(txt)}</li>"
                                          for lv, txt in spec["levels"].items()) + "</ul>")
    return "".join(parts)


def keys_html(study: str) -> str:
    if study == "quality":
        keys = [("1 2 3 4", "rate the highlighted cell Excellent / Good / Pass / Failed and move on"),
                ("j / k, arrow down / up", "move the highlight"), ]
    else:
        keys = [("1 2 3", "pick image A / B / C and go to the next prompt")]
    keys += [("n / p, arrow right / left", "next / previous prompt"), ("?", "show or hide these keys")]
    return "<b>Keys</b><ul>" + "".join(f"<li><kbd>{esc(k)}</kbd>: {esc(v)}</li>" for k, v in keys) + \
        "</ul><p>Your ratings are saved in this browser as you go. When you are done, click Export JSON " \
        "(or CSV) and send the file back.</p>"


def render_page(data: dict) -> str:
    """The complete page for one rater and study; ``data`` is the page's JSON (see ``export``)."""
    title = f"{data['title']} - {data['study']} - {data['rater']}"
    question = {"quality": "Rate every image on the four dimensions (rubric on the right).",
                "hacking": HACKING_QUESTION, "style": STYLE_QUESTION}[data["study"]]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{esc(data['title'])}</h1><span>study: <b>{esc(data['study'])}</b></span>"
        f"<span>rater: <b>{esc(data['rater'])}</b></span>"
        '<label>your name <input id="annotator" autocomplete="off" size="12"></label>'
        '<progress id="progress" value="0" max="1"></progress><span id="progress-text"></span>'
        '<span id="position"></span>'
        '<button id="export-json" type="button">Export JSON</button>'
        '<button id="export-csv" type="button">Export CSV</button>'
        '<button id="help-button" type="button">Keys (?)</button><span id="status"></span></header>'
        f'<div id="help">{keys_html(data["study"])}</div>'
        f'<main><section><div id="prompt"></div><p id="question">{esc(question)}</p><div id="cards"></div>'
        '<nav><button id="prev" type="button">&larr; Previous (p)</button>'
        '<button id="next" type="button">Next (n) &rarr;</button></nav></section>'
        f'<aside id="rubric">{rubric_html(data["study"])}</aside></main>'
        f'<script id="srpo-data" type="application/json">{json_for_script(data)}</script>'
        f"<script>{_JS}</script></body></html>")
