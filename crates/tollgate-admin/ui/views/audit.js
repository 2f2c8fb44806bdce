// The audit log, newest first, a page at a time, optionally by action.
import { api } from "../api.js";
import { field, h, replace, table } from "../dom.js";

const PAGE = 50;

export async function render(main) {
  const action = h("input", { type: "search", placeholder: "e.g. policy.put, authenticate" });
  const body = h("div");
  const older = h("button", { type: "button" }, "Older entries");
  replace(main, h("h1", {}, "Audit log"), field("Action", action, "action"), body, older);
  let cursor = null, rows = [];
  async function load(reset) {
    if (reset) { cursor = null; rows = []; }
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (cursor) q.set("cursor", cursor);
    if (action.value.trim()) q.set("action", action.value.trim());
    const { data } = await api("GET", `/v1/admin/audit?${q}`);
    rows = rows.concat(data.items);
    cursor = data.next_cursor || null;
    older.hidden = !cursor;
    replace(body, table(`Audit entries (${rows.length} shown)`, ["When", "Who", "Via", "Action", "Target", "From", "Outcome", "Detail"],
      rows.map((e) => [e.at, e.actor, e.via, e.action, e.target, e.remote, h("span", { class: e.outcome === "ok" ? "ok" : "bad" }, e.outcome), e.detail])));
  }
  action.addEventListener("change", () => load(true));
  older.addEventListener("click", () => load(false));
  await load(true);
}
