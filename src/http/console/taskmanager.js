// A TaskManager's page, `/taskmanagers/<id>`: its state, address, labels, isolation, runs
// and failures (with its exclusion, if any), capacity and use per resource beside what its
// pin (`tm pin`) lets it declare, and the shards it holds. Kept live by the event stream: an
// event naming it reloads the page.
"use strict";

const tmId = decodeURIComponent(location.pathname.replace(/^\/taskmanagers\//, ""));

function fact(name, value) {
  return [el("dt", {}, name), el("dd", {}, value)];
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (Number.isInteger(n) ? n : n.toFixed(1)) + " " + units[i];
}

function renderTaskManager(page) {
  const t = page.taskmanager;
  $("tm-id").textContent = t.id;
  $("tm-state").textContent = t.state;
  $("tm-state").className = "state " + t.state;
  $("tm-state").dataset.state = t.state;
  $("applied").textContent = page.applied_index;
  document.title = t.id + " – dispatcher";
  const rate = t.shard_runs ? (100 * t.shard_failures / t.shard_runs).toFixed(1) + " %" : "–";
  const pairs = (map) => Object.entries(map || {}).map(([k, v]) => k + "=" + v).join(", ");
  const labels = pairs(t.labels);
  $("facts").replaceChildren(...[
    fact("address", t.addr.endsWith(":0") ? t.addr.slice(0, -2) : t.addr),
    fact("labels", labels || "–"),
    // What the agent may claim from its next registration on (none: no pin).
    fact("pinned labels", pairs(t.pinned_labels) || "–"),
    // The note says the level and what is missing ("partial: no cgroup ...").
    fact("isolation", t.isolation_missing || t.isolation),
    fact("runs", t.shard_runs),
    fact("failures", t.shard_failures + " (" + rate + ")"),
    fact("excluded until", t.excluded_until_ms ? showTime(t.excluded_until_ms) : "–"),
    fact("drain deadline", t.drain_deadline_ms ? showTime(t.drain_deadline_ms) : "–"),
    fact("registration", t.registration_epoch),
  ].flat());
  // Built once per state, so a reload does not close an open question.
  if ($("actions").dataset.state !== t.state) {
    $("actions").dataset.state = t.state;
    const path = "/api/taskmanagers/" + encodeURIComponent(t.id);
    $("actions").replaceChildren(
      t.state === "alive" ? changeButton("drain…",
        "Drain " + t.id + "? It takes no new shards; its running ones move after the deadline.",
        path + "/drain")
      : t.state === "draining" ? changeButton("undrain…", "Let " + t.id + " take shards again?",
        path + "/undrain")
      : "–");
  }
  const pinned = Object.assign({}, t.pinned_resources || {},
    t.pinned_slots != null ? { slots: t.pinned_slots } : {});
  const names = [...new Set([...Object.keys(t.capacity), ...Object.keys(t.used),
    ...Object.keys(pinned)])];
  const amount = (name, value) => name === "memory" && value != null ? bytes(value) : value;
  $("resources").replaceChildren(...names.map((name) =>
    el("tr", { "data-resource": name }, el("td", {}, name),
      el("td", {}, amount(name, t.used[name] ?? 0)),
      el("td", {}, amount(name, t.capacity[name]) ?? "–"),
      el("td", {}, amount(name, pinned[name]) ?? "–"))));
  $("shards").replaceChildren(...page.shards.map((s) =>
    el("tr", { "data-job": s.job_id, "data-shard": s.shard },
      el("td", {}, el("a", { href: "/jobs/" + encodeURIComponent(s.job_id) }, s.job_id)),
      el("td", {}, s.name), el("td", {}, s.tenant), el("td", {}, s.shard),
      el("td", { class: "state " + s.state }, s.state), el("td", {}, s.attempt),
      el("td", {}, s.epoch))));
  $("others").textContent = page.other_tenants_shards
    ? "(and " + page.other_tenants_shards + " of other tenants)" : "";
}

startPage(async () => {
  const page = await getJson("/api/taskmanagers/" + encodeURIComponent(tmId));
  if (!page) return null;
  renderTaskManager(page);
  return page.applied_index;
}, (event, reload) => {
  // Its own events, and every shard's (one may be placed here).
  if (event.taskmanager === tmId || event.shard != null) reload();
});
