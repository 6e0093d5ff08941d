// Browser notifications, opt-in: told when a queued session becomes ready, before its walltime and before idle
// culling (the push channel's warnings), and of any other notice the service sends (a continuation that took
// over, ...), in the service's own words, whatever its reason. The browser's permission is asked only when the
// person clicks the control, never on load; the choice is remembered in this browser (localStorage). Nothing is
// sent anywhere: a notification is shown by this tab, from what this tab already received.

const CHOICE_KEY = "pvhpc.notifications";

export class Notifications {
  // button: the control that turns them on and off; say(text): where the page reads out what happened.
  constructor(button, say) {
    this.button = button;
    this.say = say;
    this.supported = typeof window.Notification === "function";
    button.hidden = !this.supported;
    button.addEventListener("click", () => this.toggle());
    this.show();
  }

  // On only where the person chose it here and the browser still allows it (permission can be taken back).
  get on() {
    return this.supported && Notification.permission === "granted" && localStorage.getItem(CHOICE_KEY) === "on";
  }

  show() {
    const on = this.on;
    this.button.setAttribute("aria-pressed", String(on));
    this.button.textContent = on ? "Notifications on (turn off)" : "Notify me when it is ready or about to end";
    this.button.dataset.state = on ? "on" : (this.supported && Notification.permission === "denied" ? "denied" : "off");
  }

  async toggle() {
    if (this.on) {
      localStorage.setItem(CHOICE_KEY, "off");
      this.say("Notifications turned off.");
      return this.show();
    }
    let permission = Notification.permission;
    if (permission === "default") permission = await Notification.requestPermission();
    if (permission === "granted") {
      localStorage.setItem(CHOICE_KEY, "on");
      this.say("Notifications on: this tab tells you when a session is ready and before it ends.");
    } else {
      this.say("The browser does not allow notifications for this site: allow them in its site settings first.");
    }
    this.show();
  }

  // tag: one notification per session and kind; a newer one replaces the one before.
  tell(title, body, tag) {
    if (!this.on) return;
    try {
      const notice = new Notification(title, { body, tag });
      notice.onclick = () => { window.focus(); notice.close(); };
    } catch (error) {
      // Some browsers allow notifications only from a service worker: the page still says it all itself.
    }
  }
}
