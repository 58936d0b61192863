// The public HTTP API, as the page uses it. The login token lives in an HttpOnly cookie set by
// POST /auth/session, so no script ever holds it; state-changing calls carry the header the
// service asks of cookie-authenticated requests.
import { acceptLanguage } from "./i18n.js";

const CSRF = { "X-Requested-With": "qwen-image" };
const SAFE = new Set(["GET", "HEAD"]);

/** An API error: ``detail`` is the service's own message. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

/** Calls the API (paths are relative to the page, so it works under any route prefix). */
export async function api(path, { method = "GET", json, form, query, raw = false } = {}) {
  const headers = { "Accept-Language": acceptLanguage() };
  if (!SAFE.has(method)) Object.assign(headers, CSRF);
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.set(k, v);
    const text = params.toString();
    if (text) url += "?" + text;
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body, credentials: "same-origin" });
  } catch (err) {
    throw new ApiError(0, String(err.message || err));
  }
  if (!response.ok) {
    let detail = `HTTP ${response.status}`;
    try {
      const data = await response.json();
      if (data && data.detail !== undefined) detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    } catch { /* not JSON: keep the status line */ }
    throw new ApiError(response.status, detail);
  }
  if (raw) return response;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response;
}

let eventsRoute;

/** Whether the service has the task event stream (asked once, from its OpenAPI description, so
 * the check itself never shows an error in the console). */
export async function hasEventStream() {
  if (eventsRoute === undefined) {
    eventsRoute = api("openapi.json").then((doc) => Boolean(doc.paths && doc.paths["/tasks/{task_id}/events"]))
      .catch(() => false);
  }
  return eventsRoute;
}

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

/**
 * Follows one task until it ends, calling ``onUpdate`` with
 * {status, position, percent, step, total, preview, seed, error}. Uses GET /tasks/{id}/events
 * where the service has it, else polls GET /tasks/{id}. Returns a function that stops watching.
 */
export function watchTask(taskId, onUpdate) {
  let stopped = false;
  let source = null;
  let timer = null;
  const stop = () => {
    stopped = true;
    if (source) source.close();
    if (timer) clearTimeout(timer);
  };

  const poll = async () => {
    if (stopped) return;
    try {
      const s = await api(`tasks/${encodeURIComponent(taskId)}`);
      const p = s.progress || {};
      onUpdate({ status: s.status, position: s.position_in_queue, percent: p.percent ?? 0,
        current_step: p.current_step, total_steps: p.total_steps, seed: s.seed, error: s.error });
      if (TERMINAL.has(s.status)) { stop(); return; }
    } catch (err) {
      if (err.status === 404 || err.status === 401) { onUpdate({ status: "failed", error: err.detail }); stop(); return; }
    }
    timer = setTimeout(poll, 700);
  };

  const stream = () => {
    let received = false;
    source = new EventSource(`tasks/${encodeURIComponent(taskId)}/events`);
    const on = (name, handler) => source.addEventListener(name, (event) => {
      received = true;
      let data = {};
      try { data = JSON.parse(event.data); } catch { /* keep {} */ }
      handler(data);
    });
    on("queued", (d) => onUpdate({ status: "pending", position: d.position }));
    on("started", () => onUpdate({ status: "running", position: 0 }));
    on("progress", (d) => onUpdate({ status: "running", percent: d.percent, current_step: d.current_step,
      total_steps: d.total_steps }));
    on("preview", (d) => onUpdate({ status: "running", preview: `data:${d.media_type};base64,${d.b64}` }));
    on("completed", (d) => { stop(); onUpdate({ status: "completed", percent: 100, seed: d.seed }); });
    on("failed", (d) => { stop(); onUpdate({ status: "failed", error: d.error }); });
    on("cancelled", () => { stop(); onUpdate({ status: "cancelled" }); });
    source.onerror = () => {
      // A stream that cannot open (or closed for good) hands over to polling; a dropped one that
      // the browser is reconnecting (CONNECTING) is left to do so.
      if (stopped || (received && source.readyState === EventSource.CONNECTING)) return;
      source.close();
      poll();
    };
  };

  hasEventStream().then((yes) => { if (!stopped) (yes ? stream : poll)(); });
  return stop;
}
