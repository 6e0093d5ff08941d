// The current session: its facts as they change (pushed over server-sent events), what is read out when its state
// changes, its warnings and countdown, and how a ready one opens: the quick view on this page, or a link to its
// application's own client.

import { api } from "./api.js";
import { $, announce, element, showPageError } from "./dom.js";
import { MoreTimeControl } from "./more_time.js";
import { Notifications } from "./notifications.js";
import { ShareDialog, roleWords } from "./share.js";
import { TabTitle } from "./tabtitle.js";
import { RemoteView } from "./viewer.js";
import {
  expectedStart, jobLine, parallelLine, sessionDetail, stateNews, stateWords, timeLeft,
} from "./words.js";

const FOLLOW_AGAIN_MS = 15000;   // after the service refused a session's event stream (429)
const WAITING = ["submitting", "queued", "starting"];
// A notice's title by its reason; any other reason is told as "Session news", with its message.
const NOTICE_TITLES = {
  walltime: "Session ending soon", idle: "Session idle: it will be ended",
  continued: "Session continued in a new job", successor_failed: "Session will not continue",
};

export class SessionPanel {
  // store: {applications} as the API lists them; onNews(): what the lists show may have changed.
  constructor(store, { onNews }) {
    this.store = store;
    this.onNews = onNews;
    this.current = null;   // {id, session, events: EventSource|null, view: RemoteView|null, lastState, waited}
    this.notifications = new Notifications($("notify"), announce);
    this.title = new TabTitle();
    $("cancel").addEventListener("click", () => this.cancel());
    $("show-log").addEventListener("click", () => this.toggleLog());
    $("close-session").addEventListener("click", () => { this.close(); this.onNews(); });
    this.shareDialog = new ShareDialog({
      // Others look on or drive: the owner's view watches for their changes too.
      onShares: (shares) => this.view() && this.view().watch(shares.length > 0),
    });
    $("share").addEventListener("click", () => {
      if (this.current) this.shareDialog.open(this.current.session, this.applicationOf(this.current.session));
    });
    $("add-source-button").addEventListener("click", () => this.view() && this.view().addSource($("add-source").value));
    $("reset-camera").addEventListener("click", () => this.view() && this.view().resetCamera());
    $("viewer-reconnect").addEventListener("click", () => {
      if (!this.current || this.current.session.state !== "ready") return;
      if (this.current.view) this.current.view.close();
      this.current.view = null;
      this.startView(this.current.session);
    });
    $("quick-view").addEventListener("click", () => {
      if (!this.current || this.current.view || this.current.session.state !== "ready") return;
      $("quick-view").hidden = true;
      this.startView(this.current.session);
    });
    // Using the view is the input an idle warning asks for (the server starts its count again): the warning goes.
    for (const type of ["pointerdown", "wheel", "keydown"]) {
      $("viewer").addEventListener(type, () => {
        if ($("session-warning").dataset.reason === "idle") showWarning(null);
      }, { passive: true });
    }
    this.moreTime = new MoreTimeControl(this);
    setInterval(() => this.showTimeLeft(), 1000);
  }

  get id() {
    return this.current ? this.current.id : null;
  }

  view() {
    return this.current && this.current.view;
  }

  // How a ready session of an application opens (the API's "opens"): pvhpc's quick view in this page, the
  // application's own web client at apps/<name>/ (the Visualizer), or the client its server serves itself.
  applicationOf(session) {
    const app = this.store.applications.find((a) => a.name === session.application) || { opens: "view", client_url: null };
    // A session shared with this user opens in the quick view; with control, an application's own web client
    // (the Visualizer) too, whose launcher attaches a sharee with their own key. Not with view only: that client
    // changes the view for everyone as it starts, so the server would refuse it (docs/sharing.md).
    if (!session.shared) return app;
    if (session.shared.role === "control" && app.opens === "client") return app;
    return { ...app, opens: "view", client_url: null };
  }

  async openById(id) {
    try {
      const session = await api.session(id);
      this.open(session, session.history);
    } catch (error) {
      showPageError(error.message);
    }
  }

  // history: the states so far ([{state, detail, at}]), as a session's GET has them.
  open(session, history) {
    this.close();
    // waited: seen waiting in this tab, so that its turning ready is news worth a notification.
    this.current = { id: session.id, session, events: null, view: null, lastState: null, waited: false };
    this.moreTime.reset();
    $("session-none").hidden = true;
    $("session-body").hidden = false;
    $("session-timeline").replaceChildren();
    for (const step of history || []) addToTimeline(step.state, step.detail, step.at);
    this.show(session);
    if (session.state !== "ended") this.follow(session.id);
    $("session").focus({ preventScroll: false });
  }

  close() {
    if (!this.current) return;
    if (this.current.events) this.current.events.close();
    if (this.current.view) this.current.view.close();
    this.current = null;
    $("session-body").hidden = true;
    $("session-none").hidden = false;
    showWarning(null);
    $("viewer-area").hidden = true;
    $("open-in").hidden = true;
    $("log").hidden = true;
    $("show-log").setAttribute("aria-expanded", "false");
    $("show-log").textContent = "Show job log";
    this.title.show(null);
  }

  // The session as the API sends it now: drawn, its change (if any) told, its view run.
  show(session) {
    // More time keeps the state and detail: the timeline says it from the walltime (as the history does).
    const before = this.current.session;
    if (before && before.id === session.id && session.walltime_minutes > before.walltime_minutes) {
      addToTimeline(session.state, `walltime extended by ${session.walltime_minutes - before.walltime_minutes} min, `
        + `now ${session.walltime_minutes} min`, new Date().toISOString());
    }
    this.current.session = session;
    this.render(session);
    if (this.isNews(session)) {
      const last = $("session-timeline").lastElementChild;
      if (!last || last.dataset.key !== stateKey(session)) {
        addToTimeline(session.state, session.detail, new Date().toISOString());
      }
      announce(stateNews(session, this.applicationOf(session).opens === "view"));
      this.tellReady(session);
      this.onNews();
    }
    this.runView(session);
  }

  // A notification when a session this tab saw waiting is ready: the person may be in another tab or window.
  tellReady(session) {
    if (WAITING.includes(session.state)) this.current.waited = true;
    if (session.state !== "ready" || !this.current.waited) return;
    this.current.waited = false;
    this.notifications.tell("Session ready", `Your ${session.application} session on ${session.partition} is ready.`,
                            `ready-${session.id}`);
  }

  // A new reason while queued is news too ("waiting to be scheduled" -> "waiting for free nodes or GPUs").
  isNews(session) {
    const key = stateKey(session);
    if (key === this.current.lastState) return false;
    this.current.lastState = key;
    return true;
  }

  render(session) {
    const stateEl = $("session-state");
    stateEl.textContent = stateWords(session.state);
    stateEl.dataset.state = session.state;
    $("session-detail").textContent = sessionDetail(session);
    const waiting = ["submitting", "queued"].includes(session.state);
    $("session-start-label").hidden = !waiting;
    $("session-start").hidden = !waiting;
    $("session-start").textContent = expectedStart(session);
    $("session-job").textContent = jobLine(session);
    $("session-version-label").hidden = $("session-version").hidden = !session.version;
    $("session-version").textContent = session.version ? `${session.application} ${session.version}` : "";
    const parallel = parallelLine(session);
    $("session-parallel-label").hidden = $("session-parallel").hidden = !parallel;
    $("session-parallel").textContent = parallel;
    $("cancel").hidden = session.state === "ended" || Boolean(session.shared);
    $("show-log").hidden = Boolean(session.shared);
    $("session-shared-label").hidden = $("session-shared").hidden = !session.shared;
    $("session-shared").textContent = !session.shared ? ""
      : session.shared.revoked ? `by ${session.shared.by}; no longer shared with you`
        : `by ${session.shared.by} with you: ${roleWords(session.shared.role)}`;
    $("add-source-button").disabled = $("reset-camera").disabled =
      Boolean(session.shared && session.shared.role === "view");
    this.shareDialog.offer(session, this.applicationOf(session));
    this.showTimeLeft();
    this.moreTime.render(session);
    if (session.state === "ended") showWarning(null);
    this.showOpenIn(session);
  }

  // A ready session of an application with a client of its own: links to it; the quick view on request.
  showOpenIn(session) {
    const app = this.applicationOf(session);
    // A desktop session opens in ParaView's desktop client (pvhpc connect), not here.
    const offered = session.state === "ready" && (app.opens === "client" || app.opens === "served") &&
      Boolean(session.secret);
    $("open-in").hidden = !offered;
    if (!offered) return;
    const url = app.opens === "served" ? servedURL(app, session) : clientURL(app, session);
    const name = app.opens === "served" ? "the session's own client" : `${app.name}`;
    $("open-client").href = url;
    $("open-client").textContent = `Open in ${name}`;
    $("open-client-tab").href = url;
    $("quick-view").hidden = app.opens === "served" || Boolean(this.current.view);
  }

  // The countdown of a running session's walltime, redrawn every second, and the tab's title with it.
  showTimeLeft() {
    const session = this.current && this.current.session;
    this.title.show(session || null, this.current && this.current.view ? $("viewer").dataset.connection : null);
    const shown = Boolean(session && session.state === "ready" && session.ends_at);
    $("session-left-label").hidden = !shown;
    $("session-left").hidden = !shown;
    if (shown) $("session-left").textContent = timeLeft(session.ends_at);
  }

  // The quick view opens by itself once a session of an application without a client of its own is ready,
  // and goes with its session.
  runView(session) {
    if (session.state === "ready" && !this.current.view && this.applicationOf(session).opens === "view") {
      this.startView(session);
    }
    if (session.state === "ended") {
      if (this.current.events) this.current.events.close();
      if (this.current.view) this.current.view.close();
      this.current.view = null;
      $("viewer-area").hidden = true;
    }
  }

  async startView(session) {
    $("viewer-area").hidden = false;
    const status = (text, isError) => {
      const s = $("viewer-status");
      s.textContent = text;
      s.classList.toggle("bad", Boolean(isError));
      // Read out the link's turns (lost, back, given up), not each try's countdown.
      if (/^(Reconnected|Gave up|Disconnected)/.test(text) || text.includes("(try 1)")) announce(text);
    };
    if (!session.secret || !session.sessionURL) {
      status("Only the session's owner, and those it is shared with, can open its view.", true);
      return;
    }
    const id = session.id;
    $("viewer-reconnect").hidden = true;
    const view = new RemoteView($("viewer"), $("viewer-image"), status, {
      // The same session, still there: an ended one is not retried (its view goes with it, runView).
      canReconnect: async () => {
        let now;
        try {
          now = await api.session(id);
        } catch (error) {
          // Gone from this user's list: no longer shared with them (or no longer theirs to see).
          if (error.status === 404) return "the session is no longer shared with you";
          throw error;
        }
        return now.state === "ended" ? `the session has ended (${now.end_reason_text || now.end_reason})` : null;
      },
      onGaveUp: () => { $("viewer-reconnect").hidden = false; },
    });
    this.current.view = view;
    try {
      await view.open(websocketURL(session.sessionURL), session.secret, session.shared ? session.shared.role : "owner");
      if (!session.shared) {
        // Shared already (a reload, another tab): watch for what the others do.
        api.shares(session.id).then((answer) => view.watch(answer.shares.length > 0), () => {});
      }
    } catch (error) {
      if (this.current && this.current.view === view) {
        status(`The view could not be opened: ${error.message}`, true);
        this.current.view = null;
      }
    }
  }

  follow(id) {
    const events = api.events(id);
    this.current.events = events;
    const followed = () => this.current && this.current.id === id;
    events.addEventListener("session", (event) => {
      if (followed()) this.show(JSON.parse(event.data));
    });
    // Warnings change no state: the walltime is near, the session is idle (docs/web.md).
    // Any other reason (a continuation that took over, ...) is shown and told alike, with the service's message.
    events.addEventListener("warning", (event) => {
      if (!followed()) return;
      const warning = JSON.parse(event.data);
      showWarning(warning);
      this.notifications.tell(NOTICE_TITLES[warning.reason] || "Session news", warning.message,
                              `${warning.reason}-${id}`);
    });
    events.addEventListener("error", async () => {
      // EventSource reconnects by itself after a dropped link and after the service ends a stream that has lasted
      // its time (limits.event_stream_seconds); it gives up only when the answer was an error, such as 429 when
      // this user's other tabs hold every stream the site allows: then the session is shown as it is now, and
      // followed again a little later.
      if (events.readyState !== EventSource.CLOSED || !followed()) return;
      try {
        const session = await api.session(id);
        this.show(session);
        if (session.state !== "ended") {
          setTimeout(() => {
            if (followed() && this.current.events === events) this.follow(id);
          }, FOLLOW_AGAIN_MS);
        }
      } catch (error) {
        showPageError(error.message);
      }
    });
  }

  async cancel() {
    if (!this.current) return;
    const button = $("cancel");
    button.disabled = true;
    try {
      this.show(await api.cancel(this.current.id));
    } catch (error) {
      showPageError(`The session could not be cancelled: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async toggleLog() {
    const log = $("log");
    const button = $("show-log");
    if (!log.hidden) {
      log.hidden = true;
      button.setAttribute("aria-expanded", "false");
      button.textContent = "Show job log";
      return;
    }
    try {
      const answer = await api.log(this.current.id);
      log.textContent = (answer.truncated ? "[only the end of the log is shown]\n" : "")
        + (answer.log || "(the job has written nothing yet)");
    } catch (error) {
      log.textContent = error.message;
    }
    log.hidden = false;
    button.setAttribute("aria-expanded", "true");
    button.textContent = "Hide job log";
  }
}

function stateKey(session) {
  return `${session.state}|${session.detail || ""}`;
}

function addToTimeline(state, detail, at) {
  const li = element("li", `${stateWords(state)}${detail ? ": " + detail : ""}`);
  li.dataset.state = state;
  li.dataset.key = `${state}|${detail || ""}`;
  if (at) li.prepend(element("time", new Date(at).toLocaleTimeString(), { datetime: at }), " ");
  $("session-timeline").append(li);
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

function websocketURL(url) {
  // SmartConnect fills in USE_HOST (the page's host); a plain ws:// to this host from an https:// page
  // would be blocked as mixed content, so it goes as wss://.
  if (location.protocol === "https:" && url.startsWith("ws://USE_HOST")) return "wss://" + url.slice(5);
  return url;
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
