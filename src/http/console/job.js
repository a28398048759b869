// A job's page, `/jobs/<id>`: its state, options and reason, every shard (where it runs or
// ran, attempts, preemptions, errors) and what each shard printed, as this replica keeps
// it. Kept live by the event stream: an event of this job reloads it.
"use strict";

const jobId = decodeURIComponent(location.pathname.replace(/^\/jobs\//, ""));
let shownShard = null;

function fact(name, value) {
  return [el("dt", {}, name), el("dd", {}, value)];
}

function jobLink(id) {
  return el("a", { href: "/jobs/" + encodeURIComponent(id) }, id);
}

function renderJob(page) {
  const j = page.job;
  $("job-id").textContent = j.job_id;
  $("job-state").textContent = j.state;
  $("job-state").className = "state " + j.state;
  $("job-state").dataset.state = j.state;
  $("applied").textContent = page.applied_index;
  document.title = j.job_id + " " + j.name + " – dispatcher";
  const after = el("span", {});
  for (const id of j.after) after.append(jobLink(id), " ");
  const facts = [
    fact("name", j.name),
    fact("tenant", j.tenant),
    fact("priority", j.priority),
    fact("gang", j.gang ? "yes" : "no"),
    fact("after", j.after.length ? after : "–"),
    fact("created", showTime(j.created_at_ms)),
    fact("ended", showTime(page.ended_at_ms)),
    fact("timeout", j.timeout_ms ? j.timeout_ms / 1000 + " s" : "–"),
    fact("resources", j.resources && Object.keys(j.resources).length
      ? Object.entries(j.resources).map(([k, v]) => k + "=" + v).join(", ") : "–"),
  ];
  if (j.schedule) facts.push(fact("schedule", j.schedule + " for " + showTime(j.scheduled_ms)));
  $("facts").replaceChildren(...facts.flat());
  $("reason").textContent = j.reason || "–";
  // Built once per state, so a reload does not close an open question.
  const ended = ["finished", "failed", "cancelled"].includes(j.state);
  if ($("actions").dataset.ended !== String(ended)) {
    $("actions").dataset.ended = String(ended);
    $("actions").replaceChildren(ended ? "–" : changeButton("cancel…",
      "Cancel " + j.job_id + " and stop its running shards?",
      "/api/jobs/" + encodeURIComponent(j.job_id) + "/cancel"));
  }
  $("shards").replaceChildren(...j.shards.map((s) =>
    el("tr", { "data-shard": s.index, "data-state": s.state },
      el("td", {}, s.index), el("td", { class: "state " + s.state }, s.state),
      el("td", {}, s.taskmanager ?? "–"), el("td", {}, s.attempt), el("td", {}, s.epoch),
      el("td", {}, s.started_at_ms ? showTime(s.started_at_ms) : "–"),
      el("td", {}, s.failures), el("td", {}, s.preemptions), el("td", {}, s.exit_code ?? "–"),
      el("td", {}, s.not_before_ms ? showTime(s.not_before_ms) : "–"),
      el("td", {}, s.error ?? ""))));
  renderOutput(page);
}

// The shard whose output is followed live, and how to stop it.
let live = null;

function stopLive() {
  if (live) live.controller.abort();
  live = null;
}

// Follow shard `shard`'s output as it prints (the replica follows it on the API for us).
function followLive(shard) {
  if (live && live.shard === shard) return;
  stopLive();
  const controller = new AbortController();
  live = { shard, controller };
  $("output-stdout").textContent = "";
  $("output-stderr").textContent = "";
  $("output-note").textContent = "live";
  const path = "/api/jobs/" + encodeURIComponent(jobId) + "/shards/" + shard + "/follow";
  (async () => {
    const headers = { ...authHeaders(), "x-dispatcher-console": "1" };
    const response = await fetch(path, { headers, cache: "no-store", signal: controller.signal });
    if (!response.ok) {
      $("output-note").textContent = (await response.text()).trim();
      return;
    }
    await readSse(response, (message) => {
      const data = message.data.join("\n");
      if (message.event === "output") {
        const chunk = JSON.parse(data);
        $("output-stdout").append(chunk.stdout);
        $("output-stderr").append(chunk.stderr);
        if (chunk.ended) $("output-note").textContent = "ended";
      } else if (message.event === "refused") {
        $("output-note").textContent = data;
      }
    });
  })().catch(() => {});
}

function renderOutput(page) {
  const select = $("output-shard");
  const count = page.job.shards.length;
  if (select.options.length !== count) {
    select.replaceChildren(...page.job.shards.map((s) => el("option", { value: s.index }, "shard " + s.index)));
  }
  if (shownShard == null) shownShard = 0;
  select.value = String(shownShard);
  const kept = page.outputs.find((o) => o.shard === shownShard);
  const shard = page.job.shards[shownShard];
  if (!kept && shard && ["running", "assigned"].includes(shard.state)) {
    followLive(shownShard);
    return;
  }
  // Ended: what the cluster kept is the whole story (or its end).
  stopLive();
  $("output-stdout").textContent = kept ? kept.stdout : "";
  $("output-stderr").textContent = kept ? kept.stderr : "";
  $("output-note").textContent = kept
    ? (kept.stdout_cut || kept.stderr_cut ? "the end of what it printed (the start is cut)" : "")
    : "nothing kept for this shard";
}

let lastPage = null;
async function load() {
  const page = await getJson("/api/jobs/" + encodeURIComponent(jobId));
  if (!page) return null;
  lastPage = page;
  renderJob(page);
  return page.applied_index;
}

$("output-shard").addEventListener("change", () => {
  shownShard = Number($("output-shard").value);
  if (lastPage) renderOutput(lastPage);
});

startPage(load, (event, reload) => {
  if (event.job_id === jobId) reload();
});
