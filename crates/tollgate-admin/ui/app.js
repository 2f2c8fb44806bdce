// The dashboard's shell: sign-in, the navigation, and one view at a time by the URL's
// hash (#/overview, #/policies, ...). Views are modules with `render(main, session)`;
// one may return a function that stops it (a live feed, a timer).
import { api, ApiError, useSession } from "./api.js";
import { h, replace, say } from "./dom.js";
import * as overview from "./views/overview.js";
import * as policies from "./views/policies.js";
import * as live from "./views/live.js";
import * as usage from "./views/usage.js";
import * as keys from "./views/keys.js";
import * as audit from "./views/audit.js";

const VIEWS = [
  { path: "overview", title: "Overview", view: overview },
  { path: "policies", title: "Policies", view: policies },
  { path: "live", title: "Live decisions", view: live },
  { path: "usage", title: "Heavy hitters & shadow", view: usage },
  { path: "keys", title: "API keys", view: keys, admin: true },
  { path: "audit", title: "Audit log", view: audit, admin: true },
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let session = null;
let stop = null;

/** Whether the session may see the admin-only views (admin of every domain). */
export const isGlobalAdmin = (s) => s.role === "admin" && s.domains.includes("*");

function signedOut(message) {
  session = null;
  nav.hidden = true;
  replace(who);
  if (stop) { stop(); stop = null; }
  const credential = h("input", { type: "password", autocomplete: "current-password", required: true });
  credential.id = "credential";
  const error = h("p", { class: "error", role: "alert" }, message || "");
  const form = h("form", { class: "card sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in"),
    h("p", {}, "An API key (tg_…) or a JWT. The dashboard keeps a session cookie; the key stays on the server."),
    h("label", { for: "credential" }, "API key or token"), credential, error,
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const { data } = await api("POST", "/ui/session", { credential: credential.value });
      credential.value = "";
      signedIn(data);
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 429
        ? "Too many attempts from this address; wait and try again."
        : `Sign-in failed: ${err.message}`;
      credential.focus();
    }
  });
  replace(main, form);
  credential.focus();
}

function signedIn(s) {
  session = s;
  useSession(s.csrf, () => signedOut("Your session ended; sign in again."));
  replace(nav, h("ul", {}, VIEWS.filter((v) => !v.admin || isGlobalAdmin(s)).map((v) =>
    h("li", {}, h("a", { href: `#/${v.path}`, "data-view": v.path }, v.title)))));
  nav.hidden = false;
  const out = h("button", { type: "button", class: "link" }, "Sign out");
  out.addEventListener("click", async () => {
    try { await api("DELETE", "/ui/session"); } catch { /* gone already */ }
    signedOut("Signed out.");
  });
  replace(who, h("span", {}, `${s.name} · ${s.role}`), out);
  route();
}

function route() {
  if (!session) return;
  const [path, ...rest] = location.hash.replace(/^#\//, "").split("/");
  const found = VIEWS.find((v) => v.path === path && (!v.admin || isGlobalAdmin(session))) || VIEWS[0];
  for (const a of nav.querySelectorAll("a")) {
    if (a.dataset.view === found.path) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (stop) { stop(); stop = null; }
  document.title = `${found.title} · Tollgate`;
  replace(main);
  say("");
  Promise.resolve(found.view.render(main, session, rest.map(decodeURIComponent)))
    .then((s) => { stop = typeof s === "function" ? s : null; })
    .catch((err) => say(`Could not load ${found.title}: ${err.message}`, "error"));
  main.focus({ preventScroll: true });
}

window.addEventListener("hashchange", route);

api("GET", "/ui/session").then(({ data }) => signedIn(data)).catch(() => signedOut());
