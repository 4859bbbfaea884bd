"""HTML, CSS and JavaScript of ``batchgen report``: one self-contained page, nothing external.

The page is streamed: :data:`HEAD` (with the summary), then any number of ``<script>P(cards,
thumbs)</script>`` chunks that append to the in-page arrays, then :data:`TAIL`, whose script
builds the filters and renders the gallery a page of cards at a time (so tens of thousands of rows
never become tens of thousands of DOM nodes or decoded images at once).

Card fields: k key, n row number, s status, m model, p prompt, c credits, t task id, e error,
w warning (a failed download), r / i index in the thumbnail array of the reference / result (-1:
none), rx / ix placeholder text, h relative link to the downloaded file.

A row with variants is one card with ``v``: its tasks, each with id (the variant id), s, c, t, i,
ix, h, e, w, p, and its axes st (style), a (aspect), cd (candidate); the card shows the reference
beside a strip of their results, and the style, aspect and candidate filters select tasks.
"""

from __future__ import annotations

PAGE_SIZE = 200
DEFAULT_THUMB = 128
"""Pixels of a thumbnail's long side (``report --thumb-size``)."""

HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data: file:;
 style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title>
<style>
:root {{ --bg:#f5f6f8; --fg:#1d2330; --mut:#687085; --card:#fff; --line:#dde1e8;
  --ok:#1b7f4b; --fail:#b3261e; --inv:#a15c00; --other:#4a5a86; }}
* {{ box-sizing:border-box; }}
body {{ margin:0; background:var(--bg); color:var(--fg);
  font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", sans-serif; }}
header {{ padding:16px 24px 8px; }}
h1 {{ font-size:20px; margin:0 0 4px; }}
h2 {{ font-size:14px; margin:0 0 6px; color:var(--mut); text-transform:uppercase;
  letter-spacing:.04em; }}
.sub {{ color:var(--mut); font-size:12px; }}
.tiles {{ display:flex; flex-wrap:wrap; gap:10px; padding:8px 24px; }}
.tile {{ background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:8px 14px; min-width:110px; }}
.tile b {{ display:block; font-size:22px; }}
.tile span {{ color:var(--mut); font-size:12px; }}
.panels {{ display:flex; flex-wrap:wrap; gap:10px; padding:8px 24px; }}
.panel {{ flex:1 1 auto; background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:10px 12px; overflow:auto; max-height:220px; }}
table {{ border-collapse:collapse; width:100%; font-size:12px; }}
th, td {{ text-align:left; padding:2px 6px; border-bottom:1px solid var(--line);
  white-space:nowrap; }}
td.num, th.num {{ text-align:right; }}
.bar {{ position:sticky; top:0; z-index:2; display:flex; flex-wrap:wrap; gap:10px;
  align-items:center; padding:10px 24px; background:var(--bg);
  border-bottom:1px solid var(--line); }}
.bar select, .bar input, .bar button {{ font:inherit; padding:4px 8px; border:1px solid var(--line);
  border-radius:6px; background:#fff; }}
.bar .count {{ color:var(--mut); margin-left:auto; }}
#grid {{ display:grid; grid-template-columns:repeat(auto-fill, minmax(290px, 1fr)); gap:12px;
  padding:12px 24px 24px; }}
.card {{ background:var(--card); border:1px solid var(--line); border-left:4px solid var(--other);
  border-radius:8px; padding:10px; overflow:hidden; }}
.card.succeeded {{ border-left-color:var(--ok); }}
.card.failed {{ border-left-color:var(--fail); }}
.card.invalid {{ border-left-color:var(--inv); }}
.pair {{ display:flex; gap:8px; }}
figure {{ margin:0; flex:1; text-align:center; }}
figure img, .ph {{ width:100%; aspect-ratio:1; object-fit:contain; background:#eef0f4;
  border-radius:6px; display:block; }}
.ph {{ display:flex; align-items:center; justify-content:center; padding:8px; color:var(--mut);
  font-size:11px; border:1px dashed var(--line); }}
figcaption {{ color:var(--mut); font-size:11px; margin-top:2px; }}
.key {{ font-weight:600; margin-top:8px; word-break:break-all; }}
.badges {{ display:flex; flex-wrap:wrap; gap:6px; margin:4px 0; font-size:12px; }}
.badge {{ padding:1px 7px; border-radius:10px; background:#eef0f4; }}
.badge.st {{ color:#fff; background:var(--other); }}
.succeeded .badge.st {{ background:var(--ok); }}
.failed .badge.st {{ background:var(--fail); }}
.invalid .badge.st {{ background:var(--inv); }}
.prompt {{ margin:4px 0; font-size:12px; max-height:4.2em; overflow:hidden; }}
.task {{ color:var(--mut); font:11px ui-monospace, "DejaVu Sans Mono", monospace;
  word-break:break-all; }}
.err {{ color:var(--fail); font-size:12px; margin-top:4px; word-break:break-word; }}
.warn {{ color:var(--inv); font-size:12px; margin-top:4px; word-break:break-word; }}
.card.group {{ grid-column:span 2; }}
.group .pair > figure:first-child {{ flex:0 0 110px; }}
.strip {{ display:flex; gap:6px; overflow-x:auto; flex:1; }}
.strip figure {{ flex:0 0 110px; }}
.strip figure.failed img, .strip figure.failed .ph {{ outline:2px solid var(--fail); }}
.strip figure.invalid .ph {{ outline:2px solid var(--inv); }}
.vars {{ margin:4px 0 0; padding:0; list-style:none; font-size:12px; }}
.pager {{ display:flex; gap:8px; align-items:center; justify-content:center; padding:0 0 32px; }}
.empty {{ padding:40px; text-align:center; color:var(--mut); grid-column:1/-1; }}
</style>
</head>
<body>
<header><h1>{title}</h1><div class="sub">{subtitle}</div></header>
{summary}
<div class="bar" role="toolbar">
 <label>Status <select id="f-status"><option value="">all</option></select></label>
 <label>Model <select id="f-model"><option value="">all</option></select></label>
 <label class="vf" hidden>Style <select id="f-style"><option value="">all</option></select></label>
 <label class="vf" hidden>Aspect <select id="f-aspect"><option value="">all</option></select></label>
 <label class="vf" hidden>Candidate <select id="f-candidate"><option value="">all</option>
 </select></label>
 <input id="f-text" type="search" placeholder="key, prompt, task id, error">
 <button id="prev" type="button">&larr; prev</button><span id="page"></span>
 <button id="next" type="button">next &rarr;</button>
 <span class="count" id="count"></span>
</div>
<main id="grid" aria-live="polite"></main>
<div class="pager"><button id="prev2" type="button">&larr; prev</button>
<button id="next2" type="button">next &rarr;</button></div>
<script>
"use strict";
const C = [], T = [];
function P(cards, thumbs) {{ for (const t of thumbs) T.push(t); for (const c of cards) C.push(c); }}
</script>
"""

TAIL = """<script>
"use strict";
(function () {
  const PAGE = %(page)d;
  const $ = (id) => document.getElementById(id);
  const state = { page: 0, list: C };
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null && text !== "") e.textContent = String(text);
    return e;
  }
  function fill(select, values) {
    const counts = new Map();
    for (const v of values) counts.set(v, (counts.get(v) || 0) + 1);
    for (const [v, n] of [...counts.entries()].sort()) {
      const o = el("option", "", (v || "(none)") + " (" + n + ")");
      o.value = v; select.appendChild(o);
    }
  }
  function figure(index, placeholder, caption, href) {
    const f = el("figure");
    if (index >= 0) {
      const img = el("img");
      img.decoding = "async"; img.alt = caption; img.src = T[index];
      if (href) { const a = el("a"); a.href = href; a.appendChild(img); f.appendChild(a); }
      else f.appendChild(img);
    } else {
      f.appendChild(el("div", "ph", placeholder || "none"));
    }
    f.appendChild(el("figcaption", "", caption));
    return f;
  }
  const RANK = ["failed", "invalid", "timed_out", "blocked", "submitted", "ready", "pending",
    "succeeded"];
  function worst(vs) {
    let best = "succeeded";
    for (const x of vs) if (RANK.indexOf(x.s) < RANK.indexOf(best)) best = x.s;
    return best;
  }
  function groupCard(c, vs) {
    const a = el("article", "card " + worst(vs) + " group");
    a.dataset.key = c.k;
    const pair = el("div", "pair");
    pair.appendChild(figure(c.r, c.rx, "reference"));
    const strip = el("div", "strip");
    for (const x of vs) {
      const f = figure(x.i, x.ix, x.id + " \u00b7 " + x.s, x.h);
      f.classList.add(x.s); f.dataset.variant = x.id; f.title = x.p || "";
      strip.appendChild(f);
    }
    pair.appendChild(strip);
    a.appendChild(pair);
    a.appendChild(el("div", "key", c.k));
    const b = el("div", "badges");
    if (c.m) b.appendChild(el("span", "badge", c.m));
    b.appendChild(el("span", "badge", vs.length + " of " + c.v.length + " variants"));
    b.appendChild(el("span", "badge", vs.reduce((n, x) => n + x.c, 0) + " credits"));
    b.appendChild(el("span", "badge", "row " + c.n));
    a.appendChild(b);
    const notes = el("ul", "vars");
    for (const x of vs) {
      if (x.e) notes.appendChild(el("li", "err", x.id + ": " + x.e));
      if (x.w) notes.appendChild(el("li", "warn", x.id + ": " + x.w));
    }
    if (notes.childElementCount) a.appendChild(notes);
    return a;
  }
  function card(item) {
    if (item.vs) return groupCard(item.c, item.vs);
    const c = item.c;
    const a = el("article", "card " + c.s);
    a.dataset.key = c.k;
    const pair = el("div", "pair");
    pair.appendChild(figure(c.r, c.rx, "reference"));
    pair.appendChild(figure(c.i, c.ix, "result", c.h));
    a.appendChild(pair);
    a.appendChild(el("div", "key", c.k || "(no key, row " + c.n + ")"));
    const b = el("div", "badges");
    b.appendChild(el("span", "badge st", c.s));
    if (c.m) b.appendChild(el("span", "badge", c.m));
    b.appendChild(el("span", "badge", c.c + " credits"));
    b.appendChild(el("span", "badge", "row " + c.n));
    a.appendChild(b);
    if (c.p) { const p = el("p", "prompt", c.p); p.title = c.p; a.appendChild(p); }
    if (c.t) a.appendChild(el("div", "task", c.t));
    if (c.e) a.appendChild(el("div", "err", c.e));
    if (c.w) a.appendChild(el("div", "warn", c.w));
    return a;
  }
  const has = (q, values) => !q || values.some((v) => v && String(v).toLowerCase().includes(q));
  function apply() {
    const s = $("f-status").value, m = $("f-model").value;
    const st = $("f-style").value, asp = $("f-aspect").value, cd = $("f-candidate").value;
    const q = $("f-text").value.trim().toLowerCase();
    const list = [];
    for (const c of C) {
      if (m && (c.m || "") !== m) continue;
      if (c.v) {
        const vs = c.v.filter((x) => (!s || x.s === s) && (!st || x.st === st) &&
          (!asp || x.a === asp) && (!cd || x.cd === cd) && has(q, [c.k, x.id, x.p, x.t, x.e]));
        if (vs.length) list.push({ c: c, vs: vs });
      } else if (!st && !asp && !cd && (!s || c.s === s) && has(q, [c.k, c.p, c.t, c.e])) {
        list.push({ c: c, vs: null });
      }
    }
    state.list = list;
    state.page = 0; render();
  }
  function described() {
    const parts = [];
    if ($("f-status").value) parts.push("status " + $("f-status").value);
    if ($("f-model").value) parts.push("model " + $("f-model").value);
    for (const f of ["style", "aspect", "candidate"]) {
      if ($("f-" + f).value) parts.push(f + " " + $("f-" + f).value);
    }
    if ($("f-text").value.trim()) parts.push("\u201c" + $("f-text").value.trim() + "\u201d");
    return parts.length ? "the filters: " + parts.join(", ") : "the filters";
  }
  function remember() {
    const h = new URLSearchParams();
    if ($("f-status").value) h.set("status", $("f-status").value);
    if ($("f-model").value) h.set("model", $("f-model").value);
    for (const f of ["style", "aspect", "candidate"]) {
      if ($("f-" + f).value) h.set(f, $("f-" + f).value);
    }
    if ($("f-text").value.trim()) h.set("q", $("f-text").value.trim());
    if (state.page) h.set("page", String(state.page + 1));
    const text = h.toString();
    try {
      history.replaceState(null, "", text ? "#" + text : location.pathname);
    } catch (e) { /* some browsers refuse it on file: pages */ }
  }
  function render() {
    const n = state.list.length, pages = Math.max(1, Math.ceil(n / PAGE));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    const start = state.page * PAGE, part = state.list.slice(start, start + PAGE);
    const grid = $("grid");
    grid.replaceChildren(...part.map(card));
    if (!part.length) grid.appendChild(el("div", "empty", "No rows match " + described() + "."));
    $("page").textContent = "page " + (state.page + 1) + " of " + pages;
    const all = n !== C.length ? " (" + C.length + " in all)" : "";
    $("count").textContent = n
      ? "rows " + (start + 1) + "\u2013" + (start + part.length) + " of " + n + all
      : "0 of " + C.length + " rows";
    for (const id of ["prev", "prev2"]) $(id).disabled = state.page === 0;
    for (const id of ["next", "next2"]) $(id).disabled = state.page >= pages - 1;
    remember();
  }
  function go(delta) {
    state.page += delta; render(); window.scrollTo(0, $("grid").offsetTop - 60);
  }
  const tasks = C.flatMap((c) => c.v || []);
  fill($("f-status"), C.flatMap((c) => (c.v ? c.v.map((x) => x.s) : [c.s])));
  fill($("f-model"), C.map((c) => c.m || ""));
  fill($("f-style"), tasks.map((x) => x.st).filter((v) => v));
  fill($("f-aspect"), tasks.map((x) => x.a).filter((v) => v));
  fill($("f-candidate"), tasks.map((x) => x.cd).filter((v) => v));
  if (tasks.length) for (const l of document.querySelectorAll(".vf")) l.hidden = false;
  for (const id of ["f-status", "f-model", "f-style", "f-aspect", "f-candidate"]) {
    $(id).addEventListener("change", apply);
  }
  let timer = 0;
  $("f-text").addEventListener("input", () => {
    clearTimeout(timer); timer = setTimeout(apply, 200);
  });
  for (const id of ["prev", "prev2"]) $(id).addEventListener("click", () => go(-1));
  for (const id of ["next", "next2"]) $(id).addEventListener("click", () => go(1));
  // Filters and page can be given in the address: report.html#status=failed&model=x&q=mug&page=2
  const h = new URLSearchParams(location.hash.slice(1));
  // A value no row has (#status=failed when nothing failed) is kept as a filter with no match:
  // a select would otherwise fall back to "all" and show every card.
  for (const [name, id] of [["status", "f-status"], ["model", "f-model"], ["style", "f-style"],
    ["aspect", "f-aspect"], ["candidate", "f-candidate"], ["q", "f-text"]]) {
    if (!h.has(name)) continue;
    const input = $(id), value = h.get(name);
    if (input.tagName === "SELECT" && ![...input.options].some((o) => o.value === value)) {
      const o = el("option", "", (value || "(none)") + " (0)");
      o.value = value; input.appendChild(o);
    }
    input.value = value;
  }
  apply();
  state.page = Math.max(0, (parseInt(h.get("page") || "1", 10) || 1) - 1);
  render();
  document.body.dataset.ready = "1";
})();
</script>
</body>
</html>
"""
