// The session page: the launch form, the current session (its states pushed over server-sent events,
// its view once ready), and the user's running and past sessions. Everything comes from the native API;
// every URL is relative so the page works below a front end's path prefix.

import { RemoteView } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const body = document.body;
const USER = body.dataset.user;
const STAFF = body.dataset.staff === "true";
const FIELDS = ["application", "partition", "gpus", "walltime", "nodes", "ranks", "account", "qos", "data", "state"];
const LISTS_EVERY_MS = 30000;

const STATE_WORDS = {
  submitting: "Submitting", queued: "Queued", starting: "Starting", ready: "Ready",
  unknown: "Unknown (the scheduler does not answer)", ended: "Ended",
};
const END_WORDS = {
  cancelled: "Cancelled by its user", cancelled_outside: "Cancelled outside pvhpc", completed: "Finished",
  walltime: "Walltime reached", failed: "Failed", start_failed: "Server could not start",
  start_timeout: "Server did not start in time", node_failure: "Node failure", preempted: "Preempted",
  out_of_memory: "Out of memory", submit_failed: "Could not be submitted", lost: "Lost",
  idle: "Stopped after no one used it",
};

let applications = [];
let partitions = [];
const FOLLOW_AGAIN_MS = 15000;   // after the service refused a session's event stream (429)
let current = null;        // {id, session, events: EventSource|null, view: RemoteView|null, lastState}
let browse = { root: 0, path: "" };

// -- talking to the API ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }
}

async function api(method, path, data) {
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
  if (status === 401) return "You are not logged in. Open this page through your center's login page.";
  if (status === 503) text += ". Please try again in a minute.";
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// -- small helpers ---------------------------------------------------------------------------------

function announce(text) {
  // Clear first so that the same words said twice are read twice.
  const region = $("status");
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

function showPageError(text) {
  const p = $("page-error");
  p.textContent = text;
  p.hidden = !text;
}

function formatMinutes(minutes) {
  const days = Math.floor(minutes / 1440);
  const hours = Math.floor((minutes % 1440) / 60);
  const mins = minutes % 60;
  const hm = `${String(hours).padStart(2, "0")}:${String(mins).padStart(2, "0")}:00`;
  return days ? `${days}-${hm}` : hm;
}

function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function fromNow(iso) {
  const minutes = Math.round((new Date(iso) - Date.now()) / 60000);
  if (minutes <= 0) return "now";
  if (minutes < 90) return `in about ${minutes} min`;
  return `in about ${Math.round(minutes / 60)} h`;
}

function element(tag, text, attributes = {}) {
  const el = document.createElement(tag);
  if (text !== undefined && text !== null) el.textContent = text;
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, value);
  return el;
}

function fillSelect(select, values, chosen) {
  select.replaceChildren(...values.map(([value, label]) => {
    const option = element("option", label, { value });
    if (value === chosen) option.selected = true;
    return option;
  }));
}

// -- the form --------------------------------------------------------------------------------------

function currentApplication() {
  return applications.find((a) => a.name === $("application").value);
}

function currentPartition() {
  return partitions.find((p) => p.name === $("partition").value);
}

function partitionNow(p) {
  if (!p.now) return "what is free now is not known (the scheduler did not answer)";
  const parts = [`${p.now.idle_nodes} of ${p.now.nodes} nodes idle`];
  if (p.now.gpus_total) parts.unshift(`${p.now.gpus_free} of ${p.now.gpus_total} GPUs free`);
  if (!p.now.available) parts.unshift("not available");
  return parts.join(", ");
}

function partitionLimits(p) {
  const gpus = p.gpus.max ? `up to ${p.gpus.max} GPU${p.gpus.max > 1 ? "s" : ""}` : "no GPUs";
  return `${gpus}, walltime up to ${formatMinutes(p.walltime_minutes.max)}`;
}

// How a ready session of an application opens (the API's "opens"): pvhpc's quick view in this page, the
// application's own web client at apps/<name>/ (the Visualizer), or the client its server serves itself.
function applicationOf(session) {
  return applications.find((a) => a.name === session.application) || { opens: "view", client_url: null };
}

// The application's own client, told to open this session: the client POSTs its URL query to the launcher
// (paraview/), which answers this user's own session with its secret; so no secret is ever in a URL.
function clientURL(app, session) {
  const query = new URLSearchParams({
    attach: session.id,
    // The client's default launcher is /paraview/ at the origin's root; say where it is below a path prefix.
    sessionManagerURL: new URL("paraview/", location.href).href,
  });
  return `${app.client_url}?${query}`;
}

// A client its server serves itself (trame's) takes the secret from its URL only, and drops it from the address
// bar once read; where the application has a static copy of that client, the page opens that one instead
// (clientURL: the secret then comes in the launcher's answer).
function servedURL(app, session) {
  if (app.client_url) return clientURL(app, session);
  return `session/${encodeURIComponent(session.id)}/?${new URLSearchParams({ secret: session.secret })}`;
}

function describeApplication(app) {
  const hint = $("application-hint");
  if (app.opens === "client") {
    const direct = element("a", `${app.client_url}`, { href: app.client_url });
    hint.replaceChildren(`Opens in ${app.name}'s own web client (and in the quick view here, if you like). `,
                         "Or open ", direct, " directly: it launches a session itself.");
  } else if (app.opens === "served" && app.client_url) {
    const direct = element("a", `${app.client_url}`, { href: app.client_url });
    hint.replaceChildren("Its session serves its own web client, which opens in a new tab when the session is ",
                         "ready. Or open ", direct, " directly: it launches a session itself.");
  } else if (app.opens === "served") {
    hint.textContent = "Its session serves its own web client, which opens in a new tab when the session is ready.";
  } else {
    hint.textContent = "Opens in the quick view on this page.";
  }
}

function onApplicationChange() {
  const app = currentApplication();
  if (!app) return;
  describeApplication(app);
  const offered = partitions.filter((p) => app.partitions.includes(p.name));
  fillSelect($("partition"), offered.map((p) => [p.name, `${p.name}: ${partitionNow(p)}`]), app.default_partition);
  const roots = app.data_roots;
  $("data-hint").textContent = roots.length === 1
    ? `A file under ${roots[0]} (a path relative to it is fine). Leave empty to start with a cone.`
    : `A file under one of: ${roots.join(", ")}. Leave empty to start with a cone.`;
  browse = { root: 0, path: "" };
  if (!$("files").hidden) loadFiles();
  onPartitionChange();
}

function onPartitionChange() {
  const p = currentPartition();
  if (!p) return;
  $("partition-now").textContent = `Now: ${partitionNow(p)}. Limits: ${partitionLimits(p)}.`;
  const gpus = $("gpus");
  gpus.max = String(p.gpus.max);
  gpus.value = String(p.gpus.default);
  gpus.disabled = p.gpus.max === 0;
  $("gpus-hint").textContent = p.gpus.max === 0 ? "This partition has no GPUs." : `0 to ${p.gpus.max}.`;
  $("walltime").value = formatMinutes(p.walltime_minutes.default);
  $("walltime-hint").textContent = `Hours:minutes:seconds or minutes; at most ${formatMinutes(p.walltime_minutes.max)}.`;
  showParallel(p, currentApplication());
  $("account-field").hidden = p.accounts.length === 0;
  fillSelect($("account"), p.accounts.map((a) => [a, a]), p.accounts[0]);
  $("qos-field").hidden = p.qos.length === 0;
  fillSelect($("qos"), [["", "default"], ...p.qos.map((q) => [q, q])], "");
}

// Nodes and ranks only where staff allow a parallel session: the partition's limits (null: none there) and an
// application that runs over a pvserver. The limits bound the inputs; the API checks the rest (evenness).
function parallelLimits(p, app) {
  return p && app && app.parallel && p.parallel ? p.parallel : null;
}

function showParallel(p, app) {
  const limits = parallelLimits(p, app);
  $("nodes-field").hidden = $("ranks-field").hidden = !limits;
  $("nodes").value = "";
  $("ranks").value = "";
  if (!limits) return;
  $("nodes").max = String(limits.max_nodes);
  $("ranks").max = String(limits.max_ranks);
  const rules = [`up to ${limits.max_nodes} node${limits.max_nodes > 1 ? "s" : ""}`, `up to ${limits.max_ranks} ranks`];
  if (limits.max_ranks_per_node) rules.push(`at most ${limits.max_ranks_per_node} a node`);
  if (limits.ranks_divisible_by_nodes) rules.push("the same number on every node");
  $("parallel-hint").textContent = `A ParaView server over several processes: ${rules.join(", ")}. ` +
    "Empty ranks: one process, as usual; nodes alone: one rank a node.";
}

function clearErrors() {
  for (const field of [...FIELDS, "form"]) {
    const error = $(`${field}-error`);
    error.hidden = true;
    error.textContent = "";
    const input = $(field);
    if (input) input.removeAttribute("aria-invalid");
  }
}

function showError(error) {
  const input = error.field && $(error.field);
  if (input && $(`${error.field}-error`)) {
    const p = $(`${error.field}-error`);
    p.textContent = error.message;
    p.hidden = false;
    input.setAttribute("aria-invalid", "true");
    input.focus();
    announce(`${input.labels[0] ? input.labels[0].textContent : error.field}: ${error.message}`);
  } else {
    const p = $("form-error");
    p.textContent = error.message;
    p.hidden = false;
  }
}

function formRequest() {
  const request = { application: $("application").value, partition: $("partition").value };
  const p = currentPartition();
  const gpus = $("gpus").value.trim();
  if (!$("gpus").disabled && gpus !== "") request.gpus = /^-?\d+$/.test(gpus) ? Number(gpus) : gpus;
  const walltime = $("walltime").value.trim();
  if (walltime) request.walltime = walltime;
  if (parallelLimits(p, currentApplication())) {
    for (const field of ["nodes", "ranks"]) {
      const value = $(field).value.trim();
      if (value !== "") request[field] = /^-?\d+$/.test(value) ? Number(value) : value;
    }
  }
  if (p && p.accounts.length) request.account = $("account").value;
  if (p && p.qos.length && $("qos").value) request.qos = $("qos").value;
  const data = $("data").value.trim();
  if (data) request.data = data;
  const state = $("state").value.trim();
  if (state) request.state = state;
  return request;
}

async function onLaunch(event) {
  event.preventDefault();
  clearErrors();
  const button = $("launch-button");
  button.disabled = true;
  button.textContent = "Launching…";
  try {
    const session = await api("POST", "api/v1/sessions", formRequest());
    announce("Session submitted.");
    openSession(session);
    refreshLists();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
    button.textContent = "Launch";
  }
}

// -- the data-file chooser -------------------------------------------------------------------------

async function loadFiles() {
  const app = currentApplication();
  const list = $("files-list");
  const query = new URLSearchParams({ root: String(browse.root), path: browse.path });
  let listing;
  try {
    listing = await api("GET", `api/v1/applications/${encodeURIComponent(app.name)}/files?${query}`);
  } catch (error) {
    list.replaceChildren(element("li", error.message));
    return;
  }
  $("files-where").textContent = `In ${listing.root}${listing.path ? "/" + listing.path : ""}:`;
  const items = [];
  app.data_roots.forEach((root, index) => {
    if (app.data_roots.length > 1 && index !== browse.root) {
      items.push(fileButton(`Other data directory: ${root}`, () => { browse = { root: index, path: "" }; loadFiles(); }));
    }
  });
  if (listing.path) {
    const up = listing.path.split("/").slice(0, -1).join("/");
    items.push(fileButton("Up one directory", () => { browse.path = up; loadFiles(); }));
  }
  for (const entry of listing.entries) {
    const relative = listing.path ? `${listing.path}/${entry.name}` : entry.name;
    if (entry.kind === "directory") {
      items.push(fileButton(`${entry.name}/`, () => { browse.path = relative; loadFiles(); }));
    } else {
      items.push(fileButton(entry.name, () => {
        $("data").value = `${listing.root}/${relative}`;
        $("files").hidden = true;
        $("browse").setAttribute("aria-expanded", "false");
        $("data").focus();
      }));
    }
  }
  if (!listing.entries.length) items.push(element("li", "(empty)"));
  if (listing.truncated) items.push(element("li", "(more files than shown; type the path)"));
  list.replaceChildren(...items);
}

function fileButton(label, action) {
  const li = element("li");
  const button = element("button", label, { type: "button" });
  button.addEventListener("click", action);
  li.append(button);
  return li;
}

function onBrowse() {
  const files = $("files");
  files.hidden = !files.hidden;
  $("browse").setAttribute("aria-expanded", String(!files.hidden));
  if (!files.hidden) loadFiles();
}

// -- the current session ---------------------------------------------------------------------------

function sessionURL(url) {
  // SmartConnect fills in USE_HOST (the page's host); a plain ws:// to this host from an https:// page
  // would be blocked as mixed content, so it goes as wss://.
  if (location.protocol === "https:" && url.startsWith("ws://USE_HOST")) return "wss://" + url.slice(5);
  return url;
}

function closeSession() {
  if (!current) return;
  if (current.events) current.events.close();
  if (current.view) current.view.close();
  current = null;
  $("session-body").hidden = true;
  $("session-none").hidden = false;
  showWarning(null);
  $("viewer-area").hidden = true;
  $("open-in").hidden = true;
  $("log").hidden = true;
  $("show-log").setAttribute("aria-expanded", "false");
  $("show-log").textContent = "Show job log";
}

function openSession(session, history) {
  closeSession();
  current = { id: session.id, session, events: null, view: null, lastState: null };
  $("session-none").hidden = true;
  $("session-body").hidden = false;
  $("session-timeline").replaceChildren();
  for (const step of history || []) addTimeline(step.state, step.detail, step.at);
  showSession(session);
  if (session.state !== "ended") follow(session.id);
  $("session").focus({ preventScroll: false });
}

function follow(id) {
  const events = new EventSource(`api/v1/sessions/${encodeURIComponent(id)}/events`);
  current.events = events;
  events.addEventListener("session", (event) => {
    if (!current || current.id !== id) return;
    showSession(JSON.parse(event.data));
  });
  // Warnings change no state: the walltime is near, the session is idle (docs/web.md).
  events.addEventListener("warning", (event) => {
    if (!current || current.id !== id) return;
    showWarning(JSON.parse(event.data));
  });
  events.addEventListener("error", async () => {
    // EventSource reconnects by itself after a dropped link and after the service ends a stream that has lasted
    // its time (limits.event_stream_seconds); it gives up only when the answer was an error, such as 429 when
    // this user's other tabs hold every stream the site allows: then the session is shown as it is now, and
    // followed again a little later.
    if (events.readyState !== EventSource.CLOSED || !current || current.id !== id) return;
    try {
      const session = await api("GET", `api/v1/sessions/${encodeURIComponent(id)}`);
      showSession(session);
      if (session.state !== "ended") {
        setTimeout(() => {
          if (current && current.id === id && current.events === events) follow(id);
        }, FOLLOW_AGAIN_MS);
      }
    } catch (error) {
      showPageError(error.message);
    }
  });
}

// The banner over the session and the line in the quick view; null takes both away.
function showWarning(warning) {
  for (const where of ["session-warning", "viewer-warning"]) {
    $(where).textContent = warning ? warning.message : "";
    $(where).hidden = !warning;
    $(where).dataset.reason = warning ? warning.reason : "";
  }
  if (warning) announce(`Warning: ${warning.message}`);
}

// "42:10 (until 15:30)": the walltime's countdown of a running session, redrawn every second.
function showTimeLeft() {
  const session = current && current.session;
  const shown = Boolean(session && session.state === "ready" && session.ends_at);
  $("session-left-label").hidden = !shown;
  $("session-left").hidden = !shown;
  if (!shown) return;
  const seconds = Math.max(0, Math.round((new Date(session.ends_at) - Date.now()) / 1000));
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  const clock = `${h ? h + ":" + String(m).padStart(2, "0") : m}:${String(s).padStart(2, "0")}`;
  const until = new Date(session.ends_at).toLocaleTimeString(undefined, { timeStyle: "short" });
  $("session-left").textContent = `${clock} (the walltime ends the session at ${until})`;
}

function addTimeline(state, detail, at) {
  const li = element("li", `${STATE_WORDS[state] || state}${detail ? ": " + detail : ""}`);
  li.dataset.state = state;
  li.dataset.key = `${state}|${detail || ""}`;
  if (at) li.prepend(element("time", new Date(at).toLocaleTimeString(), { datetime: at }), " ");
  $("session-timeline").append(li);
}

function showSession(session) {
  current.session = session;
  // A new reason while queued is news too ("waiting to be scheduled" -> "waiting for free nodes or GPUs").
  const key = `${session.state}|${session.detail || ""}`;
  const changed = key !== current.lastState;
  const stateEl = $("session-state");
  stateEl.textContent = STATE_WORDS[session.state] || session.state;
  stateEl.dataset.state = session.state;
  $("session-detail").textContent = session.state === "ended"
    ? `${END_WORDS[session.end_reason] || session.end_reason || ""}${session.detail ? ": " + session.detail : ""}`
    : session.detail || "";
  const waiting = ["submitting", "queued"].includes(session.state);
  $("session-start-label").hidden = !waiting;
  $("session-start").hidden = !waiting;
  $("session-start").textContent = session.expected_start
    ? `${formatTime(session.expected_start)} (${fromNow(session.expected_start)})`
    : "not known yet: Slurm gives no expected start for this job now";
  $("session-job").textContent = [
    session.job_id ? `Slurm job ${session.job_id}` : "not yet submitted",
    `partition ${session.partition}`, session.gpus ? `${session.gpus} GPU${session.gpus > 1 ? "s" : ""}` : null,
    `walltime ${session.walltime}`, session.node ? `on ${session.node}` : null, session.data ? `data ${session.data}` : null,
  ].filter(Boolean).join(", ");
  const parallel = session.ranks ? `${session.ranks} rank${session.ranks > 1 ? "s" : ""} on ` +
    `${session.nodes} node${session.nodes > 1 ? "s" : ""}` : "";
  $("session-parallel-label").hidden = $("session-parallel").hidden = !parallel;
  $("session-parallel").textContent = parallel;
  $("cancel").hidden = session.state === "ended";
  showTimeLeft();
  if (session.state === "ended") showWarning(null);

  if (changed) {
    current.lastState = key;
    const last = $("session-timeline").lastElementChild;
    if (!last || last.dataset.key !== key) addTimeline(session.state, session.detail, new Date().toISOString());
    let words = `Session ${STATE_WORDS[session.state] || session.state}`;
    if (session.state === "queued") {
      words += `: ${session.detail || "waiting"}. Expected start: ${session.expected_start ? formatTime(session.expected_start) : "not known yet"}.`;
    } else if (session.state === "ended") {
      words += `: ${$("session-detail").textContent}.`;
    } else if (session.state === "ready") {
      words += applicationOf(session).opens === "view" ? ". The view is loading below." : ". Open it with the link below.";
    }
    announce(words);
    refreshLists();
  }
  showOpenIn(session);
  if (session.state === "ready" && !current.view && applicationOf(session).opens === "view") startView(session);
  if (session.state === "ended") {
    if (current.events) current.events.close();
    if (current.view) current.view.close();
    current.view = null;
    $("viewer-area").hidden = true;
  }
}

// A ready session of an application with a client of its own: links to it; the quick view on request.
function showOpenIn(session) {
  const app = applicationOf(session);
  const offered = session.state === "ready" && app.opens !== "view" && Boolean(session.secret);
  $("open-in").hidden = !offered;
  if (!offered) return;
  const url = app.opens === "served" ? servedURL(app, session) : clientURL(app, session);
  const name = app.opens === "served" ? "the session's own client" : `${app.name}`;
  $("open-client").href = url;
  $("open-client").textContent = `Open in ${name}`;
  $("open-client-tab").href = url;
  $("quick-view").hidden = app.opens === "served" || Boolean(current.view);
}

async function startView(session) {
  $("viewer-area").hidden = false;
  const status = (text, isError) => {
    const s = $("viewer-status");
    s.textContent = text;
    s.classList.toggle("bad", Boolean(isError));
  };
  if (!session.secret || !session.sessionURL) {
    status("Only the session's owner can open its view.", true);
    return;
  }
  const view = new RemoteView($("viewer"), $("viewer-image"), status);
  current.view = view;
  try {
    await view.open(sessionURL(session.sessionURL), session.secret);
  } catch (error) {
    if (current && current.view === view) {
      status(`The view could not be opened: ${error.message}`, true);
      current.view = null;
    }
  }
}

async function onCancel() {
  if (!current) return;
  const button = $("cancel");
  button.disabled = true;
  try {
    showSession(await api("DELETE", `api/v1/sessions/${encodeURIComponent(current.id)}`));
  } catch (error) {
    showPageError(`The session could not be cancelled: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

async function onShowLog() {
  const log = $("log");
  const button = $("show-log");
  if (!log.hidden) {
    log.hidden = true;
    button.setAttribute("aria-expanded", "false");
    button.textContent = "Show job log";
    return;
  }
  try {
    const answer = await api("GET", `api/v1/sessions/${encodeURIComponent(current.id)}/log`);
    log.textContent = (answer.truncated ? "[only the end of the log is shown]\n" : "")
      + (answer.log || "(the job has written nothing yet)");
  } catch (error) {
    log.textContent = error.message;
  }
  log.hidden = false;
  button.setAttribute("aria-expanded", "true");
  button.textContent = "Hide job log";
}

async function openById(id) {
  try {
    const session = await api("GET", `api/v1/sessions/${encodeURIComponent(id)}`);
    openSession(session, session.history);
  } catch (error) {
    showPageError(error.message);
  }
}

// -- lists -----------------------------------------------------------------------------------------

async function refreshLists() {
  const all = STAFF && $("all-users").checked ? "?all=1" : "";
  let answer;
  try {
    answer = await api("GET", `api/v1/sessions${all}`);
  } catch (error) {
    showPageError(error.message);
    return;
  }
  const live = answer.sessions.filter((s) => s.state !== "ended");
  const past = answer.sessions.filter((s) => s.state === "ended").slice(0, 50);
  $("live-table").querySelector("tbody").replaceChildren(...live.map((s) => {
    const row = element("tr");
    row.dataset.session = s.id;
    const open = element("button", current && current.id === s.id ? "Open (shown)" : "Open", {
      type: "button", "aria-label": `Open session on ${s.partition} started ${formatTime(s.created_at)}`,
    });
    open.addEventListener("click", () => openById(s.id));
    const action = element("td");
    action.append(open);
    row.append(element("td", formatTime(s.created_at)), element("td", s.user), element("td", s.partition),
               element("td", `${STATE_WORDS[s.state] || s.state}${s.detail ? ": " + s.detail : ""}`), action);
    return row;
  }));
  $("live-table").hidden = live.length === 0;
  $("live-empty").hidden = live.length !== 0;
  $("past-table").querySelector("tbody").replaceChildren(...past.map((s) => {
    const row = element("tr");
    row.dataset.session = s.id;
    row.append(element("td", formatTime(s.ended_at)), element("td", s.user), element("td", s.partition),
               element("td", END_WORDS[s.end_reason] || s.end_reason || ""), element("td", s.detail || ""));
    return row;
  }));
  $("past-table").hidden = past.length === 0;
  $("past-empty").hidden = past.length !== 0;
}

// The states sessions saved when their jobs were ended: "Start from" puts one in the form (any application
// that loads states: the service checks it, and its data paths, before it submits anything).
async function refreshStates() {
  let answer;
  try {
    answer = await api("GET", "api/v1/states");
  } catch (error) {
    showPageError(error.message);
    return;
  }
  $("states-table").querySelector("tbody").replaceChildren(...answer.states.map((s) => {
    const row = element("tr");
    const use = element("button", "Start from this", {
      type: "button", "aria-label": `Start a new session from the state saved ${formatTime(s.saved_at)}`,
    });
    use.addEventListener("click", () => {
      $("state").value = s.path;
      $("launch").scrollIntoView();
      $("state").focus();
      announce("The state is in the form: choose the application and launch.");
    });
    const action = element("td");
    action.append(use);
    row.append(element("td", formatTime(s.saved_at)), element("td", s.session),
               element("td", `${Math.ceil(s.bytes / 1024)} kB`), action);
    return row;
  }));
  $("states-table").hidden = answer.states.length === 0;
  $("states-empty").hidden = answer.states.length !== 0;
}

async function refreshPartitions() {
  let answer;
  try {
    answer = await api("GET", "api/v1/partitions");
  } catch (error) {
    showPageError(error.message);
    return;
  }
  partitions = answer.partitions;
  $("partition-table").querySelector("tbody").replaceChildren(...partitions.map((p) => {
    const row = element("tr");
    row.append(element("th", p.name, { scope: "row" }),
               element("td", p.now ? `${p.now.idle_nodes} of ${p.now.nodes}` : "unknown"),
               element("td", p.now ? (p.now.gpus_total ? `${p.now.gpus_free} of ${p.now.gpus_total}` : "none") : "unknown"),
               element("td", partitionLimits(p)));
    return row;
  }));
  const schedulerWords = "The scheduler does not answer now";
  if (answer.scheduler_error) showPageError(`${schedulerWords}: ${answer.scheduler_error}`);
  else if ($("page-error").textContent.startsWith(schedulerWords)) showPageError("");
  // Keep the user's choices; refresh only what the options say about the partitions.
  const chosen = $("partition").value;
  for (const option of $("partition").options) {
    const p = partitions.find((x) => x.name === option.value);
    if (p) option.textContent = `${p.name}: ${partitionNow(p)}`;
  }
  const p = partitions.find((x) => x.name === chosen);
  if (p) $("partition-now").textContent = `Now: ${partitionNow(p)}. Limits: ${partitionLimits(p)}.`;
}

// -- start -----------------------------------------------------------------------------------------

async function start() {
  if (!USER) {
    showPageError("You are not logged in. Open this page through your center's login page.");
    $("launch-button").disabled = true;
    return;
  }
  $("who").textContent = `Logged in as ${USER}${STAFF ? " (staff)" : ""}`;
  $("all-users-label").hidden = !STAFF;
  $("launch-form").addEventListener("submit", onLaunch);
  $("application").addEventListener("change", onApplicationChange);
  $("partition").addEventListener("change", onPartitionChange);
  $("browse").addEventListener("click", onBrowse);
  $("cancel").addEventListener("click", onCancel);
  $("show-log").addEventListener("click", onShowLog);
  $("close-session").addEventListener("click", () => { closeSession(); refreshLists(); });
  $("all-users").addEventListener("change", refreshLists);
  $("refresh-partitions").addEventListener("click", refreshPartitions);
  $("add-source-button").addEventListener("click", () => current && current.view && current.view.addSource($("add-source").value));
  $("reset-camera").addEventListener("click", () => current && current.view && current.view.resetCamera());
  setInterval(showTimeLeft, 1000);
  // Using the view is the input an idle warning asks for (the server starts its count again): the warning goes.
  for (const type of ["pointerdown", "wheel", "keydown"]) {
    $("viewer").addEventListener(type, () => {
      if ($("session-warning").dataset.reason === "idle") showWarning(null);
    }, { passive: true });
  }
  $("quick-view").addEventListener("click", () => {
    if (!current || current.view || current.session.state !== "ready") return;
    $("quick-view").hidden = true;
    startView(current.session);
  });
  let apps;
  try {
    [apps] = await Promise.all([api("GET", "api/v1/applications"), refreshPartitions()]);
  } catch (error) {
    showPageError(error.message);
    return;
  }
  applications = apps.applications;
  fillSelect($("application"), applications.map((a) => [a.name, a.description ? `${a.name}: ${a.description}` : a.name]),
             applications[0] && applications[0].name);
  onApplicationChange();
  await refreshLists();
  await refreshStates();
  body.dataset.loaded = "true";
  setInterval(() => { if (!document.hidden) { refreshLists(); refreshPartitions(); refreshStates(); } },
              LISTS_EVERY_MS);
}

start();
