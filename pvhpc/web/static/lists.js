// The lists under the current session: running and past sessions, the ParaView states sessions saved, and what
// each partition has free now.

import { api } from "./api.js";
import { $, answerOrPageError, element } from "./dom.js";
import { formatTime, howItEnded, partitionLimits, stateWithDetail, whyItEnded } from "./words.js";

const PAST_SHOWN = 50;

export class Lists {
  // shownId(): the id of the session the page shows, if any; onOpen(id): open that session;
  // onStartFrom(path): put a saved state in the launch form; onLaunchAgain(session, statePath): put a past
  // session's request (its version too) in the launch form, with the state it saved last where statePath is given.
  constructor({ staff, shownId, onOpen, onStartFrom, onLaunchAgain }) {
    this.staff = staff;
    this.shownId = shownId;
    this.onOpen = onOpen;
    this.onStartFrom = onStartFrom;
    this.onLaunchAgain = onLaunchAgain;
    this.past = [];
    this.lastStates = new Map();   // session id -> the path of the newest state it saved
    $("all-users-label").hidden = !staff;
    $("all-users").addEventListener("change", () => this.refreshSessions());
  }

  async refreshSessions() {
    const answer = await answerOrPageError(api.sessions(this.staff && $("all-users").checked));
    if (!answer) return;
    const live = answer.sessions.filter((s) => s.state !== "ended");
    const past = answer.sessions.filter((s) => s.state === "ended").slice(0, PAST_SHOWN);
    const shown = this.shownId();
    fillTable("live", live.map((s) => {
      const row = element("tr");
      row.dataset.session = s.id;
      const open = element("button", shown === s.id ? "Open (shown)" : "Open", {
        type: "button", "aria-label": `Open session on ${s.partition} started ${formatTime(s.created_at)}`,
      });
      open.addEventListener("click", () => this.onOpen(s.id));
      // A session shared with this user says by whom and as what.
      const who = s.shared ? `${s.user} (shared with you: ${s.shared.role === "control" ? "view and control" : "view only"})` : s.user;
      row.append(element("td", formatTime(s.created_at)), element("td", who), element("td", s.partition),
                 element("td", stateWithDetail(s)), cell(open));
      return row;
    }));
    this.past = past;
    this.showPast();
  }

  // "Launch again", and "with its last saved state" where the session saved one (known from the saved states).
  showPast() {
    fillTable("past", this.past.map((s) => {
      const row = element("tr");
      row.dataset.session = s.id;
      const when = formatTime(s.ended_at);
      const again = element("button", "Launch again", {
        type: "button", "aria-label": `Put the settings of the session that ended ${when} in the form`,
      });
      again.addEventListener("click", () => this.onLaunchAgain(s, null));
      const actions = element("td");
      actions.append(again);
      const state = this.lastStates.get(s.id);   // the user's own states only: never another's session
      if (state) {
        const withState = element("button", "with its last saved state", {
          type: "button", class: "with-state",
          "aria-label": `Put the settings of the session that ended ${when} and its last saved state in the form`,
        });
        withState.addEventListener("click", () => this.onLaunchAgain(s, state));
        actions.append(" ", withState);
      }
      row.append(element("td", when), element("td", s.user),
                 element("td", s.version ? `${s.partition} (${s.application} ${s.version})` : s.partition),
                 element("td", howItEnded(s)), element("td", whyItEnded(s)), actions);
      return row;
    }));
  }

  // "Start from" puts a saved state in the form (any application that loads states: the service checks it, and
  // its data paths, before it submits anything).
  async refreshSavedStates() {
    const answer = await answerOrPageError(api.savedStates());
    if (!answer) return;
    // The list is the user's own, newest first: the first one met of a session is the last it saved.
    this.lastStates = new Map();
    for (const s of answer.states) if (!this.lastStates.has(s.session)) this.lastStates.set(s.session, s.path);
    this.showPast();
    fillTable("states", answer.states.map((s) => {
      const row = element("tr");
      const use = element("button", "Start from this", {
        type: "button", "aria-label": `Start a new session from the state saved ${formatTime(s.saved_at)}`,
      });
      use.addEventListener("click", () => this.onStartFrom(s.path));
      row.append(element("td", formatTime(s.saved_at)), element("td", s.session),
                 element("td", `${Math.ceil(s.bytes / 1024)} kB`), cell(use));
      return row;
    }));
  }

  showPartitions(partitions) {
    $("partition-table").querySelector("tbody").replaceChildren(...partitions.map((p) => {
      const row = element("tr");
      row.append(element("th", p.name, { scope: "row" }),
                 element("td", p.now ? `${p.now.idle_nodes} of ${p.now.nodes}` : "unknown"),
                 element("td", p.now ? (p.now.gpus_total ? `${p.now.gpus_free} of ${p.now.gpus_total}` : "none") : "unknown"),
                 element("td", partitionLimits(p)));
      return row;
    }));
  }
}

function cell(content) {
  const td = element("td");
  td.append(content);
  return td;
}

// The table <name>-table with these rows, or, without rows, its "<name>-empty" line instead.
function fillTable(name, rows) {
  const table = $(`${name}-table`);
  table.querySelector("tbody").replaceChildren(...rows);
  table.hidden = rows.length === 0;
  $(`${name}-empty`).hidden = rows.length !== 0;
}
