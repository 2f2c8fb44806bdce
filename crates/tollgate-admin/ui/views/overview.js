// Per domain: allowed and denied decisions per second over the last minutes (this
// node), and the health of the store and the event broker.
import { api } from "../api.js";
import { h, replace, say } from "../dom.js";

// A tick's label: the local time of day to the second.
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

export function render(main) {
  const health = h("section", { "aria-labelledby": "health-title", class: "card" }, h("h2", { id: "health-title" }, "Health"));
  const charts = h("div", { class: "charts" });
  replace(main, h("h1", {}, "Overview"), health, charts);
  const plots = new Map();

  async function refresh() {
    let o;
    try { ({ data: o } = await api("GET", "/v1/admin/overview")); } catch (e) { say(e.message, "error"); return; }
    const ok = (b) => h("span", { class: b ? "ok" : "bad" }, b ? "up" : "down");
    replace(health, h("h2", { id: "health-title" }, "Health"), h("dl", { class: "health" },
      h("dt", {}, `Store (${o.health.store})`), h("dd", { "data-testid": "store-health" }, ok(o.health.store_available)),
      h("dt", {}, "Ready for traffic"), h("dd", {}, ok(o.health.ready), o.health.not_ready ? ` (${o.health.not_ready})` : ""),
      o.health.events_connected === undefined ? [] : [h("dt", {}, "Event broker"), h("dd", {}, ok(o.health.events_connected), ` · outbox ${o.health.outbox_backlog}`)]));
    if (!o.domains.length) replace(charts, h("p", { class: "empty" }, "No domains configured that you may read."));
    for (const d of o.domains) {
      const xs = d.points.map((p) => p.at_ms / 1000);
      const data = [xs, d.points.map((p) => p.allowed), d.points.map((p) => p.denied)];
      let entry = plots.get(d.domain);
      if (!entry) {
        const box = h("div", { class: "chart", role: "img" });
        const summary = h("p", { class: "summary" });
        charts.append(h("section", { class: "card", "aria-label": `Domain ${d.domain}` }, h("h2", {}, d.domain), summary, box));
        const width = Math.max(280, Math.min(box.clientWidth || 560, 900));
        const plot = window.uPlot ? new window.uPlot({
          width, height: 180,
          series: [{}, { label: "allowed/s", stroke: "#2b7a3d", fill: "rgba(43,122,61,.12)" }, { label: "denied/s", stroke: "#b3261e", fill: "rgba(179,38,30,.12)" }],
          axes: [{ space: 80, values: (u, ticks) => ticks.map(clock) }, { label: "per second" }],
          // At least the last two minutes, so a young node's axis reads in minutes.
          scales: { x: { time: true, range: (u, min, max) => [Math.min(min, max - 120), max] } },
        }, data, box) : null;
        entry = { plot, box, summary };
        plots.set(d.domain, entry);
      } else if (entry.plot) {
        entry.plot.setData(data);
      }
      const last = d.points.length ? d.points[d.points.length - 1] : { allowed: 0, denied: 0 };
      entry.box.setAttribute("aria-label", `${d.domain}: ${last.allowed} allowed and ${last.denied} denied in the last second`);
      replace(entry.summary, `Last 5 minutes: ${d.allowed} allowed, ${d.denied} denied. Last second: `,
        h("span", { "data-testid": `allowed-${d.domain}` }, String(last.allowed)), " allowed, ",
        h("span", { "data-testid": `denied-${d.domain}` }, String(last.denied)), " denied.");
    }
  }
  refresh();
  const timer = setInterval(refresh, 2000);
  return () => clearInterval(timer);
}
