// The admin API as the dashboard calls it: the session cookie authenticates, every
// change carries the session's CSRF token, errors are RFC 9457 problems.

let csrf = null;
let onSignedOut = () => {};

/** Remembers the session's CSRF token and what to do when the session ends. */
export function useSession(token, signedOut) {
  csrf = token;
  if (signedOut) onSignedOut = signedOut;
}

/** A refused call: its status and problem document. */
export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

/** One call; resolves to `{data, etag}`. */
export async function api(method, path, body, headers = {}) {
  const h = { accept: "application/json", ...headers };
  if (body !== undefined) h["content-type"] = "application/json";
  if (csrf && method !== "GET") h["x-csrf-token"] = csrf;
  const r = await fetch(path, {
    method, headers: h, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!r.ok) {
    if (r.status === 401 && !path.startsWith("/ui/session")) onSignedOut();
    throw new ApiError(r.status, data);
  }
  return { data, etag: r.headers.get("etag") };
}

/** A path segment, escaped. */
export const seg = encodeURIComponent;

/**
 * A GraphQL subscription over `graphql-transport-ws` (the cookie authenticates the
 * socket). Calls `next(data)` per event; returns a function that stops it.
 */
export function subscribe(query, variables, next, failed) {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql/ws`;
  const ws = new WebSocket(url, "graphql-transport-ws");
  let open = true;
  ws.addEventListener("open", () => ws.send(JSON.stringify({ type: "connection_init", payload: {} })));
  ws.addEventListener("message", (m) => {
    let msg;
    try { msg = JSON.parse(m.data); } catch { return; }
    if (msg.type === "connection_ack") {
      ws.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query, variables } }));
    } else if (msg.type === "next" && msg.payload) {
      if (msg.payload.errors) failed(msg.payload.errors.map((e) => e.message).join("; "));
      else next(msg.payload.data);
    } else if (msg.type === "error") {
      failed((msg.payload || []).map((e) => e.message).join("; "));
    } else if (msg.type === "ping") {
      ws.send(JSON.stringify({ type: "pong" }));
    }
  });
  ws.addEventListener("close", (e) => { if (open) failed(`live connection closed (${e.code})`); });
  return () => { open = false; ws.close(); };
}
