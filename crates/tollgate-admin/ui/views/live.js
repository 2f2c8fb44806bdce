// Decisions as this node makes them (the GraphQL `decisions` subscription), newest
// first, filtered by policy; pause keeps the list still while events keep counting.
import { api, subscribe } from "../api.js";
import { field, h, replace, say } from "../dom.js";

const KEEP = 200;
const QUERY = `subscription($domain: String!) { decisions(domain: $domain) { domain allowed at descriptors { entries allowed policy remaining shadowDenied } } }`;

const outcome = (d) => (d.shadowDenied ? "would deny (shadow)" : d.allowed ? (d.policy ? "within" : "no limit") : "over");
const outcomeClass = (d) => (d.shadowDenied ? "shadow-row" : d.allowed ? "" : "denied-row");

export async function render(main, session) {
  const { data: domains } = await api("GET", "/v1/admin/domains?limit=200");
  const names = domains.items.map((d) => d.name);
  const fromFiles = h("input", { type: "text", placeholder: "a domain from a policy file" });
  const first = (domains.items.find((d) => d.source !== "file") || domains.items[0] || {}).name;
  const domain = h("select", {}, names.map((n) => h("option", { value: n, selected: n === first }, n)));
  const policy = h("input", { type: "search", placeholder: "any policy" });
  const pause = h("button", { type: "button", "aria-pressed": "false" }, "Pause");
  const counter = h("p", { "aria-live": "off" });
  const rows = h("tbody");
  const grid = h("table", {}, h("caption", {}, "Latest decisions, newest first"),
    h("thead", {}, h("tr", {}, ["Time", "Decision", "Policy", "Descriptor", "Outcome", "Remaining"].map((t) => h("th", { scope: "col" }, t)))), rows);
  replace(main, h("h1", {}, "Live decisions"),
    h("div", { class: "filters" }, field("Domain", domain, "domain"), field("Other domain", fromFiles, "other-domain"), field("Policy", policy, "policy"), pause),
    counter, grid);
  let events = [], seen = 0, paused = false, stop = null;

  const matches = (e) => !policy.value || e.descriptors.some((d) => (d.policy || "").includes(policy.value));
  function draw() {
    counter.textContent = `${seen} decisions seen${paused ? " (paused)" : ""}`;
    if (paused) return;
    // One row per descriptor; the time and the overall decision on its decision's first.
    rows.replaceChildren(...events.filter(matches).slice(0, KEEP).map((e) => e.descriptors.map((d, i) => h("tr", { class: outcomeClass(d) },
      h("td", {}, i === 0 ? e.at : ""), h("td", {}, i === 0 ? (e.allowed ? "allowed" : "denied") : ""),
      h("td", {}, d.policy || "—"), h("td", {}, d.entries.join(", ")), h("td", {}, outcome(d)), h("td", {}, String(d.remaining))))).flat());
  }
  function watch() {
    if (stop) stop();
    events = [];
    const name = fromFiles.value.trim() || domain.value;
    if (!name) { say("Choose a domain to watch."); return; }
    stop = subscribe(QUERY, { domain: name }, (data) => {
      seen++;
      events.unshift(data.decisions);
      if (events.length > KEEP) events.length = KEEP;
      draw();
    }, (msg) => say(`Live decisions: ${msg}`, "error"));
    say(`Watching ${name}.`);
    draw();
  }
  domain.addEventListener("change", watch);
  fromFiles.addEventListener("change", watch);
  policy.addEventListener("input", draw);
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
    draw();
  });
  watch();
  return () => { if (stop) stop(); };
}
