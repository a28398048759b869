// The overview page: replicas, TaskManagers, the newest jobs (each linking to its page),
// the event log and this replica's history charts, kept live by the event stream.
"use strict";

function render(o) {
  $("node").textContent = o.node_id;
  $("leader").textContent = o.leader_id ?? "none";
  $("term").textContent = o.term;
  $("commit").textContent = o.commit_index;
  $("applied").textContent = o.applied_index;
  $("members").replaceChildren(...o.members.map((m) =>
    el("tr", { "data-member": m.id }, el("td", {}, m.id), el("td", {}, m.addr),
       el("td", { class: "state " + m.role }, m.role))));
  $("taskmanagers").replaceChildren(...o.taskmanagers.map((t) =>
    el("tr", { "data-taskmanager": t.id },
       el("td", {}, el("a", { href: "/taskmanagers/" + encodeURIComponent(t.id) }, t.id)),
       el("td", { class: "state " + t.state }, t.state),
       el("td", {}, t.used_slots + " / " + t.slots),
       // Port 0: an agent that takes no connections; its host is what tells.
       el("td", {}, t.addr.endsWith(":0") ? t.addr.slice(0, -2) : t.addr))));
  const matching = filterQuery() ? " matching" : "";
  $("jobcount").textContent = o.jobs_total > o.jobs.length
    ? "(newest " + o.jobs.length + " of " + o.jobs_total + matching + ")"
    : matching ? "(" + o.jobs_total + matching + ")" : "";
  $("jobs").replaceChildren(...o.jobs.map((j) => {
    const counts = Object.entries(j.shard_states).map(([s, n]) => n + " " + s).join(", ");
    const grid = el("div", { class: "grid" });
    for (const s of j.shards || []) grid.append(el("span", { class: "cell " + s, title: s }));
    const name = j.schedule ? j.name + " (schedule)" : j.name;
    const link = el("a", { href: "/jobs/" + encodeURIComponent(j.id) }, j.id);
    return el("tr", { "data-job": j.id, "data-state": j.state }, el("td", {}, link),
      el("td", {}, name), el("td", {}, j.tenant), el("td", {}, j.priority),
      el("td", { class: "state " + j.state }, j.state),
      el("td", {}, counts), el("td", {}, grid));
  }));
}

// The jobs' filter lives in the page's URL, so a filtered view is a link to share.
function filterQuery() {
  const params = new URLSearchParams();
  for (const key of ["name", "tenant", "state"]) {
    const value = $("filter-" + key).value.trim();
    if (value) params.set(key, value);
  }
  return params.toString();
}

for (const [key, value] of new URLSearchParams(location.search)) {
  if ($("filter-" + key)) $("filter-" + key).value = value;
}
$("filter").addEventListener("submit", (event) => event.preventDefault());
$("filter").addEventListener("input", () => {
  const query = filterQuery();
  history.replaceState(null, "", query ? "/?" + query : "/");
  refresh();
});

async function refresh() {
  const query = filterQuery();
  const overview = await getJson("/api/overview" + (query ? "?" + query : ""));
  if (!overview) return null;
  render(overview);
  return overview.applied_index;
}

function logEvent(e) {
  const what = [e.job_id, e.shard != null ? "shard " + e.shard : null, e.taskmanager, e.detail]
    .filter((x) => x != null && x !== "").join(" ");
  const line = e.index + ":" + e.seq + "  " + e.kind + "  " + what + "\n";
  const log = $("log");
  log.textContent = (line + log.textContent).split("\n").slice(0, 200).join("\n");
}

// A line per series over the points' times, scaled to the largest value shown.
function drawChart(id, points, series) {
  const svg = $("chart-" + id);
  const [w, h, pad] = [300, 90, 3];
  const t0 = points.length ? points[0].at_ms : 0;
  const t1 = points.length ? points[points.length - 1].at_ms : 0;
  // reduce, not Math.max(...): a long history has more points than a call takes arguments.
  const max = series.reduce((m, [key]) => points.reduce((n, p) => Math.max(n, p[key]), m), 1);
  const x = (t) => pad + (t1 === t0 ? 0 : (t - t0) / (t1 - t0)) * (w - 2 * pad);
  const y = (v) => h - pad - (v / max) * (h - 2 * pad);
  svg.replaceChildren(...series.map(([key, cls]) => {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points",
      points.map((p) => x(p.at_ms).toFixed(1) + "," + y(p[key]).toFixed(1)).join(" "));
    line.setAttribute("class", cls);
    line.setAttribute("data-series", key);
    line.setAttribute("data-points", points.length);
    return line;
  }));
  $("max-" + id).textContent = "max " + (Number.isInteger(max) ? max : max.toFixed(1));
}

let historyTimer = null;
async function refreshHistory() {
  clearTimeout(historyTimer);
  let every = 10;
  try {
    const response = await fetch("/api/history", { headers: authHeaders(), cache: "no-store" });
    if (response.ok) {
      const h = await response.json();
      every = h.sample_secs;
      const p = h.points;
      const minutes = p.length ? Math.round((p[p.length - 1].at_ms - p[0].at_ms) / 60000) : 0;
      $("historyspan").textContent = "(this replica, last " + minutes + " min, every " + every + " s)";
      drawChart("submitted", p, [["submitted_per_s", "line-a"]]);
      drawChart("shards", p, [["starts_per_s", "line-a"], ["ends_per_s", "line-b"]]);
      drawChart("queue", p, [["pending_shards", "line-c"], ["running_shards", "line-a"]]);
      drawChart("leaders", p, [["leader_changes", "line-d"]]);
    }
  } catch (e) { /* shown at the next try */ }
  historyTimer = setTimeout(refreshHistory, every * 1000);
}


startPage(async () => {
  const applied = await refresh();
  if (applied != null && historyTimer == null) refreshHistory();
  return applied;
}, (event, reload) => {
  logEvent(event);
  reload();
});
