// The cluster page: polls the gateway's JSON every second and redraws.
// Everything from the cluster (keys above all) goes in as text nodes,
// never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#65a30d", "#9333ea", "#0d9488"];
const colors = new Map();
let updates = 0;

function color(node) {
  if (!colors.has(node)) colors.set(node, PALETTE[colors.size % PALETTE.length]);
  return colors.get(node);
}

// An element with attributes and children (strings become text nodes).
function el(tag, attrs, ...children) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function ms(us) {
  return us >= 1000 ? (us / 1000).toFixed(1) + " ms" : us + " µs";
}

async function getJson(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).message || msg; } catch (_) { /* not JSON */ }
    throw new Error(url + ": " + msg);
  }
  return r.json();
}

// A ring segment between two fractions of the circle, as an SVG path.
function arcPath(from, to, r0, r1) {
  const angle = (f) => 2 * Math.PI * f - Math.PI / 2;
  const pt = (f, r) => [r * Math.cos(angle(f)), r * Math.sin(angle(f))];
  const large = to - from > 0.5 ? 1 : 0;
  const [a, b, c, d] = [pt(from, r1), pt(to, r1), pt(to, r0), pt(from, r0)];
  return `M${a[0]},${a[1]} A${r1},${r1} 0 ${large} 1 ${b[0]},${b[1]} L${c[0]},${c[1]} A${r0},${r0} 0 ${large} 0 ${d[0]},${d[1]} Z`;
}

function drawRing(c) {
  const svg = document.getElementById("ring");
  const down = new Set(c.nodes.filter((n) => n.liveness !== "up").map((n) => n.id));
  svg.replaceChildren();
  for (const a of c.arcs) {
    const path = el("svg:path", { d: arcPath(a.from, a.to, 110, 150), fill: color(a.node), "fill-opacity": down.has(a.node) ? 0.25 : 0.85, stroke: "#fff", "stroke-width": 0.5, "data-node": a.node });
    path.append(el("svg:title", {}, `${a.node}: token ${a.token}`));
    svg.append(path);
  }
  svg.append(el("svg:text", { x: 0, y: -6, "text-anchor": "middle", "font-size": 18, "font-weight": 600 }, `${c.nodes.length} nodes`));
  svg.append(el("svg:text", { x: 0, y: 16, "text-anchor": "middle", "font-size": 12, fill: "#6b7280" }, `RF ${c.replication_factor} · ${c.arcs.length} tokens`));
  svg.append(el("svg:text", { x: 0, y: 34, "text-anchor": "middle", "font-size": 12, fill: "#6b7280" }, `skew ${c.skew.toFixed(2)}`));
  const legend = document.getElementById("legend");
  legend.replaceChildren(...c.nodes.map((n) => el("span", { "data-node": n.id }, el("span", { class: "swatch", style: `background:${color(n.id)}` }), `${n.id} ${(100 * n.ownership).toFixed(1)}%`)));
}

function drawNodes(c) {
  const body = document.querySelector("#nodes tbody");
  body.replaceChildren(...c.nodes.map((n) => {
    const live = el("td", { class: n.liveness === "up" ? "up" : "down" }, n.liveness);
    return el("tr", { "data-node": n.id, "data-liveness": n.liveness },
      el("td", {}, el("span", { class: "swatch", style: `background:${color(n.id)}` }), n.id),
      el("td", {}, n.address), el("td", {}, n.zone || "-"), el("td", {}, n.state), live,
      el("td", { class: "num" }, n.phi >= 1e9 ? "∞" : n.phi.toFixed(2)), el("td", { class: "num" }, n.tokens),
      el("td", { class: "num" }, (100 * n.ownership).toFixed(1) + "%"), el("td", { class: "num" }, n.keys), el("td", { class: "num" }, n.in_flight));
  }));
  const up = c.nodes.filter((n) => n.liveness === "up").length;
  document.getElementById("summary").textContent = `${up}/${c.nodes.length} nodes up · as seen by ${c.as_seen_by} · routing: ${c.policy}`;
}

function drawLatency(l) {
  const body = document.querySelector("#latency tbody");
  if (l.series.length === 0) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "no requests yet")));
    return;
  }
  body.replaceChildren(...l.series.map((s) => el("tr", { "data-op": s.op, "data-level": s.level },
    el("td", {}, s.op), el("td", {}, s.level), el("td", { class: "num" }, s.count), el("td", { class: "num" }, s.errors),
    el("td", { class: "num" }, ms(s.p50_us)), el("td", { class: "num" }, ms(s.p90_us)), el("td", { class: "num" }, ms(s.p99_us)), el("td", { class: "num" }, ms(s.max_us)))));
}

function drawRecent(r) {
  const list = document.getElementById("recent");
  if (r.requests.length === 0) {
    list.replaceChildren(el("li", { class: "muted" }, "no requests yet: try curl -X PUT --data-binary hello http://" + location.host + "/v1/kv/greeting"));
    return;
  }
  list.replaceChildren(...r.requests.map((q) => {
    const cls = q.status < 300 ? "status-ok" : q.status === 404 ? "status-miss" : "status-bad";
    const time = new Date(q.at_ms).toLocaleTimeString();
    const head = el("div", {},
      el("span", { class: "op" }, q.op.toUpperCase()), el("span", { class: "key" }, q.key || "(none)"), " · ", q.level, " · ",
      el("span", { class: cls }, `${q.status} ${q.outcome}`), " · ", ms(q.gateway_us), " in the gateway",
      q.coordinator ? ` · coordinator ${q.coordinator} (${ms(q.coordinator_us)})` : "", el("span", { class: "muted" }, ` · ${time}`));
    const reps = el("div", { class: "replicas" }, ...q.replicas.map((x) => {
      // Not answered and no error: the level did not wait for it (ONE).
      const notes = [x.answered ? ms(x.latency_us) : (x.error || "not awaited")];
      if (x.stale) notes.push("stale");
      if (x.repaired) notes.push("repaired");
      const k = "replica" + (x.stale ? " stale" : "") + (x.error ? " missed" : x.answered ? "" : " idle");
      return el("span", { class: k, "data-node": x.node }, el("span", { class: "swatch", style: `background:${color(x.node)}` }), `${x.node} ${notes.join(", ")}`);
    }));
    return el("li", { "data-key": q.key, "data-op": q.op, "data-status": q.status, "data-seq": q.seq }, head, reps);
  }));
}

async function tick() {
  const [c, r, l] = await Promise.allSettled([getJson("/v1/cluster"), getJson("/v1/recent"), getJson("/v1/latency")]);
  const errors = [c, r, l].filter((x) => x.status === "rejected").map((x) => x.reason.message);
  if (c.status === "fulfilled") { drawRing(c.value); drawNodes(c.value); }
  if (r.status === "fulfilled") drawRecent(r.value);
  if (l.status === "fulfilled") drawLatency(l.value);
  const box = document.getElementById("error");
  box.textContent = errors.join(" · ");
  box.style.display = errors.length ? "block" : "none";
  updates += 1;
  document.body.dataset.updates = updates;
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

async function loop() {
  try { await tick(); } catch (e) { console.error(e); }
  setTimeout(loop, 1000);
}
loop();
