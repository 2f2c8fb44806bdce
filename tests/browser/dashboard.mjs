// The dashboard in a real browser: playwright-core driving the system's Chromium against
// a running `tollgate serve`. Run by crates/tollgate-server/tests/it/dashboard.rs, which
// starts the server, creates the domain, policies and keys, and passes in:
//   TOLLGATE_ADMIN, TOLLGATE_DATA   the admin and data listeners' base URLs
//   ADMIN_KEY, VIEWER_KEY           an admin key of every domain, a viewer key
//   MODULES                         target/browser/node_modules (scripts/browser-tools)
//   CHROMIUM                        the browser's executable
//   SHOTS                           where the screenshots go
//   LOAD_SECONDS (optional)         run a background load this long before the first
//                                   screenshot, and on through the run (for the
//                                   screenshots in docs/: scripts/dashboard-screenshots)
// Every wait is for an event (an element, a response, a decision) under a ceiling; the
// script exits non-zero naming the first step that did not happen.
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const ADMIN = env("TOLLGATE_ADMIN");
const DATA = env("TOLLGATE_DATA");
const SHOTS = env("SHOTS");
const { chromium } = createRequire(`${env("MODULES")}/`)("playwright-core");
const CEILING = 30_000;
const XSS = "<img src=x onerror=alert(1)>";
mkdirSync(SHOTS, { recursive: true });

function check(cond, what) {
  if (!cond) throw new Error(`expected: ${what}`);
  console.log(`ok - ${what}`);
}

async function decide(user) {
  const r = await fetch(`${DATA}/v1/check`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    // Every check also meets the shadow-mode policy on plan=free (1 a minute).
    body: JSON.stringify({ domain: "shop", descriptors: [{ entries: [{ key: "user", value: user }] }, { entries: [{ key: "plan", value: "free" }] }] }),
  });
  return (await r.json()).allowed;
}

// A background load on the data plane: a few users much busier than the rest, so the
// charts, heavy hitters and shadow report show something worth reading. Bounded in count
// and time; stopped at the end of the run.
const LOAD_SECONDS = Number(process.env.LOAD_SECONDS || 0);
let loadStop = false;
function startLoad() {
  // One request in five is mallory's, one in ten bob's, one in twenty carol's; the rest
  // spread over 400 users.
  const pick = (n, w) => {
    const r = (n * 7919 + w * 104729) % 100;
    return r < 20 ? "mallory" : r < 30 ? "bob" : r < 35 ? "carol" : `u${1 + ((n * 31 + w * 97) % 400)}`;
  };
  const end = Date.now() + (LOAD_SECONDS + 300) * 1000;
  const worker = async (w) => {
    for (let n = 0; n < 200_000 && !loadStop && Date.now() < end; n++) {
      const user = pick(n, w);
      const descriptors = [{ entries: [{ key: "user", value: user }] }, { entries: [{ key: "plan", value: "free" }] }];
      if (n % 3 === 0) descriptors.push({ entries: [{ key: "path", value: "/x" }] });
      await fetch(`${DATA}/v1/check`, {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ domain: "shop", descriptors }),
      }).then((r) => r.arrayBuffer()).catch(() => {});
      await new Promise((r) => setTimeout(r, 5 + ((n * 31 + w) % 40)));
    }
  };
  return Promise.all([0, 1, 2, 3].map(worker));
}

async function until(what, probe) {
  const end = Date.now() + CEILING;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`never happened: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function signIn(browser, key, viewport) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const dialogs = [];
  page.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss(); });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // Refused calls the steps make on purpose (401, 403, 400) log "Failed to load
  // resource"; anything else logged as an error is a defect.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text());
  });
  const started = Date.now();
  await page.goto(`${ADMIN}/ui`);
  await page.getByLabel("API key or token").waitFor({ timeout: CEILING });
  const interactive = Date.now() - started;
  return { context, page, dialogs, errors, interactive };
}

async function submitSignIn(page, key) {
  await page.getByLabel("API key or token").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("link", { name: "Overview" }).waitFor({ timeout: CEILING });
}

let current = null;
const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  // Sign in; the cookie is HttpOnly and SameSite=Strict.
  const admin = await signIn(browser, env("ADMIN_KEY"), { width: 1280, height: 800 });
  const { page } = admin;
  current = page;
  console.log(`# first view interactive after ${admin.interactive} ms`);
  await page.screenshot({ path: `${SHOTS}/sign-in.png` });
  await page.getByLabel("API key or token").fill("tg_nosuchkey_wrong");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("Sign-in failed").waitFor({ timeout: CEILING });
  check(true, "a wrong key is refused with a message");
  await submitSignIn(page, env("ADMIN_KEY"));
  const cookie = (await admin.context.cookies()).find((c) => c.name === "tg_session");
  check(cookie && cookie.httpOnly && cookie.sameSite === "Strict" && cookie.expires > Date.now() / 1000,
    "the session cookie is HttpOnly, SameSite=Strict, with an expiry");
  check(!(await page.evaluate(() => document.cookie)).includes("tg_session"), "scripts cannot read the session cookie");

  const load = LOAD_SECONDS > 0 ? startLoad() : null;
  if (load) await new Promise((r) => setTimeout(r, LOAD_SECONDS * 1000));

  // Overview: the chart shows the domain's decisions.
  for (let i = 0; i < 3; i++) await decide("warmup");
  await page.getByRole("heading", { name: "shop" }).waitFor({ timeout: CEILING });
  await until("the overview counts shop's decisions", async () =>
    (await page.locator("section[aria-label='Domain shop'] .summary").textContent()).match(/Last 5 minutes: [1-9]/));
  await page.locator(".uplot").first().waitFor({ timeout: CEILING });
  check(true, "the overview charts shop's decisions");
  await page.screenshot({ path: `${SHOTS}/overview.png`, fullPage: true });

  // Policies: a name that is markup renders as text.
  await page.getByRole("link", { name: "Policies" }).click();
  await page.getByRole("link", { name: XSS }).waitFor({ timeout: CEILING });
  check((await page.locator("main img").count()) === 0, "a policy named like markup renders as text, not an element");
  await page.screenshot({ path: `${SHOTS}/policies.png`, fullPage: true });

  // Field errors from the API appear at the field.
  await page.getByRole("link", { name: "per_user", exact: true }).click();
  const rpu = page.getByLabel("Requests per unit");
  await rpu.waitFor({ timeout: CEILING });
  await page.getByLabel("Algorithm").selectOption("gcra");
  await page.getByLabel("Burst (GCRA)").fill("0");
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("[aria-invalid='true']").first().waitFor({ timeout: CEILING });
  const invalid = await page.locator("[aria-invalid='true']").first().getAttribute("name");
  const message = await page.locator(`[id='f-${invalid.replace(/[^a-z0-9]/gi, "-")}-error']`).textContent();
  check(invalid.startsWith("rate_limit.") && message.length > 0, `the API's error is shown at its field (${invalid}: ${message})`);
  await page.screenshot({ path: `${SHOTS}/policy-error.png`, fullPage: true });

  // Lower the limit in the UI; the next check on the data plane is denied.
  check(await decide("alice"), "alice's first check passes under 5 per minute");
  await page.goto(`${ADMIN}/ui#/policies/shop/per_user`);
  await rpu.waitFor({ timeout: CEILING });
  await page.getByLabel("Algorithm").selectOption("");
  await page.getByLabel("Burst (GCRA)").fill("");
  await rpu.fill("1");
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByText("Saved per_user.").waitFor({ timeout: CEILING });
  await until("the lowered limit denies alice's next check", async () => !(await decide("alice")));
  check(true, "after lowering the limit to 1 in the UI, the next check is denied");
  await page.getByRole("button", { name: /Roll back to revision/ }).first().waitFor({ timeout: CEILING });
  await page.screenshot({ path: `${SHOTS}/policy-history.png`, fullPage: true });

  // A forged change without the CSRF token is refused, even for an admin's session.
  const forged = await page.evaluate(async () => {
    const r = await fetch("/v1/admin/domains/shop/policies/per_user", {
      method: "DELETE", credentials: "same-origin",
    });
    return r.status;
  });
  check(forged === 403, `a change without the CSRF token gets 403 (got ${forged})`);

  // Live decisions: a denial appears.
  await page.getByRole("link", { name: "Live decisions" }).click();
  await page.getByText("Watching shop.").waitFor({ timeout: CEILING });
  await until("a denial in the live view", async () => {
    await decide("alice");
    return (await page.locator("tr.denied-row").count()) > 0;
  });
  check(true, "a denial appears in the live view");
  check((await page.locator("tr.shadow-row").count()) > 0, "a shadow-mode policy's would-be denial is marked as such");
  await page.getByRole("button", { name: "Pause" }).click();
  const frozen = await page.locator("tbody tr").count();
  await decide("alice");
  await until("the paused count moves", async () => (await page.getByText(/decisions seen \(paused\)/).count()) > 0);
  check((await page.locator("tbody tr").count()) === frozen, "pause keeps the list still");
  await page.screenshot({ path: `${SHOTS}/live.png`, fullPage: true });

  // Heavy hitters and the shadow report (usage intervals are 1 s in this test).
  for (let i = 0; i < 5; i++) await decide("mallory");
  await page.getByRole("link", { name: "Heavy hitters & shadow" }).click();
  await until("heavy hitters of per_user", async () => {
    await page.reload();
    await page.getByRole("heading", { name: "Heavy hitters & shadow" }).waitFor({ timeout: CEILING });
    return (await page.getByText("user=mallory").count()) > 0 && (await page.getByRole("cell", { name: "per_user_shadow" }).count()) > 0;
  });
  check(true, "heavy hitters and the shadow report show the load");
  await page.screenshot({ path: `${SHOTS}/usage.png`, fullPage: true });

  // API keys: create (shown once), revoke.
  await page.getByRole("link", { name: "API keys" }).click();
  await page.getByLabel("Name", { exact: true }).fill("made in the browser");
  const day = (offset) => new Date(Date.now() + offset * 86_400_000).toISOString().slice(0, 10);
  await page.getByLabel(/^Expires/).fill(day(-2));
  await page.getByRole("button", { name: "Create key" }).click();
  await page.locator("[name='expires_at'][aria-invalid='true']").waitFor({ timeout: CEILING });
  check(true, "an expiry in the past is refused at its field");
  await page.getByLabel(/^Expires/).fill(day(30));
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = await page.getByTestId("new-secret").textContent({ timeout: CEILING });
  check(/^tg_[a-z0-9]+_/.test(secret), "a new key's secret is shown once");
  await page.getByRole("cell", { name: new RegExp(`^${day(30)}T23:59:59`) }).first().waitFor({ timeout: CEILING });
  check(true, "the new key is listed with its expiry");
  await page.screenshot({ path: `${SHOTS}/keys.png`, fullPage: true });
  const id = secret.split("_")[1];
  await page.getByRole("button", { name: new RegExp(`Revoke key ${id}`) }).click();
  await page.getByText(`Revoked ${id}.`).waitFor({ timeout: CEILING });
  check(true, "the key is revoked from the list");

  // The audit log, paged.
  await page.getByRole("link", { name: "Audit log" }).click();
  await page.getByRole("cell", { name: "policy.put" }).first().waitFor({ timeout: CEILING });
  check((await page.getByRole("cell", { name: "unauthenticated" }).count()) > 0, "the failed sign-in is in the audit log");
  await page.screenshot({ path: `${SHOTS}/audit.png`, fullPage: true });

  // Sign out ends the session on the server too.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("API key or token").waitFor({ timeout: CEILING });
  const after = await page.evaluate(async () => (await fetch("/ui/session")).status);
  check(after === 401, "after sign-out the session is gone");
  check(admin.dialogs.length === 0, "no script ran from data (no dialogs)");
  check(admin.errors.length === 0, `no errors in the console (${admin.errors.join("; ")})`);

  // A viewer: sees, cannot edit; the server refuses an edit anyway.
  const viewer = await signIn(browser, env("VIEWER_KEY"), { width: 390, height: 844 });
  current = viewer.page;
  await submitSignIn(viewer.page, env("VIEWER_KEY"));
  check((await viewer.page.getByRole("link", { name: "API keys" }).count()) === 0, "a viewer has no keys view");
  await viewer.page.goto(`${ADMIN}/ui#/policies/shop/per_user`);
  await viewer.page.getByText("Your role may read this policy, not change it.").waitFor({ timeout: CEILING });
  check(await viewer.page.getByLabel("Requests per unit").isDisabled(), "a viewer's form is read-only");
  check((await viewer.page.getByRole("button", { name: "Save" }).count()) === 0, "a viewer has no Save button");
  const refused = await viewer.page.evaluate(async () => {
    const s = await (await fetch("/ui/session")).json();
    const r = await fetch("/v1/admin/domains/shop/policies/per_user", {
      method: "DELETE", headers: { "x-csrf-token": s.csrf }, credentials: "same-origin",
    });
    return r.status;
  });
  check(refused === 403, `the server refuses a viewer's change (got ${refused})`);
  await viewer.page.screenshot({ path: `${SHOTS}/viewer-phone.png`, fullPage: true });
  check(viewer.errors.length === 0, `no errors in the viewer's console (${viewer.errors.join("; ")})`);
  loadStop = true;
  if (load) await load;
  console.log("# all dashboard checks passed");
} catch (e) {
  // What the page showed when a step did not happen.
  if (current) {
    console.log(`# page at ${current.url()}: ${await current.locator("body").innerText().catch(() => "?")}`);
    await current.screenshot({ path: `${SHOTS}/failure.png`, fullPage: true }).catch(() => {});
  }
  throw e;
} finally {
  loadStop = true;
  await browser.close();
}
