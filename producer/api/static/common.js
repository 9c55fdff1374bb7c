// Shared by the dashboard's pages: the API key (kept in this tab's session storage) and API calls.
"use strict";

const agentq = {
  key() { return sessionStorage.getItem("agentq-key") || ""; },

  keyForm() {
    const input = document.getElementById("key");
    input.value = agentq.key();
    input.addEventListener("change", () => { sessionStorage.setItem("agentq-key", input.value.trim()); location.reload(); });
  },

  headers() { return { "Authorization": "Bearer " + agentq.key(), "Content-Type": "application/json" }; },

  async api(path, options = {}) {
    const reply = await fetch(path, { ...options, headers: agentq.headers() });
    const body = await reply.json().catch(() => ({}));
    if (!reply.ok) {
      const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      throw new Error(reply.status + " " + (detail || reply.statusText));
    }
    return body;
  },

  // Server-Sent Events read through fetch (EventSource cannot send the key): calls onEvent(name, data).
  async events(path, onEvent) {
    const reply = await fetch(path, { headers: agentq.headers() });
    if (!reply.ok) throw new Error(reply.status + " " + ((await reply.json().catch(() => ({}))).detail || ""));
    const reader = reply.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (data) onEvent(name, JSON.parse(data));
      }
    }
  },

  el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
    return node;
  },

  secs(v) { return v === null || v === undefined ? "-" : Number(v).toFixed(2) + "s"; },

  ago(iso) {
    if (!iso) return "-";
    const s = (Date.now() - Date.parse(iso)) / 1000;
    return s < 1 ? "now" : Math.round(s) + "s ago";
  },
};
