// Talking to pvhpc's native API: one function per request the page makes. A refusal is an ApiError in words for
// the person at the page, with the request field it names (the form shows it next to that field).
// Every URL is relative, so the page works below a front end's path prefix.

export const NOT_LOGGED_IN = "You are not logged in. Open this page through your center's login page.";

export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }
}

async function request(method, path, data) {
  const options = { method, headers: { Accept: "application/json" } };
  if (data !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(data);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    throw new ApiError(0, "pvhpc cannot be reached. Check your connection and try again.");
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    answer = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, plainError(response.status, answer), answer && answer.field);
  }
  return answer;
}

// The API's error in words for the person at the form: without the field name (the error sits next to
// the field), and with what to do where the status says more than the message.
function plainError(status, answer) {
  let text = answer && answer.error ? String(answer.error) : `The request failed (HTTP ${status}).`;
  if (answer && answer.field && text.startsWith(answer.field + ": ")) text = text.slice(answer.field.length + 2);
  if (status === 401) return NOT_LOGGED_IN;
  if (status === 503) text += ". Please try again in a minute.";
  return text.charAt(0).toUpperCase() + text.slice(1);
}

const sessionPath = (id) => `api/v1/sessions/${encodeURIComponent(id)}`;

export const api = {
  applications: () => request("GET", "api/v1/applications"),
  partitions: () => request("GET", "api/v1/partitions"),
  // all: every user's sessions (staff only).
  sessions: (all) => request("GET", `api/v1/sessions${all ? "?all=1" : ""}`),
  session: (id) => request("GET", sessionPath(id)),
  launch: (body) => request("POST", "api/v1/sessions", body),
  cancel: (id) => request("DELETE", sessionPath(id)),
  log: (id) => request("GET", `${sessionPath(id)}/log`),
  // More time for a running session: its walltime grows by minutes where the site allows.
  extend: (id, minutes) => request("POST", `${sessionPath(id)}/extend`, { minutes }),
  // The ParaView states sessions saved when their jobs were ended.
  savedStates: () => request("GET", "api/v1/saved-states"),
  // One directory of an application's data roots (root: the root's index; path: relative to it).
  files: (application, root, path) => request(
    "GET", `api/v1/applications/${encodeURIComponent(application)}/files?${new URLSearchParams({ root: String(root), path })}`),
  // Whom a session is shared with; share it ({user|group, role}); revoke a share (kind: "user" or "group").
  shares: (id) => request("GET", `${sessionPath(id)}/shares`),
  share: (id, body) => request("POST", `${sessionPath(id)}/shares`, body),
  unshare: (id, name, kind) => request(
    "DELETE", `${sessionPath(id)}/shares/${encodeURIComponent(name)}${kind === "group" ? "?kind=group" : ""}`),
  // The session's states and warnings as they happen (server-sent events).
  events: (id) => new EventSource(`${sessionPath(id)}/events`),
};
