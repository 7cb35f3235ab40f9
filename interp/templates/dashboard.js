// fastsae dashboard: renders the embedded JSON document (interp/dashboard_data.py) lazily, no framework.
(() => {
  "use strict";
  const D = JSON.parse(document.getElementById("fs-data").textContent);
  const M = D.meta, F = D.features, V = D.vocab, VID = D.vocab_ids;
  const app = document.getElementById("app"), tip = document.getElementById("tip");
  const N = F.id.length;
  const TYPES = Object.keys(M.token_types).map(Number).sort((a, b) => a - b);
  const TNAME = c => M.token_types[c] || "?";
  const LABEL = { template: "header" };
  const tlabel = c => LABEL[TNAME(c)] || TNAME(c);
  const tcolor = c => `var(--${["special", "template", "system", "user", "assistant", "tool", "text"].includes(TNAME(c)) ? TNAME(c) : "other"})`;
  const rowOf = new Map(F.id.map((f, i) => [f, i]));
  const judged = M.n_judged > 0;

  // dominant token type of each feature and its share of the activation mass
  const domType = new Int16Array(N), domShare = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    let b = -1, s = 0;
    F.mass[i].forEach((m, t) => { if (m > s) { s = m; b = t; } });
    domType[i] = b; domShare[i] = s;
  }

  const esc = s => String(s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const fmt = (x, d = 3) => {
    if (x === null || x === undefined || Number.isNaN(x)) return "–";
    if (x === 0) return "0";
    const a = Math.abs(x);
    if (a >= 1e5 || a < 1e-3) return x.toExponential(d - 1);
    return String(+x.toPrecision(d));
  };
  const pct = x => {
    if (x === null || x === undefined) return "–";
    const p = 100 * x;
    if (p === 0) return "0%";
    if (p < 1e-3) return p.toExponential(1) + "%";
    return (p >= 10 ? p.toFixed(1) : p >= 1 ? p.toFixed(2) : p.toPrecision(2)) + "%";
  };
  const int = x => (x === null || x === undefined) ? "–" : Number(x).toLocaleString("en-US");
  // whitespace made visible: newlines, tabs, carriage returns, and tokens that are only spaces
  const visible = s => {
    if (s === "") return '<span class="ws">∅</span>';
    let h = esc(s).replace(/\r/g, '<span class="ws">␍</span>').replace(/\n/g, '<span class="ws">↵</span>').replace(/\t/g, '<span class="ws">⇥</span>');
    if (/^ +$/.test(s)) h = '<span class="ws">' + "·".repeat(s.length) + "</span>";
    return h;
  };

  // a token shown on its own (chips, tables): every space visible too
  const alone = s => /^ +$/.test(s) || s === "" ? visible(s) : visible(s).replace(/^ +| +$/g, m => '<span class="ws">' + "·".repeat(m.length) + "</span>");
  const fix3 = x => (x > 0 && x < 1e5 && x >= 1e-3 ? x.toPrecision(3) : fmt(x));

  // ---- a feature's detail: the compressed blob inflated once after load, each feature decoded on first use ----
  let DETAIL = null;
  async function inflate() {
    if (typeof DecompressionStream === "undefined") {
      throw new Error("this browser has no DecompressionStream (Chrome 80, Firefox 113, Safari 16.4 or later)");
    }
    const bin = atob(document.getElementById("fs-detail").textContent.trim()), bytes = new Uint8Array(bin.length);
    for (let j = 0; j < bin.length; j++) bytes[j] = bin.charCodeAt(j);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return JSON.parse(await new Response(stream).text());
  }
  const cache = new Map(), TW = M.tok_width;
  const B64 = new Int8Array(128);
  Array.from("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+-").forEach((ch, d) => { B64[ch.charCodeAt(0)] = d; });
  function contexts(s) {
    if (!s) return [];
    return s.split("/").map(c => {
      const [head, types, toks, acts] = c.split(";");
      const [seq, pos] = head.split(",").map(Number);
      const slotAct = new Map();
      if (acts) for (const p of acts.split(",")) { const k = p.indexOf(":"); slotAct.set(+p.slice(0, k), p.slice(k + 1)); }
      // keep the slots inside the sequence; the activating token is slot W
      const ty = [], t = [], a = [], raw = [];
      let center = 0;
      for (let j = 0; j < types.length; j++) {
        if (types[j] === ".") continue;
        if (j === M.window) center = t.length;
        let v = 0;
        for (let d = 0, o = j * TW; d < TW; d++) v = v * 64 + B64[toks.charCodeAt(o + d)];
        const r = slotAct.get(j);
        ty.push(parseInt(types[j], 36)); t.push(v); raw.push(r === undefined ? "0" : r); a.push(r === undefined ? 0 : parseFloat(r));
      }
      return { seq, pos, center, types: ty, toks: t, acts: a, raw };
    });
  }
  // the logit view: "pos/neg", each "vocab:value,..." (null when the features run has none)
  function logitLists(s) {
    if (!s) return null;
    const side = t => (t ? t.split(",").map(p => { const k = p.indexOf(":"); return { v: +p.slice(0, k), raw: p.slice(k + 1), x: parseFloat(p.slice(k + 1)) }; }) : []);
    const [pos, neg] = s.split("/");
    return { pos: side(pos), neg: side(neg) };
  }
  function detail(i) {
    if (!cache.has(i)) {
      const [h, top, q, lg] = DETAIL[i];
      const hist = new Array(Math.max(0, M.hist_edges.length - 1)).fill(0);
      if (h) { const c = h.split(",").map(Number); for (let b = 1; b < c.length; b++) hist[c[0] + b - 1] = c[b]; }
      cache.set(i, { hist, top: contexts(top), quantile: contexts(q), logits: logitLists(lg) });
    }
    return cache.get(i);
  }

  // ---- table state ----
  const S = { sort: "id", dir: 1, q: "", type: "", hideDead: false, page: 0, per: 50, order: null };
  const KEYS = {
    id: i => F.id[i], density: i => F.density[i], max: i => F.max[i], mean: i => F.mean[i],
    sel: i => (F.dead[i] ? null : domShare[i]), score: i => F.score[i], det: i => F.det_acc[i],
    desc: i => (F.desc[i] ? F.desc[i].toLowerCase() : null),
  };
  const topText = i => F.top_tokens[i].map(v => V[v]);
  function matches(i, q) {
    if (!q) return true;
    const m = /^#?(\d+)$/.exec(q);
    if (m) return F.id[i] === +m[1];
    if (F.desc[i] && F.desc[i].toLowerCase().includes(q)) return true;
    return topText(i).some(t => t.toLowerCase().includes(q));
  }
  function view() {
    if (S.order) return S.order;
    const q = S.q.trim().toLowerCase();
    const rows = [];
    for (let i = 0; i < N; i++) {
      if (S.hideDead && F.dead[i]) continue;
      if (S.type !== "" && (F.dead[i] || domType[i] !== +S.type)) continue;
      if (matches(i, q)) rows.push(i);
    }
    const key = KEYS[S.sort], dir = S.dir;
    rows.sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === y) return F.id[a] - F.id[b];
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : 1) * dir;
    });
    S.order = rows;
    return rows;
  }
  const invalidate = () => { S.order = null; S.page = 0; };

  // ---- small pieces ----
  const mini = i => {
    const m = F.mass[i];
    return '<span class="mini">' + TYPES.map(t => m[t] > 0 ? `<i style="width:${(100 * m[t]).toFixed(1)}%;background:${tcolor(t)}" title="${esc(tlabel(t))} ${pct(m[t])}"></i>` : "").join("") + "</span>";
  };
  const scoreChip = s => s === null || s === undefined ? '<span class="muted">–</span>' : `<span class="score s${Math.round(s) || 0}">${fmt(s, 2)}</span>`;
  const maxDensity = F.density.reduce((a, x) => (x !== null && x > a ? x : a), 1e-12);  // no spread: d_sae can pass V8's argument limit
  const densBar = x => {
    const w = x > 0 ? Math.max(2, 100 * (Math.log10(x) + 7) / (Math.log10(maxDensity) + 7)) : 0;
    return `<span class="dens"><i style="width:${Math.min(100, w).toFixed(0)}%"></i></span>`;
  };

  // ---- the overview above the table: feature density histogram, features by dominant token type ----
  let overviewHTML = null;
  function overview() {
    if (overviewHTML !== null) return overviewHTML;
    const lo = -7, hi = 0, nb = 28, bins = new Array(nb).fill(0);
    let nLive = 0;
    const byType = new Map(TYPES.map(t => [t, 0]));
    for (let i = 0; i < N; i++) {
      if (F.dead[i] || !(F.density[i] > 0)) continue;
      nLive++;
      const b = Math.floor((Math.log10(F.density[i]) - lo) / (hi - lo) * nb);
      bins[Math.min(nb - 1, Math.max(0, b))]++;
      if (domType[i] >= 0) byType.set(domType[i], (byType.get(domType[i]) || 0) + 1);
    }
    const W = 420, H = 110, L = 8, B = 22, pw = W - 2 * L, ph = H - B - 8, top = Math.max(1, ...bins), bw = pw / nb;
    let bars = "";
    bins.forEach((c, b) => {
      if (!c) return;
      const y = Math.max(1, ph * c / top);
      bars += `<rect class="bar" x="${(L + b * bw + 0.5).toFixed(1)}" y="${(8 + ph - y).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${y.toFixed(1)}"><title>density 1e${(lo + b * (hi - lo) / nb).toFixed(2)} – 1e${(lo + (b + 1) * (hi - lo) / nb).toFixed(2)}: ${int(c)} features</title></rect>`;
    });
    let ticks = "";
    for (let e = lo; e <= hi; e++) {
      const x = L + (e - lo) / (hi - lo) * pw;
      ticks += `<text x="${x.toFixed(1)}" y="${H - 6}" text-anchor="middle">1e${e}</text>`;
    }
    const dens = `<svg class="hist" viewBox="0 0 ${W} ${H}" role="img" aria-label="feature density histogram"><line class="axis" x1="${L}" x2="${L + pw}" y1="${8 + ph}" y2="${8 + ph}"/>${bars}${ticks}</svg>`;
    const tmax = Math.max(1, ...byType.values());
    const types = [...byType.entries()].filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]).map(([t, n]) =>
      `<a class="trow" href="#features" data-type="${t}"><span class="tl">${esc(tlabel(t))}</span><span class="tb"><i style="width:${(100 * n / tmax).toFixed(1)}%;background:${tcolor(t)}"></i></span><span class="num">${int(n)}</span></a>`).join("");
    overviewHTML = `<div class="overview">
      <div class="card"><h2>Feature density <span class="n">${int(nLive)} live of ${int(N)}, log scale</span></h2>${dens}</div>
      <div class="card"><h2>Features by dominant token type <span class="n">click to filter</span></h2><div class="types">${types}</div></div></div>`;
    return overviewHTML;
  }

  // ---- the feature table ----
  function showTable() {
    const rows = view();
    const pages = Math.max(1, Math.ceil(rows.length / S.per));
    S.page = Math.min(S.page, pages - 1);
    const lo = S.page * S.per, hi = Math.min(rows.length, lo + S.per);
    const cols = [["id", "Feature", ""], ["density", "Density", "r"], ["max", "Max act", "r"], ["mean", "Mean act", "r"],
      ["sel", "Token types", ""], [null, "Top tokens", ""]];
    if (judged) cols.push(["score", "Score", "r"], ["det", "Detection", "r"], ["desc", "Description", ""]);
    const head = cols.map(([k, label, cls]) => {
      const arrow = k === S.sort ? `<span class="arrow">${S.dir > 0 ? "▲" : "▼"}</span>` : "";
      return `<th${k ? ` data-key="${k}"` : ""} class="${cls}">${label}${arrow}</th>`;
    }).join("");
    let body = "";
    for (let r = lo; r < hi; r++) {
      const i = rows[r], f = F.id[i], dead = F.dead[i];
      body += `<tr data-f="${f}" class="${dead ? "dead" : ""}"><td class="id"><a href="#feature/${f}">#${f}</a>${dead ? '<span class="badge">dead</span>' : ""}</td>`
        + `<td class="r num">${densBar(F.density[i])}${pct(F.density[i])}</td><td class="r num">${fmt(F.max[i])}</td><td class="r num">${fmt(F.mean[i])}</td>`
        + `<td class="sel">${dead ? "" : mini(i) + `${esc(tlabel(domType[i]))} <span class="muted">${pct(domShare[i])}</span>`}</td>`
        + `<td class="toptoks">${topText(i).slice(0, 4).map(t => `<span class="tk">${alone(t)}</span>`).join("")}</td>`;
      if (judged) body += `<td class="r">${scoreChip(F.score[i])}</td><td class="r num">${F.det_acc[i] === null ? '<span class="muted">–</span>' : fmt(F.det_acc[i], 2)}</td>`
        + `<td class="desc" title="${esc(F.desc[i] || F.why[i] || "")}">${F.desc[i] ? esc(F.desc[i]) : `<span class="muted">${esc(F.status[i] || "")}</span>`}</td>`;
      body += "</tr>";
    }
    const typeOpts = TYPES.map(t => `<option value="${t}"${String(t) === S.type ? " selected" : ""}>${esc(tlabel(t))}</option>`).join("");
    app.innerHTML = `${overview()}<div class="controls">
        <input type="search" id="q" placeholder="Search: feature id, description or top token…" value="${esc(S.q)}" autocomplete="off">
        <label>dominant type <select id="type"><option value="">any</option>${typeOpts}</select></label>
        <label><input type="checkbox" id="hidedead"${S.hideDead ? " checked" : ""}> hide dead</label>
        <span class="count" id="count">${rows.length === 0 ? "no features match" : `${int(lo + 1)}–${int(hi)} of ${int(rows.length)} features`}</span>
        <span class="pager"><button id="prev"${S.page === 0 ? " disabled" : ""}>‹</button><span class="num">page ${S.page + 1} / ${pages}</span><button id="next"${S.page >= pages - 1 ? " disabled" : ""}>›</button>
        <select id="per">${[25, 50, 100, 250].map(n => `<option${n === S.per ? " selected" : ""}>${n}</option>`).join("")}</select></span>
      </div>
      <table class="ft" id="ftable"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>
      ${rows.length === 0 ? '<p class="empty">No feature matches this search.</p>' : ""}`;
    const q = document.getElementById("q");
    q.addEventListener("input", () => {
      S.q = q.value; invalidate(); showTable();
      const nq = document.getElementById("q"); nq.focus(); nq.setSelectionRange(nq.value.length, nq.value.length);
    });
    document.getElementById("type").addEventListener("change", e => { S.type = e.target.value; invalidate(); showTable(); });
    app.querySelectorAll(".overview a.trow").forEach(a => a.classList.toggle("on", a.dataset.type === S.type));
    app.querySelectorAll(".overview a.trow").forEach(a => a.addEventListener("click", e => {
      e.preventDefault(); S.type = S.type === a.dataset.type ? "" : a.dataset.type; invalidate(); showTable();
    }));
    document.getElementById("hidedead").addEventListener("change", e => { S.hideDead = e.target.checked; invalidate(); showTable(); });
    document.getElementById("per").addEventListener("change", e => { S.per = +e.target.value; S.page = 0; showTable(); });
    document.getElementById("prev").addEventListener("click", () => { S.page--; showTable(); });
    document.getElementById("next").addEventListener("click", () => { S.page++; showTable(); });
    app.querySelectorAll("th[data-key]").forEach(th => th.addEventListener("click", () => {
      const k = th.dataset.key;
      if (S.sort === k) S.dir = -S.dir; else { S.sort = k; S.dir = k === "id" || k === "desc" ? 1 : -1; }
      invalidate(); showTable();
    }));
    app.querySelectorAll("tbody tr").forEach(tr => tr.addEventListener("click", e => {
      if (e.target.closest("a")) return;
      location.hash = "#feature/" + tr.dataset.f;
    }));
  }

  // ---- one feature ----
  function histogram(i) {
    const h = detail(i).hist, E = M.hist_edges, NB = h.length;
    let first = h.findIndex(c => c > 0), last = NB - 1 - [...h].reverse().findIndex(c => c > 0);
    if (first < 0) return '<p class="empty">No firings counted.</p>';
    // the bins that hold its firings, widened to at least 24 so a narrow feature still reads as a histogram
    let lo = Math.max(0, first - 2), hi = Math.min(NB, last + 3);
    while (hi - lo < 24 && (lo > 0 || hi < NB)) { if (lo > 0) lo--; if (hi < NB && hi - lo < 24) hi++; }
    const B = hi - lo;
    const W = 560, H = 170, L = 44, R = 10, T = 10, Bt = 34, pw = W - L - R, ph = H - T - Bt;
    const top = Math.max(1, ...h), bw = pw / B;
    let bars = "";
    for (let b = lo; b < hi; b++) {
      const c = h[b];
      if (!c) continue;
      const y = Math.max(1, ph * c / top), x = L + (b - lo) * bw;
      bars += `<rect class="bar" x="${(x + 0.5).toFixed(1)}" y="${(T + ph - y).toFixed(1)}" width="${Math.max(0.6, bw - 1).toFixed(1)}" height="${y.toFixed(1)}"><title>${fmt(E[b])} – ${fmt(E[b + 1])}: ${int(c)} firings</title></rect>`;
    }
    const step = Math.max(1, Math.round(B / 6));
    let axis = "";
    for (let b = 0; b <= B; b += step) {
      axis += `<line class="axis" x1="${L + b * bw}" x2="${L + b * bw}" y1="${T + ph}" y2="${T + ph + 4}"/><text x="${L + b * bw}" y="${T + ph + 16}" text-anchor="middle">${fmt(E[lo + b], 2)}</text>`;
    }
    // the mean, placed on the log-spaced axis
    const at = v => {
      if (!(v > 0)) return null;
      const l0 = Math.log(E[lo]), l1 = Math.log(E[hi]);
      return L + pw * Math.min(1, Math.max(0, (Math.log(v) - l0) / (l1 - l0)));
    };
    const xm = at(F.mean[i]);
    const mean = xm === null ? "" : `<line class="mean" x1="${xm.toFixed(1)}" x2="${xm.toFixed(1)}" y1="${T}" y2="${T + ph}"/><text x="${(xm + 3).toFixed(1)}" y="${T + 9}">mean</text>`;
    return `<svg class="hist" viewBox="0 0 ${W} ${H}" role="img" aria-label="activation histogram">
      <line class="axis" x1="${L}" x2="${L + pw}" y1="${T + ph}" y2="${T + ph}"/>
      <text x="${L - 6}" y="${T + 8}" text-anchor="end">${int(top)}</text><text x="${L - 6}" y="${T + ph}" text-anchor="end">0</text>
      ${bars}${axis}${mean}
      <text x="${L + pw / 2}" y="${H - 3}" text-anchor="middle">activation (log-spaced bins)</text></svg>`;
  }
  function ctxRows(list, fmax, kind) {
    if (!list.length) return '<p class="empty">No contexts.</p>';
    return list.map((c, n) => {
      let toks = "";
      for (let k = 0; k < c.toks.length; k++) {
        const v = c.acts[k], t = c.types[k];
        const a = fmax > 0 ? Math.min(1, v / fmax) : 0;
        const bg = v > 0 ? ` style="background:rgba(249,115,22,${(0.15 + 0.85 * a).toFixed(3)})"` : "";
        toks += `<span class="tok ty-${esc(TNAME(t))}${k === c.center ? " ctr" : ""}${v > 0 ? " on" : ""}" data-k="${k}" data-id="${VID[c.toks[k]]}"${v > 0 ? ` data-v="${c.raw[k]}"` : ""}${bg}>${visible(V[c.toks[k]])}</span>`;
      }
      const va = c.acts[c.center], w = fmax > 0 ? (100 * va / fmax).toFixed(0) : 0;
      return `<div class="ctx" data-kind="${kind}" data-n="${n}" data-seq="${c.seq}" data-pos="${c.pos}"><div class="act">${fix3(va)}<span class="b" style="width:${w}%"></span></div>`
        + `<div class="toks">${toks}</div><div class="loc">seq ${int(c.seq)} · pos ${int(c.pos)}</div></div>`;
    }).join("");
  }
  // the activating tokens of the top contexts: how often each is the one, and its largest activation there
  function centerChips(list) {
    const by = new Map();
    for (const c of list) {
      const v = c.toks[c.center], e = by.get(v) || { n: 0, max: 0 };
      e.n++; e.max = Math.max(e.max, c.acts[c.center]); by.set(v, e);
    }
    return [...by.entries()].sort((a, b) => b[1].n - a[1].n || b[1].max - a[1].max).slice(0, 12)
      .map(([v, e]) => `<span class="cchip"><span class="tk">${alone(V[v])}</span><span class="muted">×${e.n}</span><span class="num">${fmt(e.max)}</span></span>`).join("");
  }
  // promoted and suppressed tokens side by side, bars on one scale (the largest |value| of both lists)
  function logitView(L) {
    const top = Math.max(1e-12, ...L.pos.map(e => Math.abs(e.x)), ...L.neg.map(e => Math.abs(e.x)));
    const list = (es, cls) => es.map(e => `<div class="lrow" data-id="${VID[e.v]}" data-v="${esc(e.raw)}" title="id ${VID[e.v]}"><span class="tk">${alone(V[e.v])}</span>`
      + `<span class="lb"><i class="${cls}" style="width:${(100 * Math.abs(e.x) / top).toFixed(1)}%"></i></span><span class="num ${cls}">${e.x > 0 ? "+" : ""}${fmt(e.x)}</span></div>`).join("");
    return `<h2 style="margin-top:14px">Logit view <span class="n">the decoder direction through the unembedding</span></h2>
      <div class="logits" id="logits"><div class="lcol" id="logits-pos"><div class="lh">promoted</div>${list(L.pos, "up")}</div>`
      + `<div class="lcol" id="logits-neg"><div class="lh">suppressed</div>${list(L.neg, "down")}</div></div>`;
  }
  function typeLegend() {
    return '<div class="legend">' + TYPES.filter(t => TNAME(t) !== "text").map(t => `<span><span class="ul" style="border-color:${tcolor(t)}"></span>${esc(tlabel(t))}</span>`).join("")
      + '<span><span class="sw" style="background:rgba(249,115,22,.9)"></span>activation (share of the max)</span></div>';
  }
  let current = null;
  function showFeature(f) {
    const i = rowOf.get(f);
    if (i === undefined) {
      app.innerHTML = `<p class="empty">Feature ${esc(f)} is not in this dashboard (${int(N)} of ${int(M.d_sae)} features shown). <a href="#features">Back to the table</a></p>`;
      return;
    }
    if (DETAIL === null) { app.innerHTML = '<p class="empty">Loading the contexts…</p>'; return; }
    const rows = view(), r = rows.indexOf(i);
    const prev = r > 0 ? F.id[rows[r - 1]] : null, next = r >= 0 && r < rows.length - 1 ? F.id[rows[r + 1]] : null;
    const d = detail(i), dead = F.dead[i], m = F.mass[i];
    const fires = M.n_tokens && F.density[i] !== null ? Math.round(F.density[i] * M.n_tokens) : null;
    const judge = F.desc[i] || F.status[i] ? `<div class="judge"><div class="d">${F.desc[i] ? esc(F.desc[i]) : '<span class="muted">no description</span>'}</div>
        <div class="m">judge score ${scoreChip(F.score[i])} · detection accuracy ${fmt(F.det_acc[i], 2)} · F1 ${fmt(F.det_f1[i], 2)}${F.status[i] ? ` · ${esc(F.status[i])}` : ""}${F.why[i] ? ` (${esc(F.why[i])})` : ""}</div></div>` : "";
    const stats = [["density", pct(F.density[i])], ["fires on", fires === null ? "–" : `${int(fires)} tok`], ["max act", fmt(F.max[i])], ["mean act", fmt(F.mean[i])],
      ["dominant type", dead ? "–" : `${esc(tlabel(domType[i]))} ${pct(domShare[i])}`]];
    const massbar = TYPES.map(t => m[t] > 0 ? `<i style="width:${(100 * m[t]).toFixed(2)}%;background:${tcolor(t)}" title="${esc(tlabel(t))} ${pct(m[t])}"></i>` : "").join("");
    const massLegend = TYPES.map(t => `<span><span class="sw" style="background:${tcolor(t)}"></span>${esc(tlabel(t))} <b class="num">${pct(m[t])}</b></span>`).join("");
    app.innerHTML = `<div class="fnav">
        <a class="back" href="#features">← features</a>
        <button id="fprev"${prev === null ? " disabled" : ""} title="previous in the table (←)">‹</button>
        <h2>Feature <span class="mono">#${f}</span>${dead ? '<span class="badge">dead</span>' : ""}</h2>
        <button id="fnext"${next === null ? " disabled" : ""} title="next in the table (→)">›</button>
      </div>
      <div class="fgrid">
        <div class="card"><div class="stats">${stats.map(([k, v]) => `<div class="stat"><div class="k">${k}</div><div class="v">${v}</div></div>`).join("")}</div>
          ${judge}
          <h2 style="margin-top:10px">Activation mass by token type</h2>
          <div class="massbar" id="massbar">${massbar}</div><div class="legend">${massLegend}</div>
          ${dead ? "" : `<h2 style="margin-top:14px">Activating tokens <span class="n">of the top contexts</span></h2><div class="centers">${centerChips(d.top)}</div>`}</div>
        <div class="card"><h2>Activation histogram <span class="n">${int(d.hist.reduce((a, b) => a + b, 0))} firings</span></h2>${dead ? '<p class="empty">Dead: never fired on the tokens read.</p>' : histogram(i)}${d.logits ? logitView(d.logits) : ""}</div>
      </div>
      ${dead ? "" : `<div class="card ctxs" id="top"><div class="head"><h2>Top activations <span class="n">${d.top.length}</span></h2>${typeLegend()}</div>${ctxRows(d.top, F.max[i], "top")}</div>
      <div class="card ctxs" id="quantile"><div class="head"><h2>Quantile samples <span class="n">${d.quantile.length}, weakest first</span></h2></div>${ctxRows(d.quantile, F.max[i], "quantile")}</div>`}`;
    current = { i, top: d.top, quantile: d.quantile, prev, next };
    const go = g => { if (g !== null) location.hash = "#feature/" + g; };
    document.getElementById("fprev").addEventListener("click", () => go(prev));
    document.getElementById("fnext").addEventListener("click", () => go(next));
    window.scrollTo(0, 0);
  }

  // ---- the special-token table ----
  function showSpecial() {
    const T = D.special;
    if (!T || !T.tokens || !T.tokens.length) {
      app.innerHTML = '<p class="empty">This features run has no special-token table (special_tokens.json).</p>';
      return;
    }
    const vmax = Math.max(1e-12, ...T.tokens.flatMap(t => (t.top || []).map(x => x.value)));
    const rows = T.tokens.map(t => {
      const chips = (t.top || []).map(x => {
        const inside = rowOf.has(x.feature);
        const body = `<span class="f">#${x.feature}</span><span class="vb" style="width:${(36 * x.value / vmax).toFixed(1)}px"></span><span class="v">${fmt(x.value)}</span>`;
        return inside ? `<a class="fchip" href="#feature/${x.feature}">${body}</a>` : `<span class="fchip" title="not in this dashboard">${body}</span>`;
      }).join("");
      return `<tr><td><span class="tokcell">${alone(t.token)}</span></td><td class="r num">${esc(t.id)}</td><td><span class="kind ${esc(t.kind)}">${esc(t.kind)}</span></td>`
        + `<td class="r num">${int(t.n_sequences)}</td><td class="r num">${int(t.n_positions)}</td><td>${chips}</td></tr>`;
    }).join("");
    app.innerHTML = `<div class="card" style="margin-bottom:10px"><h2>Special tokens and role words</h2>
      <p class="muted" style="margin:0">For each special token and each role word of the template's headers: over ${int(T.n_sequences)} sequences, the mean over the sequences holding it of each feature's per-sequence max activation at that token; the top features.</p></div>
      <table class="st" id="stable"><thead><tr><th>Token</th><th class="r">Id</th><th>Kind</th><th class="r">Sequences</th><th class="r">Positions</th><th>Top features (mean of per-sequence max)</th></tr></thead><tbody>${rows}</tbody></table>`;
  }

  function showAbout() {
    const info = { sae: M.sae, store: M.store, features_run: M.config, n_sequences: M.n_sequences, n_tokens: M.n_tokens, window: M.window, top_k: M.top_k,
      n_quantile: M.n_quantile, logits: M.logits, d_sae: M.d_sae, n_dead: M.n_dead, shown: M.n_shown, judged: M.n_judged, judge_summary: M.judge_summary, distinct_tokens: V.length };
    app.innerHTML = `<div class="card" style="margin-bottom:10px"><h2>About this dashboard</h2><p class="muted" style="margin:0">Written by <code>fastsae dashboard</code> from a features folder (<code>fastsae features</code>). Token text is decoded with the store's tokenizer; whitespace shows as ↵ (newline), ⇥ (tab) and · (space-only tokens). Token types: underline colour. Activation: orange, as a share of the feature's max. Logit view (when the features run computed it): the tokens whose logits the feature's decoder direction raises (blue) and lowers (red) most, (W_dec[f] · final norm gain) · W_U, the norm's 1/rms ignored.</p></div>
      <pre class="json">${esc(JSON.stringify(info, null, 2))}</pre>`;
  }

  // ---- hover: token id, type and value ----
  app.addEventListener("mouseover", e => {
    const el = e.target.closest(".tok");
    if (!el || !current) { tip.hidden = true; return; }
    const row = el.closest(".ctx"), c = current[row.dataset.kind][+row.dataset.n], k = +el.dataset.k;
    const rel = k - c.center;
    tip.innerHTML = `<div class="t">${esc(JSON.stringify(V[c.toks[k]]))}</div><div><span class="k">id</span>${VID[c.toks[k]]} <span class="k">type</span>${esc(tlabel(c.types[k]))}</div>`
      + `<div><span class="k">activation</span>${c.acts[k] > 0 ? c.raw[k] : "0"} <span class="k">pos</span>${int(c.pos + rel)}${rel === 0 ? " (activating token)" : ` (${rel > 0 ? "+" : ""}${rel})`}</div>`;
    tip.hidden = false;
    const r = el.getBoundingClientRect();
    tip.style.left = Math.min(window.innerWidth - tip.offsetWidth - 8, Math.max(8, r.left)) + "px";
    tip.style.top = (r.bottom + 6 + tip.offsetHeight > window.innerHeight ? r.top - tip.offsetHeight - 6 : r.bottom + 6) + "px";
  });
  app.addEventListener("mouseout", e => { if (e.target.closest(".tok")) tip.hidden = true; });

  document.addEventListener("keydown", e => {
    if (e.target.closest && e.target.closest("input, select, textarea")) return;
    if (location.hash.startsWith("#feature/") && current) {
      if (e.key === "ArrowLeft" && current.prev !== null) location.hash = "#feature/" + current.prev;
      else if (e.key === "ArrowRight" && current.next !== null) location.hash = "#feature/" + current.next;
      else if (e.key === "Escape") location.hash = "#features";
    } else if (e.key === "/") { const q = document.getElementById("q"); if (q) { e.preventDefault(); q.focus(); } }
  });

  function route() {
    const h = location.hash;
    tip.hidden = true;
    current = null;
    let tab = "features";
    if (h.startsWith("#feature/")) showFeature(+h.slice(9));
    else if (h === "#special") { tab = "special"; showSpecial(); }
    else if (h === "#about") { tab = "about"; showAbout(); }
    else showTable();
    document.querySelectorAll(".tabs a").forEach(a => a.classList.toggle("on", a.dataset.tab === tab));
    document.body.dataset.view = h.startsWith("#feature/") ? "feature" : tab;
  }
  window.addEventListener("hashchange", route);
  route();
  inflate().then(d => {
    DETAIL = d;
    if (location.hash.startsWith("#feature/")) route();
    document.body.dataset.readyMs = String(Math.round(performance.now()));  // since navigation start
    document.body.dataset.ready = "1";
  }, e => {
    app.insertAdjacentHTML("afterbegin", `<p class="empty">Cannot read the contexts: ${esc(e.message)}</p>`);
    console.error(e);
  });
})();
