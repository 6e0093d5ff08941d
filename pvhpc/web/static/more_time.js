// The "More time" button by a running session's time left: asks pvhpc to raise its walltime in place
// (POST api/v1/sessions/<id>/extend), and says why it cannot where it cannot (the session's more_time, as the
// API sends it: the partition does not allow it, or the most its walltime may come to is reached).

import { api } from "./api.js";
import { $, announce } from "./dom.js";

export class MoreTimeControl {
  // panel: the SessionPanel, whose current session this is about and which shows the answer.
  constructor(panel) {
    this.panel = panel;
    $("more-time-button").addEventListener("click", () => this.ask());
  }

  // Drawn with the session: shown while its job runs, the button off (with the reason beside it) where the
  // site does not allow more time now.
  render(session) {
    const offer = session && session.more_time;
    const shown = Boolean(offer && ["starting", "ready"].includes(session.state));
    $("more-time-label").hidden = !shown;
    $("more-time").hidden = !shown;
    if (!shown) return;
    const input = $("more-time-minutes");
    $("more-time-button").disabled = !offer.allowed || this.asking;
    input.disabled = !offer.allowed;
    input.max = String(Math.max(1, offer.most_minutes));
    if (offer.allowed && Number(input.value) > offer.most_minutes) input.value = String(offer.most_minutes);
    if (!this.said) $("more-time-note").textContent = offer.allowed ? `at most ${offer.most_minutes} min more` : offer.why;
  }

  async ask() {
    const current = this.panel.current;
    if (!current) return;
    const minutes = Number($("more-time-minutes").value);
    const note = $("more-time-note");
    if (!Number.isInteger(minutes) || minutes <= 0) {
      this.say("Give a whole number of minutes, 1 or more.");
      return;
    }
    this.asking = true;
    $("more-time-button").disabled = true;
    try {
      const session = await api.extend(current.id, minutes);
      this.say(`Walltime extended by ${minutes} min: now ${session.walltime}.`);
      announce(note.textContent);
      if (this.panel.current && this.panel.current.id === session.id) this.panel.show(session);
    } catch (error) {
      this.say(error.message);
    } finally {
      this.asking = false;
      if (this.panel.current) this.render(this.panel.current.session);
    }
  }

  // What the last request got, kept until the session changes (a new one is opened).
  say(text) {
    this.said = true;
    $("more-time-note").textContent = text;
  }

  reset() {
    this.said = false;
    this.asking = false;
  }
}
