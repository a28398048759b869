// The tenants' page, `/tenants`: each tenant's quota, weight and highest priority, what it
// holds and has waiting, and how many of its shards were preempted. Kept live by the event
// stream.
"use strict";

function amounts(map) {
  const shown = Object.entries(map || {}).map(([k, v]) => k + "=" + v).join(", ");
  return shown || "–";
}

function renderTenants(page) {
  $("applied").textContent = page.applied_index;
  $("tenants").replaceChildren(...page.tenants.map((t) =>
    el("tr", { "data-tenant": t.tenant }, el("td", {}, t.tenant),
      el("td", {}, t.slots ?? "none"), el("td", {}, t.running_slots), el("td", {}, t.weight),
      el("td", {}, t.max_priority), el("td", {}, t.pending_shards),
      el("td", {}, amounts(t.resource_limits)), el("td", {}, amounts(t.resources_used)),
      el("td", {}, t.preemptions))));
}

startPage(async () => {
  const page = await getJson("/api/tenants");
  if (!page) return null;
  renderTenants(page);
  return page.applied_index;
}, (event, reload) => reload());
