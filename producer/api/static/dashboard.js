// The overview page: workers, queue, recent and failed jobs, sources; refreshed every 2 seconds while
// the tab is shown (5 calls a refresh: two tabs take half a key's default budget of 10 calls a second).
"use strict";

const { el, secs, ago } = agentq;

// A tenant's ids begin "<tenant>_": the link shows the id's own first 8 characters.
function jobLink(id) { return el("a", { href: "/jobs/" + id, title: id }, id.slice(id.indexOf("_") + 1, id.indexOf("_") + 9)); }
function statusCell(s) { return el("td", { class: "status s-" + s }, s); }

function fill(tableId, rows) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren(...rows);
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "note" }, "none")));
}

async function refresh() {
  if (!agentq.key()) { document.getElementById("updated").textContent = "enter an API key to see the fleet"; return; }
  try {
    const [workers, queue, recent, failed, sources] = await Promise.all([
      agentq.api("/api/workers"), agentq.api("/api/queue"), agentq.api("/api/jobs?limit=15"),
      agentq.api("/api/jobs?status=failed&limit=10"), agentq.api("/api/sources"),
    ]);
    const split = (state) => Object.entries(queue.by_priority[state]).filter(([, n]) => n).map(([p, n]) => p + " " + n).join(", ");
    document.getElementById("queue").replaceChildren(
      ...[["queued", queue.queued, split("queued")], ["deferred", queue.deferred, split("deferred")],
          ["running", queue.running, split("running")], ["workers", queue.workers, ""],
          ["oldest wait", queue.oldest_queued_s == null ? "-" : secs(queue.oldest_queued_s), ""]]
        .map(([name, n, by]) => el("div", { "data-tile": name }, el("span", {}, name), el("b", { class: "big" }, n),
          el("small", { class: "note" }, by))));
    fill("tenants", Object.entries(queue.tenants).map(([name, t]) => el("tr", { "data-tenant": name },
      el("td", {}, name), el("td", { class: "num" }, t.queued), el("td", { class: "num" }, t.running),
      el("td", { class: "num" }, t.deferred), el("td", { class: "num" }, Math.round(t.share * 100) + "%"))));
    fill("workers", workers.workers.map((w) => el("tr", {},
      el("td", { class: "q" }, w.id), el("td", {}, w.executor + " x" + w.pool_size),
      el("td", { class: "num" }, w.jobs_in_flight), el("td", { class: "num" }, w.jobs_done), el("td", {}, ago(w.beat_at)))));
    fill("recent", recent.jobs.map((j) => el("tr", { "data-job": j.job_id },
      el("td", {}, jobLink(j.job_id)), statusCell(j.status), el("td", { class: "q" }, j.question),
      el("td", { class: "num" }, secs(j.total_s)), el("td", {}, (j.worker_id || "").split(":").slice(0, 2).join(":")))));
    fill("failed", failed.jobs.map((j) => {
      const retry = el("button", { type: "button" }, "re-run");
      retry.addEventListener("click", async () => {
        const made = await agentq.api("/api/jobs/" + j.job_id + "/retry", { method: "POST" });
        location.href = "/jobs/" + made.job_id;
      });
      return el("tr", {}, el("td", {}, jobLink(j.job_id)), el("td", { class: "q" }, j.question),
        el("td", { class: "q error" }, j.error || ""), el("td", {}, retry));
    }));
    fill("sources", sources.sources.map((s) => el("tr", {},
      el("td", {}, s.name), el("td", { class: "num" }, s.calls), el("td", { class: "num" }, s.ok),
      el("td", { class: s.ok < s.calls ? "error" : "" }, Object.entries(s.failures).map(([k, n]) => k + " " + n).join(", ") || "-"),
      el("td", { class: "num" }, secs(s.fetch_p50_s)), el("td", { class: "num" }, secs(s.fetch_p95_s)),
      el("td", { class: "num" }, secs(s.wait_mean_s)), el("td", { class: "num" }, secs(s.inference_mean_s)))));
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    document.getElementById("updated").textContent = "cannot refresh: " + err.message;
  }
}

document.getElementById("ask").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { question: form.get("question") };
  const sources = String(form.get("sources") || "").split(",").map((s) => s.trim()).filter(Boolean);
  if (sources.length) body.sources = sources;
  try {
    const made = await agentq.api("/api/jobs", { method: "POST", body: JSON.stringify(body) });
    location.href = "/jobs/" + made.job_id;
  } catch (err) {
    document.getElementById("ask-error").textContent = err.message;
  }
});

document.getElementById("purge").addEventListener("click", async () => {
  const said = document.getElementById("purge-result");
  if (!confirm("Cancel every job waiting in the queue? Running jobs run on.")) return;
  try {
    const done = await agentq.api("/api/queue/purge", { method: "POST" });
    said.textContent = "purged: " + done.cancelled + " cancelled" + (done.left_to_run ? ", " + done.left_to_run + " already taken" : "");
  } catch (err) {
    said.textContent = err.message;
  }
});

agentq.keyForm();
const REFRESH_MS = 2000;
refresh();
setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
