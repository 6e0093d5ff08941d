// The tab's title says how the open session is, so a tab in the background shows it: "Queued - ParaView
// sessions", "Ready - ...", "5 min left - ...", "Reconnecting - ...", "Disconnected - ..." (the quick view waits
// for its person, or gave up). The page's own title without a session.

import { stateWords } from "./words.js";

const LEFT_SHOWN_BELOW_S = 15 * 60;   // the time left is news only near the end

export class TabTitle {
  constructor() {
    this.base = document.title;
  }

  // session: as the API sends it, or null; viewState: the quick view's link (connected, reconnecting, gave-up).
  show(session, viewState) {
    document.title = session ? `${this.words(session, viewState)} - ${this.base}` : this.base;
  }

  words(session, viewState) {
    if (session.state === "ready") {
      if (viewState === "reconnecting") return "Reconnecting";
      if (viewState === "waiting" || viewState === "gave-up") return "Disconnected";
      if (session.ends_at) {
        const left = (new Date(session.ends_at) - Date.now()) / 1000;
        if (left < LEFT_SHOWN_BELOW_S) return left < 60 ? "Under 1 min left" : `${Math.floor(left / 60)} min left`;
      }
    }
    return stateWords(session.state).replace(/ \(.*\)$/, "");
  }
}
