// Per policy over the latest interval on this node: decisions, the heavy hitters (the
// descriptor values with the most hits, with how far each count may be over), and the
// shadow report (what shadow-mode policies would have denied).
import { api } from "../api.js";
import { h, replace, table } from "../dom.js";

export async function render(main) {
  const { data: u } = await api("GET", "/v1/admin/usage");
  if (!u.enabled) {
    replace(main, h("h1", {}, "Heavy hitters & shadow"), h("p", { class: "empty" },
      "This node keeps no usage: start it with --usage (or --events) to see heavy hitters and the shadow report."));
    return;
  }
  const span = u.start ? `${u.start} to ${u.end}` : "the first interval has not ended yet";
  const shadow = u.policies.filter((p) => p.shadow_denied > 0);
  replace(main, h("h1", {}, "Heavy hitters & shadow"), h("p", {}, `Interval: ${span} (${u.interval_ms / 1000} s).`),
    h("section", { class: "card" }, table("Shadow report: what shadow-mode policies would have denied",
      ["Domain", "Policy", "Would have denied", "Allowed"], shadow.map((p) => [p.domain, p.policy, String(p.shadow_denied), String(p.allowed)]))),
    u.policies.map((p) => h("section", { class: "card" },
      h("h2", {}, `${p.domain} / ${p.policy}`),
      h("p", {}, `${p.allowed} allowed, ${p.denied} denied (${p.hits_allowed} and ${p.hits_denied} hits); counts may be over by up to ${p.error_bound}.`),
      table(`Heavy hitters of ${p.policy}`, ["Value", "Hits", "May be over by"], p.heavy_hitters.map((x) => [x.value, String(x.count), String(x.error)])))));
}
