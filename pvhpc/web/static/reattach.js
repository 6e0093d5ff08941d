// pvhpc: an application's own web client (the Visualizer's, at /apps/<name>/) reattached to its session when its
// websocket drops: a continued session's successor job took over (pvhpc/sessions/continuation.py), or the
// connection was cut. Loaded first in the client's page (pvhpc/web/reattach.py) as a plain script, it watches the
// websockets the client opens to pvhpc's /proxy; when one closes while the page stays, it follows the session
// through pvhpc's API and, once the session is ready again, reopens the same client attached to the same session
// (?attach=<id>: the secret comes in the launcher's answer, never in the URL). It asks the user nothing.
(function () {
  "use strict";
  if (typeof window === "undefined") return;   // read outside a browser (the page's module checks in Node)
  const Native = window.WebSocket;
  if (!Native || window.__pvhpcReattach) return;
  window.__pvhpcReattach = true;
  const script = document.currentScript;
  // pvhpc's base URL: this script lies at <base>static/reattach.js (the site may serve pvhpc below a prefix).
  const base = new URL("../", script ? script.src : location.href);
  const POLL_MS = 2000;
  const QUIET_MS = 10000;   // a page reattached this recently waits this long first: no reload loop
  // A ready session whose websocket is refused every time would reload the page every QUIET_MS forever: after
  // this many reattaches within RECENT_MS the page stops, and the banner says why.
  const MAX_REATTACHES = 3;
  const RECENT_MS = 2 * 60 * 1000;
  const REATTACHES = "pvhpc-reattaches";   // sessionStorage: when this tab reattached lately (ms, JSON list)
  let leaving = false;
  let following = false;
  addEventListener("pagehide", () => { leaving = true; });
  addEventListener("beforeunload", () => { leaving = true; });

  function recentReattaches() {
    let times = [];
    try {
      times = JSON.parse(sessionStorage.getItem(REATTACHES) || "[]");
    } catch (e) {
      times = [];
    }
    const since = Date.now() - RECENT_MS;
    return Array.isArray(times) ? times.filter((t) => typeof t === "number" && t > since) : [];
  }

  // The front ends take the session's id as sessionId or sessionid (pvhpc/frontends/): either is this session.
  function sessionOf(url) {
    try {
      const query = new URL(String(url), location.href).searchParams;
      return query.get("sessionId") || query.get("sessionid");
    } catch (e) {
      return null;
    }
  }

  function banner(text) {
    let note = document.getElementById("pvhpc-reattach");
    if (!note) {
      note = document.createElement("div");
      note.id = "pvhpc-reattach";
      note.setAttribute("role", "status");
      note.style.cssText = "position:fixed;top:0;left:0;right:0;z-index:2147483647;padding:6px 12px;" +
        "background:#fff3cd;color:#333;font:14px sans-serif;border-bottom:1px solid #d6b656;";
      (document.body || document.documentElement).appendChild(note);
    }
    note.textContent = text;
  }

  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

  async function follow(id) {
    if (following || leaving) return;
    following = true;
    const last = Math.max(0, ...recentReattaches());
    banner("pvhpc: the connection to your session was lost; reconnecting…");
    await sleep(Math.max(POLL_MS, last + QUIET_MS - Date.now()));
    const url = new URL(`api/v1/sessions/${encodeURIComponent(id)}`, base);
    for (;;) {
      if (leaving) return;
      let session = null;
      try {
        const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
        if ([401, 403, 404].includes(answer.status)) {
          banner("pvhpc: this session is no longer yours to open here; open it again from pvhpc's page");
          return;
        }
        if (answer.ok) session = await answer.json();
      } catch (e) {
        session = null;   // pvhpc or the network is away: ask again
      }
      if (session && session.state === "ended") {
        banner(`pvhpc: this session has ended: ${session.detail}`);
        return;
      }
      if (session && session.state === "ready") {
        const times = recentReattaches();
        if (times.length >= MAX_REATTACHES) {
          banner(`pvhpc: stopped reconnecting: your session is ready but its connection closed again ` +
                 `${times.length} times within ${RECENT_MS / 60000} minutes, so reloading would not help; ` +
                 `open the session again from pvhpc's page, or end it there`);
          return;
        }
        sessionStorage.setItem(REATTACHES, JSON.stringify([...times, Date.now()]));
        const query = new URLSearchParams({ attach: id });
        location.replace(`${location.pathname}?${query}`);
        return;
      }
      banner(`pvhpc: reconnecting to your session${session ? ` (${session.detail})` : ""}…`);
      await sleep(POLL_MS);
    }
  }

  class WatchedWebSocket extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      const id = sessionOf(url);
      if (id) this.addEventListener("close", () => follow(id));
    }
  }
  window.WebSocket = WatchedWebSocket;
})();
