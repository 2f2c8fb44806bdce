// Building the page without HTML strings: every text goes in as a text node, so a
// value such as a policy name can never become markup.

/** An element: `h("button", {onclick, class: "x"}, "Save")`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces what `el` holds. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** A table with a caption, headers and rows of cells. */
export function table(caption, headers, rows) {
  return h("table", {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.length
      ? rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))
      : h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, "Nothing yet"))));
}

/** Announces `text` to screen readers and shows it briefly. */
export function say(text, kind = "info") {
  const s = document.getElementById("status");
  s.className = `status ${kind}`;
  s.textContent = text;
}

/** A labelled form field; `error` is where the API's message for it goes. */
export function field(label, input, name) {
  const id = `f-${name.replace(/[^a-z0-9]/gi, "-")}`;
  input.id = id;
  input.name = name;
  const err = h("span", { class: "field-error", id: `${id}-error` });
  input.setAttribute("aria-describedby", err.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), input, err);
}

/** Shows each of a problem's field errors beside its field in `form`; returns those shown. */
export function showFieldErrors(form, errors) {
  for (const e of form.querySelectorAll(".field-error")) e.textContent = "";
  for (const i of form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
  const unplaced = [];
  for (const e of errors || []) {
    const input = form.querySelector(`[name="${CSS.escape(e.field)}"]`);
    if (!input) { unplaced.push(e); continue; }
    input.setAttribute("aria-invalid", "true");
    document.getElementById(`${input.id}-error`).textContent = e.message;
  }
  return unplaced;
}
