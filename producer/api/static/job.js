// One job's page: its fan-out timeline drawn live from its event stream, then exactly from its result.
"use strict";

const jobId = location.pathname.split("/").filter(Boolean).pop();
const SVG = "http://www.w3.org/2000/svg";
const rows = new Map();   // source -> {fetchStart, fetchEnd, submit, done, status, exact}
let clock = { t: 0, at: performance.now() };   // the job's last known time, and when we learnt it
let finished = false;

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function now() { return finished ? clock.t : clock.t + (performance.now() - clock.at) / 1000; }

function row(name) {
  if (!rows.has(name)) rows.set(name, { status: "…" });
  return rows.get(name);
}

function onProgress(e) {
  clock = { t: e.t, at: performance.now() };
  if (!e.source) return;
  const r = row(e.source);
  if (e.event === "fetch_start") r.fetchStart = e.t;
  if (e.event === "fetch_end") r.fetchEnd = e.t;
  if (e.event === "inference_start") r.submit = e.t;
  if (e.event === "done") { r.done = e.t; r.fetchEnd ??= e.t; }
  if (e.status) r.status = e.status;
}

function onResult(result) {
  finished = true;
  let end = 0;
  for (const o of result.sources) {
    const r = row(o.name);
    r.status = o.status;
    r.exact = o;
    end = Math.max(end, o.fetch_end_s ?? 0, o.inference_end_s ?? 0);
  }
  clock = { t: Math.max(end, result.timing ? result.timing.total_s : end), at: performance.now() };
  document.getElementById("question").textContent = result.question;
  const status = document.getElementById("status");
  status.textContent = result.status;
  status.className = "big s-" + result.status;
  document.getElementById("total").textContent = result.timing ? agentq.secs(result.timing.total_s) : "-";
  document.getElementById("speedup").textContent = result.timing ? result.timing.speedup.toFixed(2) + "x" : "-";
  document.getElementById("pool").textContent = result.executor ? result.executor.kind + " x" + result.executor.size : "-";
  document.getElementById("answer").replaceChildren(
    ...result.answer.map((line) => agentq.el("li", {}, line)),
    ...result.errors.map((line) => agentq.el("li", { class: "error" }, line)));
  document.getElementById("cancel").hidden = true;   // a finished job has nothing to cancel
  draw();
  const timeline = document.getElementById("timeline");
  timeline.dataset.complete = "true";
  document.body.dataset.state = "complete";
}

function draw() {
  const timeline = document.getElementById("timeline");
  const names = [...rows.keys()];
  const left = 150, right = 110, width = 960, rowH = 30, top = 26;
  const height = top + Math.max(1, names.length) * rowH + 10;
  timeline.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const span = Math.max(now(), 0.001) * 1.05;
  const x = (t) => left + (width - left - right) * Math.min(1, Math.max(0, t) / span);
  const parts = [];
  const step = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60].find((s) => span / s <= 8) || 60;
  for (let t = 0; t <= span; t += step) {
    parts.push(svg("line", { x1: x(t), x2: x(t), y1: top - 6, y2: height - 6, class: "axis" }));
    parts.push(svg("text", { x: x(t), y: 14, "text-anchor": "middle" }, (Math.round(t * 100) / 100) + "s"));
  }
  names.forEach((name, i) => {
    const r = rows.get(name), y = top + i * rowH, h = rowH - 10;
    parts.push(svg("text", { x: 8, y: y + h - 5 }, name));
    const bar = (from, to, cls, label) => {
      if (from === undefined || from === null) return;
      const end = to ?? now();
      parts.push(svg("rect", { x: x(from), y, width: Math.max(1.5, x(end) - x(from)), height: h, rx: 3,
        class: cls + (to === undefined || to === null ? " open" : ""), "data-part": label, "data-source": name }));
    };
    const o = r.exact;
    if (o) {
      bar(o.fetch_start_s, o.fetch_end_s, "fetch", "fetch");
      if (o.inference_submit_s != null && o.inference_start_s != null) {
        bar(o.inference_submit_s, o.inference_start_s, "wait", "wait");
        bar(o.inference_start_s, o.inference_end_s, "infer", "inference");
      } else if (o.inference_submit_s != null) {
        bar(o.inference_submit_s, o.fetch_end_s === null ? null : Math.max(o.inference_submit_s, clock.t), "wait", "wait");
      }
    } else {
      bar(r.fetchStart, r.fetchEnd, "fetch", "fetch");
      if (r.submit !== undefined) bar(r.submit, r.done, "infer", "wait+inference");
    }
    parts.push(svg("text", { x: width - right + 8, y: y + h - 5, class: "s-" + r.status }, r.status));
  });
  timeline.replaceChildren(...parts);
}

function animate() {
  draw();
  if (!finished) requestAnimationFrame(animate);
}

async function follow() {
  document.getElementById("job-id").textContent = "job " + jobId;
  if (!agentq.key()) { document.getElementById("error").textContent = "enter an API key (read scope) above"; return; }
  try {
    const job = await agentq.api("/api/jobs/" + jobId);
    document.getElementById("status").textContent = job.status;
    document.getElementById("cancel").hidden = Boolean(job.result);   // shown only while it can be cancelled
    requestAnimationFrame(animate);
    await agentq.events("/api/jobs/" + jobId + "/events", (name, data) => {
      if (name === "progress") onProgress(data);
      else if (name === "result") onResult(data);
    });
    if (!finished) {   // the stream ended early (a proxy, a restart): read the result itself
      const again = await agentq.api("/api/jobs/" + jobId);
      if (again.result) onResult(again.result);
    }
  } catch (err) {
    document.getElementById("error").textContent = err.message;
  }
}

document.getElementById("cancel").addEventListener("click", async () => {
  try {
    const reply = await agentq.api("/api/jobs/" + jobId + "/cancel", { method: "POST" });
    document.getElementById("error").textContent = "cancel: " + reply.cancel;
  } catch (err) {
    document.getElementById("error").textContent = err.message;
  }
});

agentq.keyForm();
follow();
