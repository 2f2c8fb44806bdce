// A domain's policies: the list, one policy's form (errors from the API shown at their
// field), its history with diffs, and roll back to a revision. Editing is offered to
// editors and admins of the domain; the server decides either way.
import { api, ApiError, seg } from "../api.js";
import { field, h, replace, say, showFieldErrors, table } from "../dom.js";

const UNITS = ["second", "minute", "hour", "day", "week", "month", "year"];
const ALGORITHMS = ["fixed_window", "sliding_window", "gcra"];

const mayEdit = (s, domain) => s.role !== "viewer" && (s.domains.includes("*") || s.domains.includes(domain));

const limitText = (r) => r.unlimited ? "unlimited"
  : r.max_in_flight !== undefined ? `${r.max_in_flight} in flight`
  : `${r.requests_per_unit ?? "?"} per ${r.unit ?? r.period ?? "?"}${r.algorithm ? ` (${r.algorithm})` : ""}`;

export async function render(main, session, [domain, policy]) {
  const { data: domains } = await api("GET", "/v1/admin/domains?limit=200");
  const names = domains.items.map((d) => d.name);
  if (!names.length) { replace(main, h("h1", {}, "Policies"), h("p", { class: "empty" }, "No domains yet.")); return; }
  // The first domain kept in the database, unless one was asked for.
  const stored = domains.items.find((d) => d.source !== "file");
  const current = names.includes(domain) ? domain : (stored || domains.items[0]).name;
  const file = domains.items.find((d) => d.name === current && d.source === "file");
  const select = h("select", {}, names.map((n) => h("option", { value: n, selected: n === current }, n)));
  select.addEventListener("change", () => { location.hash = `#/policies/${seg(select.value)}`; });
  const body = h("div");
  replace(main, h("h1", {}, "Policies"), field("Domain", select, "domain"), body);
  if (file) {
    replace(body, h("p", { class: "note" }, `${current} is defined by the policy file ${file.file || ""}: change it there (or with tollgate policy apply).`));
    return;
  }
  if (policy !== undefined) return detail(body, session, current, policy);
  const { data: list } = await api("GET", `/v1/admin/domains/${seg(current)}/policies?limit=200`);
  replace(body, table(`Policies of ${current}`, ["Name", "Descriptor", "Limit", "Mode"], list.items.map((p) => [
    h("a", { href: `#/policies/${seg(current)}/${seg(p.name)}` }, p.name),
    p.descriptor.map((e) => e.value === undefined ? e.key : `${e.key}=${e.value}`).join(", "),
    limitText(p.rate_limit),
    [p.shadow_mode ? "shadow" : "", p.quota_mode ? "quota" : ""].filter(Boolean).join(", ") || "enforced",
  ])));
}

async function detail(body, session, domain, name) {
  const path = `/v1/admin/domains/${seg(domain)}/policies/${seg(name)}`;
  const { data: p, etag } = await api("GET", path);
  const editable = mayEdit(session, domain);
  const r = p.rate_limit;
  const input = (attrs) => h("input", { disabled: !editable, ...attrs });
  const rpu = input({ type: "number", min: 0, value: r.requests_per_unit ?? "" });
  const unit = h("select", { disabled: !editable }, h("option", { value: "" }, "—"), UNITS.map((u) => h("option", { value: u, selected: r.unit === u }, u)));
  const algorithm = h("select", { disabled: !editable }, h("option", { value: "" }, "default (fixed_window)"),
    ALGORITHMS.map((a) => h("option", { value: a, selected: r.algorithm === a }, a)),
    r.algorithm && !ALGORITHMS.includes(r.algorithm) ? h("option", { value: r.algorithm, selected: true }, r.algorithm) : null);
  const burst = input({ type: "number", min: 0, value: r.burst ?? "" });
  const shadow = input({ type: "checkbox", checked: p.shadow_mode });
  const description = h("textarea", { disabled: !editable, rows: 2 }, p.description);
  const formError = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "card", "aria-label": `Policy ${name}` },
    h("h2", {}, name),
    h("p", {}, `Descriptor: ${p.descriptor.map((e) => e.value === undefined ? e.key : `${e.key}=${e.value}`).join(", ")} · revision ${p.revision} · last changed by ${p.updated_by}`),
    field("Requests per unit", rpu, "rate_limit.requests_per_unit"),
    field("Unit", unit, "rate_limit.unit"),
    field("Algorithm", algorithm, "rate_limit.algorithm"),
    field("Burst (GCRA)", burst, "rate_limit.burst"),
    field("Shadow mode (count, never deny)", shadow, "shadow_mode"),
    field("Description", description, "description"),
    formError,
    editable ? h("button", { type: "submit" }, "Save") : h("p", { class: "note" }, "Your role may read this policy, not change it."));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const num = (el) => el.value === "" ? undefined : Number(el.value);
    const spec = {
      descriptor: p.descriptor,
      rate_limit: { ...r, requests_per_unit: num(rpu), unit: unit.value || undefined, algorithm: algorithm.value || undefined, burst: num(burst) },
      shadow_mode: shadow.checked, quota_mode: p.quota_mode, share_threshold: p.share_threshold,
      description: description.value,
    };
    await save(spec, `Saved ${name}.`);
  });

  async function save(spec, done) {
    try {
      await api("PUT", path, spec, { "if-match": etag });
      say(done);
      location.hash = `#/policies/${seg(domain)}/${seg(name)}`;
      await detail(body, session, domain, name);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      const rest = showFieldErrors(form, err.problem.errors);
      formError.textContent = [err.message, ...rest.map((x) => `${x.field}: ${x.message}`)].join(" · ");
      say(`Not saved: ${err.message}`, "error");
    }
  }

  const { data: history } = await api("GET", `${path}/history?limit=50`);
  const changes = h("section", { class: "card", "aria-labelledby": "history-title" }, h("h2", { id: "history-title" }, "History"),
    history.items.length ? h("ol", { class: "history" }, history.items.map((c) => h("li", {},
      h("p", {}, `Revision ${c.revision}: ${c.action} by ${c.actor} at ${c.at}`),
      diffView(c.before, c.after),
      editable && c.after && c.revision !== p.revision
        ? h("button", { type: "button", onclick: () => save(c.after, `Rolled ${name} back to revision ${c.revision}.`) }, `Roll back to revision ${c.revision}`)
        : null))) : h("p", { class: "empty" }, "No changes recorded."));
  replace(body, h("p", {}, h("a", { href: `#/policies/${seg(domain)}` }, `← all policies of ${domain}`)), form, changes);
}

/** A line diff of two policies as JSON (longest common subsequence). */
export function diffLines(a, b) {
  const x = a ? JSON.stringify(a, null, 2).split("\n") : [];
  const y = b ? JSON.stringify(b, null, 2).split("\n") : [];
  const n = x.length, m = y.length;
  const L = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
    L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { out.push([" ", x[i]]); i++; j++; }
    else if (i < n && (j === m || L[i + 1][j] >= L[i][j + 1])) { out.push(["-", x[i]]); i++; }
    else { out.push(["+", y[j]]); j++; }
  }
  return out;
}

function diffView(before, after) {
  return h("pre", { class: "diff", "aria-label": "Changes" }, diffLines(before, after)
    .map(([k, line]) => h("span", { class: k === "+" ? "add" : k === "-" ? "del" : "same" }, `${k} ${line}\n`)));
}
