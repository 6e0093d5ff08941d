// The remote view: JPEG frames rendered by the session's ParaView server, and the mouse sent back to it.
//
// One render request is in flight at a time and requests made meanwhile collapse into one, so a slow
// link shows fewer frames instead of a growing backlog. Frames during a drag use a lower JPEG quality;
// the still frame after it is sent at full quality. Mouse moves queued behind a slow answer collapse
// into the latest position for the same reason.
//
// With pvhpc's own server (pvhpc/node/quickview.py) a mouse event and its picture are one call,
// pvhpc.viewport.interact: rendered once, and the answer is the picture the event made. Over a link whose round
// trip is a good part of a render (more than LINK_SHARE of one: from home, over a VPN) a second call goes out
// before the first is answered: the server, which takes calls one after another, then renders the second while the
// first's picture travels and the next move comes back, instead of idling through the whole round trip (up to
// twice the pictures; back to back once the round trip is shorter than a render). The moves made meanwhile still
// collapse into the latest, and no third call goes out, so a picture of a drag is at most a render older. Close
// by, one at a time: a second call there would only wait at the server.
//
// Other ParaViewWeb servers (the Visualizer's) get ParaView's pair, one event at a time:
// viewport.mouse.interaction, then viewport.image.render, which renders again and, while ParaView's encoder is
// busy, answers `stale` with the picture before.

// A dropped websocket (a network drop, a laptop's sleep, a front end's restart) is not the end of the view: it
// reconnects by itself to the same session, with backoff (1 s, 2 s, 4 s ... 30 s, a little jitter so that the tabs a
// restarted front end dropped do not all come back in the same second), at once when the browser says it is online
// again, and says so in its status line. Before each try it asks the page whether the session is still there
// (canReconnect): an ended session is not retried. It gives up after RECONNECT_FOR_MS and says why. The server
// waits for it: no server ends for lack of a client on wslink's own timer under pvhpc (docs/applications.md).
// A view nobody used for UNUSED_MS is not reconnected by itself but on the person's return (input on the view, the
// tab shown again, the window focused, the browser online): the server counts a client connecting as user input
// (pvhpc/node/input_idle.py), so a tab left open would otherwise keep its session from idle culling, and a front end
// that closes websockets that carry nothing (limits.proxy_idle_timeout) would see it come straight back.

// The connection is the npm wslink 1.x client (SmartConnect), the one ParaViewWeb's own apps use; index.html
// loads its UMD bundle (static/vendor/wslink.js, installed by `pvhpc runtime install`), which defines `wslink`.

const STILL_QUALITY = 85;
const MOVING_QUALITY = 50;
const MAX_PIXELS = 1920 * 1200;        // a frame larger than this costs more than it shows
const STALE_RETRY_MS = 40;
const HELLO_TIMEOUT_MS = 20000;
const INTERACT = "pvhpc.viewport.interact";
const INTERACT_IN_FLIGHT = 2;          // interact calls out at once over a far link ...
const LINK_SHARE = 0.25;               // ... one whose round trip, less the server's work, is more than this of a render
const RECONNECT_DELAYS_MS = [1000, 2000, 4000, 8000, 15000, 30000];
const RECONNECT_FOR_MS = 10 * 60 * 1000;
const UNUSED_MS = 5 * 60 * 1000;
const CLOSE_NOT_SHARED = 4403;         // the share gate's close code for a sharee whose grant is gone
const WATCH_MS = 1000;                 // a shared session's view asks this often whether another changed it
const FRESH_EVERY = 5;                 // ... and every this many asks, for a whole picture regardless

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class RemoteView {
  // container: the element that takes the mouse; image: the <img> frames are shown in;
  // onStatus(text, isError): where to say what happens; canReconnect(): resolves to null while the session may
  // be reconnected to, or to the reason it may not (it ended); onGaveUp(reason): reconnecting stopped.
  constructor(container, image, onStatus, { canReconnect = async () => null, onGaveUp = () => {} } = {}) {
    this.container = container;
    this.image = image;
    this.onStatus = onStatus;
    this.canReconnect = canReconnect;
    this.onGaveUp = onGaveUp;
    this.url = null;
    this.secret = null;
    this.closed = false;                // closed on purpose: never reconnected
    this.reconnecting = false;
    this.reconnects = 0;
    this.wake = null;                   // ends the wait before the next try early (the browser is online again)
    this.onOnline = () => this.wake && this.wake();
    this.lastUse = Date.now();          // the view opened, or the person's last mouse or key on it
    this.onReturn = null;               // listeners of a view waiting for its person to come back
    this.connection = null;
    this.mtime = 0;
    this.shownQuality = 0;
    this.frames = 0;
    this.frameWanted = false;
    this.rendering = false;
    this.dragButton = null;
    this.queuedMove = null;
    this.direct = false;                // the server answers INTERACT
    this.chain = Promise.resolve();     // ParaView's pair: each event's calls after the one before's
    this.waiting = [];                  // INTERACT: the calls not sent yet (each a list of events) ...
    this.inFlight = 0;                  // ... those sent and not answered
    this.shown = Promise.resolve();     // ... and their pictures, shown in the order they were asked for
    this.linkMs = 0;                    // the round trip less the server's work, of the last call that was out alone
    this.workMs = 0;                    // the server's work for the last picture (its render and JPEG)
    this.listeners = [];
    this.resizeObserver = null;
    this.watching = null;
    this.freshWanted = false;
    this.role = "owner";                // or a sharee's "view" or "control"
  }

  // role: "owner", or the role of a session shared with this user ("view": the server refuses everything but the
  // picture, so nothing is created here and the mouse is not sent).
  async open(url, secret, role = "owner") {
    this.url = url;
    this.secret = secret;
    this.role = role;
    this.onStatus("Connecting to the session's server…");
    this._connection("connecting");
    await this._connect();
    // A session opened with a data file shows it already; an empty one gets a cone so there is something to turn.
    const listing = role === "view" ? { sources: [true] } : await this.connection.call("pv.proxy.manager.list", []);
    if (!listing || !listing.sources || listing.sources.length === 0) {
      await this.connection.call("pv.proxy.manager.create", ["Cone", -1]);
      await this.connection.call("viewport.camera.reset", [-1]);
    }
    // No events: the first picture, and whether the server has the one-call path.
    try {
      const asked = performance.now();
      const first = await this.connection.call(INTERACT, [[], this._options(STILL_QUALITY, 0)]);
      this._measureLink(first, asked, true);
      this._show(first, STILL_QUALITY);
      this.direct = true;
    } catch (error) {
      this.direct = false;   // not pvhpc's server: ParaView's own calls
    }
    this.attach();
    this.onStatus(this.role === "view" ? "Connected, view only: you see the session as its owner works."
      : "Connected. Drag to rotate, right or middle drag to pan, wheel to zoom.");
    this._connection("connected");
    if (!this.direct) this.requestFrame();
    window.addEventListener("online", this.onOnline);
    if (this.role !== "owner") this.watch(true);
  }

  // While others look on or drive (a shared session), ask every WATCH_MS for a newer picture, with this view's
  // mtime: the server's picture cache is one per view for all its clients, and any client's change renders it
  // anew (an interaction marks it for a render, pvhpc's own calls and a camera reset invalidate it, a new or
  // changed source leaves a representation dirty), so its mtime moves and the answer carries an image only
  // then. Every FRESH_EVERY-th ask is for a whole picture all the same: a safety net for a change made without
  // telling ParaView's cache. The timer outlives a dropped link (it asks nothing while there is no connection),
  // so a reconnected view goes on watching.
  watch(on) {
    if (on && !this.watching) {
      let ticks = 0;
      this.watching = setInterval(() => this.requestFrame(++ticks % FRESH_EVERY === 0), WATCH_MS);
    }
    if (!on && this.watching) {
      clearInterval(this.watching);
      this.watching = null;
    }
  }

  async _connect() {
    this._forgetCalls();
    this.connection = await connect(this.url, this.secret, (event) => {
      this.connection = null;
      this.detach();
      const why = event.reason || `connection lost, code ${event.code}`;
      // The share gate (pvhpc/node/share_gate.py) closes a revoked sharee's link with this code: retrying would
      // only be refused again, so stop at once and say why.
      if (event.code === CLOSE_NOT_SHARED) return this._giveUp(null, "This session is no longer shared with you.");
      if (Date.now() - this.lastUse > UNUSED_MS) this._reconnectOnReturn(why);
      else this._reconnect(why);
    });
  }

  // What was asked of a connection before it dropped is not asked again of the next: a drag ended with it. (Its
  // answers, should any still come, are dropped: _pump.)
  _forgetCalls() {
    this.waiting = [];
    this.inFlight = 0;
    this.shown = Promise.resolve();
    this.queuedMove = null;
  }

  // A view nobody used lately: reconnected when its person is back, not before (see the top of this file).
  _reconnectOnReturn(why) {
    if (this.closed || this.onReturn) return;
    this._connection("waiting");
    this.onStatus(`Disconnected (${why}) while nobody used the view; it reconnects when you use it.`, true);
    const back = () => {
      if (document.hidden) return;
      this._stopWaitingForReturn();
      this.lastUse = Date.now();
      this._reconnect(why);
    };
    this.onReturn = [
      [this.container, "pointerdown"], [this.container, "keydown"], [this.container, "wheel"],
      [document, "visibilitychange"], [window, "focus"], [window, "online"],
    ].map(([target, type]) => { target.addEventListener(type, back); return [target, type, back]; });
  }

  _stopWaitingForReturn() {
    for (const [target, type, handler] of this.onReturn || []) target.removeEventListener(type, handler);
    this.onReturn = null;
  }

  // The state of the link, for the page and its tests: connecting, connected, reconnecting, gave-up.
  _connection(state) {
    this.container.dataset.connection = state;
  }

  async _reconnect(why) {
    if (this.reconnecting || this.closed) return;
    this.reconnecting = true;
    const since = Date.now();
    let tries = 0;
    let lastError = why;
    this._connection("reconnecting");
    try {
      while (!this.closed) {
        const delay = RECONNECT_DELAYS_MS[Math.min(tries, RECONNECT_DELAYS_MS.length - 1)] * (0.8 + 0.4 * Math.random());
        if (Date.now() - since + delay > RECONNECT_FOR_MS) {
          return this._giveUp(`no answer for ${Math.round((Date.now() - since) / 60000)} min after ${tries} tries ` +
                              `(last: ${lastError})`);
        }
        tries += 1;
        this.onStatus(`Connection lost (${lastError}). Reconnecting in ${Math.max(1, Math.round(delay / 1000))} s ` +
                      `(try ${tries})…`, true);
        await new Promise((resolve) => {
          const timer = setTimeout(resolve, delay);
          this.wake = () => { clearTimeout(timer); resolve(); };
        });
        this.wake = null;
        if (this.closed) return;
        const refused = await this.canReconnect().catch(() => null);   // pvhpc unreachable too: try anyway
        if (refused) return this._giveUp(refused);
        this.onStatus(`Reconnecting (try ${tries})…`, true);
        try {
          await this._connect();
        } catch (error) {
          if (error.code === CLOSE_NOT_SHARED) return this._giveUp(null, "This session is no longer shared with you.");
          lastError = error.message;
          continue;
        }
        this.reconnects += 1;
        this.container.dataset.reconnects = String(this.reconnects);
        this.mtime = 0;   // the server's count starts again with a new client: ask for a whole picture
        this.attach();
        this._connection("connected");
        this.onStatus("Reconnected to the same session. Drag to rotate, right or middle drag to pan, wheel to zoom.");
        this.requestFrame();
        return;
      }
    } finally {
      this.reconnecting = false;
    }
  }

  // words: what to show instead of "Gave up reconnecting: <reason>." (a refusal that no retry can change).
  _giveUp(reason, words = null) {
    this._connection("gave-up");
    this.onStatus(words || `Gave up reconnecting: ${reason}.`, true);
    this.onGaveUp(reason || words);
  }

  close() {
    this.closed = true;
    this.watch(false);
    this._stopWaitingForReturn();
    window.removeEventListener("online", this.onOnline);
    if (this.wake) this.wake();
    this.detach();
    if (this.connection) {
      this.connection.close();
      this.connection = null;
    }
  }

  async addSource(name) {
    this.lastUse = Date.now();
    await this.connection.call("pv.proxy.manager.create", [name, -1]);
    this.requestFrame();
  }

  async resetCamera() {
    this.lastUse = Date.now();
    await this.connection.call("viewport.camera.reset", [-1]);
    this.requestFrame();
  }

  // -- frames ------------------------------------------------------------------------------------

  // fresh: a whole picture even if the server thinks this view has it (another client's work may have changed the
  // scene without this view's own renders seeing it).
  requestFrame(fresh = false) {
    this.frameWanted = true;
    if (fresh) this.freshWanted = true;
    if (!this.rendering) this._renderLoop();
  }

  _size() {
    const ratio = window.devicePixelRatio || 1;
    let width = Math.max(1, Math.round(this.container.clientWidth * ratio));
    let height = Math.max(1, Math.round(this.container.clientHeight * ratio));
    const scale = Math.sqrt(Math.min(1, MAX_PIXELS / (width * height)));
    return [Math.round(width * scale), Math.round(height * scale)];
  }

  async _renderLoop() {
    this.rendering = true;
    try {
      while (this.connection) {
        const moving = this.dragButton !== null;
        const upgrade = !moving && this.shownQuality > 0 && this.shownQuality < STILL_QUALITY;
        if (!this.frameWanted && !upgrade) break;
        this.frameWanted = false;
        const fresh = this.freshWanted;
        this.freshWanted = false;
        const quality = moving ? MOVING_QUALITY : STILL_QUALITY;
        // mtime: the server sends no image when nothing changed since the frame we have (saves the link);
        // a quality upgrade of an unchanged scene must ask with 0 to get one.
        const reply = await this.connection.call("viewport.image.render",
                                                 [this._options(quality, upgrade || fresh ? 0 : this.mtime)]);
        // A stale answer carries ParaView's previous picture, which after pvhpc's own calls can be older than
        // the one shown: with those, only a finished picture is shown.
        if (reply && reply.image && !(this.direct && reply.stale)) {
          this._show(reply, quality);
        } else if (upgrade) {
          this.shownQuality = STILL_QUALITY;   // nothing newer to show
        }
        if (reply && reply.stale) {
          await sleep(STALE_RETRY_MS);
          this.frameWanted = true;
        }
      }
    } catch (error) {
      if (this.connection) this.onStatus(`The view could not be rendered: ${error.message}`, true);
    } finally {
      this.rendering = false;
    }
  }

  // What an INTERACT answer says of the link and the server: the server's work for a picture, and, for a call that
  // was out alone (its round trip not spent waiting behind another of this view's calls), the rest of its round
  // trip, the link's.
  _measureLink(reply, asked, alone) {
    if (!reply || typeof reply.workTime !== "number") return;
    if (reply.image) this.workMs = reply.workTime;
    if (alone) this.linkMs = Math.max(0, performance.now() - asked - reply.workTime);
  }

  _options(quality, mtime) {
    return { size: this._size(), view: -1, quality, mtime, localTime: Date.now() };
  }

  _show(reply, quality) {
    if (!reply || !reply.image) return;
    this.image.src = "data:image/jpeg;base64," + reply.image;
    this.mtime = reply.mtime;
    this.shownQuality = quality;
    this.frames += 1;
    this.container.dataset.frames = String(this.frames);
  }

  // -- mouse and keys ----------------------------------------------------------------------------

  attach() {
    const on = (target, type, handler, options) => {
      target.addEventListener(type, handler, options);
      this.listeners.push([target, type, handler, options]);
    };
    const c = this.container;
    if (this.role === "view") {
      this.resizeObserver = new ResizeObserver(() => this.requestFrame());
      this.resizeObserver.observe(c);
      return;   // a view-only sharee's input would be refused by the server anyway (pvhpc/node/share_gate.py)
    }
    on(c, "pointerdown", (e) => this._pointerDown(e));
    on(c, "pointermove", (e) => this._pointerMove(e));
    on(c, "pointerup", (e) => this._pointerUp(e));
    on(c, "pointercancel", (e) => this._pointerUp(e));
    on(c, "contextmenu", (e) => e.preventDefault());
    on(c, "wheel", (e) => this._wheel(e), { passive: false });
    on(c, "keydown", (e) => this._key(e));
    this.resizeObserver = new ResizeObserver(() => this.requestFrame());
    this.resizeObserver.observe(c);
  }

  detach() {
    for (const [target, type, handler, options] of this.listeners) target.removeEventListener(type, handler, options);
    this.listeners = [];
    if (this.resizeObserver) this.resizeObserver.disconnect();
    this.resizeObserver = null;
    this.dragButton = null;
  }

  _position(e) {
    const box = this.container.getBoundingClientRect();
    // ParaView takes the position as a fraction of the view, y upwards.
    return [(e.clientX - box.left) / box.width, 1 - (e.clientY - box.top) / box.height];
  }

  _pointerDown(e) {
    if (this.dragButton !== null) return;
    // ParaView's defaults: left rotates, middle pans, right zooms. Here right drags pan too
    // (zoom is on the wheel, where users look for it).
    this.dragButton = e.button === 0 && !e.shiftKey ? "left" : "middle";
    this.container.setPointerCapture(e.pointerId);
    this.container.focus({ preventScroll: true });
    e.preventDefault();
    const [x, y] = this._position(e);
    this._interact("down", x, y, this.dragButton);
  }

  _pointerMove(e) {
    if (this.dragButton === null) return;
    const [x, y] = this._position(e);
    this._interact("move", x, y, this.dragButton);
  }

  _pointerUp(e) {
    if (this.dragButton === null) return;
    const [x, y] = this._position(e);
    this.dragButton = null;
    this._interact("up", x, y, null);
  }

  _wheel(e) {
    e.preventDefault();
    const lines = e.deltaMode === 1 ? e.deltaY * 40 : e.deltaMode === 2 ? e.deltaY * 800 : e.deltaY;
    // Wheel away from the user (negative deltaY) zooms in: in ParaView that is a right drag downwards.
    this._gesture("right", 0, Math.max(-0.4, Math.min(0.4, lines / 1000)));
  }

  _key(e) {
    const moves = {
      ArrowLeft: ["left", -0.05, 0], ArrowRight: ["left", 0.05, 0],
      ArrowUp: ["left", 0, 0.05], ArrowDown: ["left", 0, -0.05],
      "+": ["right", 0, -0.1], "=": ["right", 0, -0.1], "-": ["right", 0, 0.1],
    };
    const move = moves[e.key];
    if (!move) return;
    e.preventDefault();
    this._gesture(...move);
  }

  // A whole drag from the middle of the view: how wheel and keys reach ParaView's mouse handler.
  _gesture(button, dx, dy) {
    this.lastUse = Date.now();
    const events = [
      mouseEvent("down", 0.5, 0.5, button), mouseEvent("move", 0.5 + dx, 0.5 + dy, button),
      mouseEvent("up", 0.5 + dx, 0.5 + dy, null),
    ];
    if (this.direct) {
      this._send(events);   // one call, one picture
    } else {
      for (const event of events) this._send([event]);
    }
  }

  _interact(action, x, y, button) {
    this.lastUse = Date.now();
    const event = mouseEvent(action, x, y, button);
    if (action === "move" && this.queuedMove) {
      Object.assign(this.queuedMove, event);   // not sent yet: send the latest position instead
      return;
    }
    // A button's down or up ends what a waiting move may take: a later move goes after it, not into one before it.
    this.queuedMove = action === "move" ? event : null;
    this._send([event]);
  }

  _send(events) {
    if (!this.connection) return;
    if (this.direct) {
      this.waiting.push(events);
      this._pump();
      return;
    }
    // ParaView's pair: one event at a time, each event's call answered before the next is sent.
    this.chain = this.chain.then(async () => {
      if (events.includes(this.queuedMove)) this.queuedMove = null;
      if (!this.connection) return;
      for (const event of events) await this.connection.call("viewport.mouse.interaction", [event]);
      this.requestFrame();
    }).catch((error) => {
      if (this.connection) this.onStatus(`The server did not take the mouse event: ${error.message}`, true);
    });
  }

  // pvhpc's server: the waiting calls sent, in order, while fewer than INTERACT_IN_FLIGHT are out; each answer is
  // the picture its events made, a drag's at the moving quality, the one its last event (the button up) leaves at
  // the still quality. An answer that arrives for a connection since replaced is dropped.
  _pump() {
    const connection = this.connection;
    const allowedOut = this.linkMs > LINK_SHARE * this.workMs ? INTERACT_IN_FLIGHT : 1;
    while (connection && this.inFlight < allowedOut && this.waiting.length) {
      const events = this.waiting.shift();
      if (events.includes(this.queuedMove)) this.queuedMove = null;   // sent: the next move is queued anew
      const last = events[events.length - 1];
      const quality = last.action !== "up" && this.dragButton !== null ? MOVING_QUALITY : STILL_QUALITY;
      // Alone: no other call of this view's ahead of it at the server (the render loop's neither), so its round
      // trip is the link's and the server's work only.
      const alone = this.inFlight === 0 && !this.rendering;
      const asked = performance.now();
      let answer;
      try {
        answer = connection.call(INTERACT, [events, this._options(quality, this.mtime)]);
      } catch (error) {
        answer = Promise.reject(error);   // (a connection that throws at once still ends the call below)
      }
      this.inFlight += 1;
      this.shown = this.shown.then(() => answer).then(
        (reply) => {
          if (this.connection !== connection) return;
          this._measureLink(reply, asked, alone);
          this._show(reply, quality);
        },
        (error) => {
          if (this.connection === connection) this.onStatus(`The server did not take the mouse event: ${error.message}`, true);
        },
      ).finally(() => {
        if (this.connection !== connection) return;
        this.inFlight -= 1;
        this._pump();
      });
    }
  }
}

function mouseEvent(action, x, y, button) {
  return {
    view: -1, action, x, y,
    buttonLeft: button === "left", buttonMiddle: button === "middle", buttonRight: button === "right",
    shiftKey: false, ctrlKey: false, altKey: false, metaKey: false,
  };
}

// SmartConnect with a session URL (USE_HOST in it becomes the page's host) and the session's secret: it opens the
// websocket and says hello with the secret. Resolves to {call(method, args), close()}; onClose(event) is called
// once if the connection goes away by itself.
function connect(url, secret, onClose) {
  const wslink = window.wslink;
  if (!wslink || !wslink.SmartConnect) {
    return Promise.reject(new Error("the wslink client (static/vendor/wslink.js) did not load; "
                                    + "the site has to run 'pvhpc runtime install'"));
  }
  return new Promise((resolve, reject) => {
    const smart = wslink.SmartConnect.newInstance({ config: { sessionURL: url, secret } });
    let settled = false;
    let closing = false;
    const fail = (message, code = null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      smart.destroy(0);
      reject(Object.assign(new Error(message), { code }));
    };
    const timer = setTimeout(() => fail("the session's server did not answer in time"), HELLO_TIMEOUT_MS);
    smart.onConnectionReady((connection) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const session = connection.getSession();
      resolve({
        // wslink rejects with the server's error object ({code, message}); callers read .message either way.
        call: (method, args = []) => session.call(method, args).catch((error) => {
          throw new Error((error && error.message) || String(error));
        }),
        // 0: close the websocket only; never ask the server to exit (the session outlives this view).
        close: () => { closing = true; smart.destroy(0); },
      });
    });
    smart.onConnectionError((_, error) => fail(
      error && error.message ? error.message : "the connection to the session's server failed"));
    smart.onConnectionClose((_, event) => {
      if (!settled) return fail(`the connection closed (${event && event.code})`, event && event.code);
      if (!closing && onClose) onClose(event || { code: 1006, reason: "" });
    });
    smart.connect();
  });
}
