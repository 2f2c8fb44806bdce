// API keys (admins of every domain): the list, create (the secret shown once), revoke.
import { api, ApiError, seg } from "../api.js";
import { field, h, replace, say, showFieldErrors, table } from "../dom.js";

export async function render(main) {
  const name = h("input", { type: "text", required: true, maxlength: 128 });
  const role = h("select", {}, ["viewer", "editor", "admin"].map((r) => h("option", { value: r }, r)));
  const domains = h("input", { type: "text", value: "*", required: true });
  // A date: the key stops working at the end of that day (UTC); empty for never.
  const expires = h("input", { type: "date" });
  const error = h("p", { class: "error", role: "alert" });
  const secret = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "card", "aria-labelledby": "new-key" }, h("h2", { id: "new-key" }, "New key"),
    field("Name", name, "name"), field("Role", role, "role"), field("Domains (comma-separated, * for all)", domains, "domains"),
    field("Expires (optional, end of day UTC)", expires, "expires_at"),
    error, h("button", { type: "submit" }, "Create key"));
  const list = h("div");
  replace(main, h("h1", {}, "API keys"), form, secret, list);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const { data } = await api("POST", "/v1/admin/keys", {
        name: name.value, role: role.value, domains: domains.value.split(",").map((d) => d.trim()).filter(Boolean),
        ...(expires.value ? { expires_at: `${expires.value}T23:59:59Z` } : {}),
      });
      showFieldErrors(form, []);
      error.textContent = "";
      replace(secret, h("section", { class: "card secret" }, h("h2", {}, "Store this key now: it is shown only once"),
        h("code", { "data-testid": "new-secret" }, data.key)));
      name.value = "";
      expires.value = "";
      await load();
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      const rest = showFieldErrors(form, err.problem.errors);
      error.textContent = [err.message, ...rest.map((x) => `${x.field}: ${x.message}`)].join(" · ");
    }
  });
  async function load() {
    const { data } = await api("GET", "/v1/admin/keys?limit=200");
    replace(list, table("Keys", ["Id", "Name", "Role", "Domains", "Created", "Expires", "Last used", "State"], data.items.map((k) => [
      k.id, k.name, k.role, k.domains.join(", "), `${k.created_at} by ${k.created_by}`, k.expires_at || "never", k.last_used_at || "never",
      k.revoked_at ? `revoked ${k.revoked_at}` : h("button", { type: "button", "aria-label": `Revoke key ${k.id} (${k.name})`, onclick: async () => {
        try { await api("DELETE", `/v1/admin/keys/${seg(k.id)}`); say(`Revoked ${k.id}.`); await load(); } catch (err) { say(err.message, "error"); }
      } }, "Revoke"),
    ])));
  }
  await load();
}
