// What every page of the console shares: the token (kept for this tab only, sent in a
// header, never in a URL), small DOM helpers, fetching the API, and following the event
// stream. Each page gives `console.start` its own load and its own event handler.
"use strict";

let token = sessionStorage.getItem("dispatcher-token") || "";
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function setStatus(text, down) {
  $("status").textContent = text;
  $("status").className = down ? "down" : "";
}

function authHeaders() {
  return token ? { Authorization: "Bearer " + token } : {};
}

function showTime(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "–";
}

// GET `path` as JSON; null (and the login form shown) when the token is missing or refused.
async function getJson(path) {
  const response = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  if (response.status === 401 || response.status === 403) {
    $("login").className = "shown";
    setStatus((await response.text()).trim(), true);
    return null;
  }
  if (!response.ok) {
    setStatus(path + ": " + (await response.text()).trim() || "HTTP " + response.status, true);
    return null;
  }
  $("login").className = "";
  return response.json();
}

// Read the server-sent events of `response` until it ends: `onMessage` sees each message
// ({event, data: [lines], id}).
async function readSse(response, onMessage) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const message = { event: "message", data: [], id: null };
      for (const line of buffer.slice(0, cut).split("\n")) {
        const colon = line.indexOf(":");
        if (colon <= 0) continue; // blank, or a keep-alive comment
        const field = line.slice(0, colon);
        const text = line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") message.data.push(text);
        else if (field === "event") message.event = text;
        else if (field === "id") message.id = text;
      }
      buffer = buffer.slice(cut + 2);
      onMessage(message);
    }
  }
}

// The event stream is read with fetch, not EventSource: EventSource cannot send headers, and a
// token in the URL would end up in proxies' and servers' logs. `onEvent(event)` sees each
// event, `onResync()` a gap the replica could not replay.
async function followEvents(fromIndex, controller, onEvent, onResync) {
  let lastId = null;
  while (!controller.signal.aborted) {
    try {
      const headers = authHeaders();
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await fetch("/api/events?from_index=" + fromIndex,
        { headers, cache: "no-store", signal: controller.signal });
      if (response.status === 401 || response.status === 403) {
        $("login").className = "shown";
        setStatus((await response.text()).trim(), true);
        return;
      }
      if (!response.ok) throw new Error("events: HTTP " + response.status);
      setStatus("live");
      await readSse(response, (message) => {
        if (message.id) lastId = message.id;
        if (message.event === "resync") onResync();
        else if (message.data.length) onEvent(JSON.parse(message.data.join("\n")));
      });
    } catch (e) {
      if (controller.signal.aborted) return;
    }
    setStatus("reconnecting…", true);
    await new Promise((resume) => setTimeout(resume, 1000));
  }
}

// Run a page: `load()` answers the applied index it read (null when refused), then events
// from the next index go to `onEvent`, and a gap reloads. The login form starts again.
function startPage(load, onEvent) {
  let source = null;
  let reloadTimer = null;
  // Reload at most every 200 ms however fast events come.
  const scheduleLoad = () => {
    if (reloadTimer) return;
    reloadTimer = setTimeout(async () => { reloadTimer = null; await load(); }, 200);
  };
  async function start() {
    const applied = await load();
    if (applied == null) return;
    if (source) source.abort();
    source = new AbortController();
    followEvents(applied + 1, source, (e) => onEvent(e, scheduleLoad), scheduleLoad);
  }
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value;
    sessionStorage.setItem("dispatcher-token", token);
    start();
  });
  start().catch((e) => setStatus(String(e), true));
}

// POST a change (`/api/.../cancel` and the like) as the API's caller: the token in its header,
// and the console's header that another site's page cannot send. Answers the refusal's line,
// or "" when done.
async function postChange(path) {
  const headers = { ...authHeaders(), "x-dispatcher-console": "1" };
  const response = await fetch(path, { method: "POST", headers, cache: "no-store" });
  return response.ok ? "" : (await response.text()).trim() || "HTTP " + response.status;
}

// A button that asks before it changes anything: `label` shows, a click asks `question` with
// "yes" and "no", and "yes" posts to `path`. What came of it shows in #action-result.
function changeButton(label, question, path) {
  const box = el("span", { class: "change" });
  const ask = () => {
    const yes = el("button", { id: "confirm-yes" }, "yes");
    const no = el("button", { id: "confirm-no" }, "no");
    yes.addEventListener("click", async () => {
      const refused = await postChange(path);
      const result = $("action-result");
      result.textContent = refused || "done";
      result.dataset.ok = refused ? "no" : "yes";
      box.replaceChildren(button);
    });
    no.addEventListener("click", () => box.replaceChildren(button));
    box.replaceChildren(question + " ", yes, " ", no);
  };
  const button = el("button", { "data-change": path }, label);
  button.addEventListener("click", ask);
  box.append(button);
  return box;
}
