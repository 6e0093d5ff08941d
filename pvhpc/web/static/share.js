// The Share dialog of the current session, for its owner: who has it (and as what), add a user (or a group, where
// the site allows) as view or control, revoke. What the application offers comes from the API ("share_roles",
// "share_groups", "share_note"), so the dialog checks nothing itself: a refusal lands next to the field it names.

import { api } from "./api.js";
import { $, announce, element } from "./dom.js";

export class ShareDialog {
  // onShares(shares): the session's shares changed (the panel keeps its view fresh while others look on).
  constructor({ onShares }) {
    this.onShares = onShares;
    this.session = null;
    this.app = null;
    $("share-close").addEventListener("click", () => $("share-dialog").close());
    $("share-form").addEventListener("submit", (event) => { event.preventDefault(); this.add(); });
  }

  // The Share button of a session: shown to its owner, for a live session; what the application allows said.
  offer(session, app) {
    const button = $("share");
    const owner = !session.shared && Boolean(session.secret);
    button.hidden = !owner || session.state === "ended";
    const roles = (app && app.share_roles) || [];
    button.disabled = roles.length === 0;
    $("share-note").hidden = button.hidden || !(app && app.share_note);
    $("share-note").textContent = app && app.share_note ? `Sharing: ${app.share_note}.` : "";
  }

  async open(session, app) {
    this.session = session;
    this.app = app;
    const roles = app.share_roles || [];
    $("share-role").replaceChildren(...roles.map((r) => element("option", roleWords(r), { value: r })));
    $("share-kind-field").hidden = !app.share_groups;
    $("share-kind").checked = false;
    $("share-name").value = "";
    showError(null);
    $("share-dialog").showModal();
    await this.refresh();
  }

  async refresh() {
    if (!this.session) return;
    try {
      this.show((await api.shares(this.session.id)).shares);
    } catch (error) {
      showError({ message: error.message });
    }
  }

  show(shares) {
    $("share-list").replaceChildren(...shares.map((s) => {
      const row = element("li");
      row.dataset.share = `${s.kind}:${s.name}`;
      const revoke = element("button", "Revoke", {
        type: "button", "aria-label": `Stop sharing with ${s.kind === "group" ? "group " : ""}${s.name}`,
      });
      revoke.addEventListener("click", () => this.revoke(s));
      row.append(element("span", `${s.kind === "group" ? "group " : ""}${s.name}: ${roleWords(s.role)}`), revoke);
      return row;
    }));
    $("share-empty").hidden = shares.length !== 0;
    this.onShares(shares);
  }

  async add() {
    const name = $("share-name").value.trim();
    const kind = $("share-kind").checked ? "group" : "user";
    showError(null);
    try {
      const answer = await api.share(this.session.id, { [kind]: name, role: $("share-role").value });
      this.show(answer.shares);
      $("share-name").value = "";
      announce(`Shared with ${name}.`);
    } catch (error) {
      showError(error);
    }
  }

  async revoke(share) {
    showError(null);
    try {
      this.show((await api.unshare(this.session.id, share.name, share.kind)).shares);
      announce(`${share.name} no longer has this session.`);
    } catch (error) {
      showError(error);
    }
  }
}

export function roleWords(role) {
  return role === "control" ? "view and control" : "view only";
}

// An error next to the field it names (user or group: the name; role), else under the form.
function showError(error) {
  for (const id of ["share-name-error", "share-role-error", "share-error"]) {
    $(id).hidden = true;
    $(id).textContent = "";
  }
  $("share-name").removeAttribute("aria-invalid");
  if (!error) return;
  const id = ["user", "group"].includes(error.field) ? "share-name-error"
    : error.field === "role" ? "share-role-error" : "share-error";
  $(id).textContent = error.message;
  $(id).hidden = false;
  if (id === "share-name-error") {
    $("share-name").setAttribute("aria-invalid", "true");
    $("share-name").focus();
  }
}
