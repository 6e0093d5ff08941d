// A wslink 1.0 client (JSON text frames), the protocol ParaView 5.11's server speaks with wslink 1.x.
// Only what the page needs: hello with the session's secret, then calls answered by id.
// docs/web.md says why this is not the npm wslink package.

const HELLO_TIMEOUT_MS = 20000;

export class WslinkError extends Error {}

export class WslinkConnection {
  constructor(socket) {
    this.socket = socket;
    this.nextId = 0;
    this.pending = new Map();        // message id -> {resolve, reject}
    this.onclose = null;             // (event) -> void, once the connection is gone
    socket.addEventListener("message", (event) => this._receive(event));
    socket.addEventListener("close", (event) => {
      const error = new WslinkError(`connection closed (${event.code}${event.reason ? ": " + event.reason : ""})`);
      for (const { reject } of this.pending.values()) reject(error);
      this.pending.clear();
      if (this.onclose) this.onclose(event);
    });
  }

  // Open the websocket and authenticate; resolves to a connection ready for calls.
  static connect(url, secret) {
    return new Promise((resolve, reject) => {
      let socket;
      try {
        socket = new WebSocket(url);
      } catch (error) {
        reject(new WslinkError(`cannot open ${url}: ${error.message}`));
        return;
      }
      const timer = setTimeout(() => {
        socket.close();
        reject(new WslinkError("the session's server did not answer in time"));
      }, HELLO_TIMEOUT_MS);
      socket.addEventListener("error", () => {
        clearTimeout(timer);
        reject(new WslinkError("the connection to the session's server failed"));
      }, { once: true });
      socket.addEventListener("open", () => {
        const connection = new WslinkConnection(socket);
        connection._call("wslink.hello", [{ secret }], "system").then((result) => {
          clearTimeout(timer);
          connection.clientId = result && result.clientID;
          resolve(connection);
        }, (error) => {
          clearTimeout(timer);
          socket.close();
          reject(error);
        });
      }, { once: true });
    });
  }

  call(method, args = []) {
    return this._call(method, args, "rpc");
  }

  close() {
    this.socket.close(1000);
  }

  _call(method, args, kind) {
    if (this.socket.readyState !== WebSocket.OPEN) {
      return Promise.reject(new WslinkError("not connected"));
    }
    const id = `${kind}:c0:${this.nextId++}`;
    const message = { wslink: "1.0", id, method, args, kwargs: {} };
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.send(JSON.stringify(message));
    });
  }

  _receive(event) {
    if (typeof event.data !== "string") return;   // binary attachments: nothing the page asks for
    let reply;
    try {
      reply = JSON.parse(event.data);
    } catch {
      return;
    }
    const waiting = this.pending.get(reply.id);
    if (!waiting) return;                          // publications (not subscribed) and strays
    this.pending.delete(reply.id);
    if (reply.error) {
      const text = typeof reply.error === "object" ? reply.error.message || JSON.stringify(reply.error) : String(reply.error);
      waiting.reject(new WslinkError(text));
    } else {
      waiting.resolve(reply.result);
    }
  }
}
