// A websocket to the console that reconnects with backoff. Messages are JSON both ways.
//
// The server sends a fresh snapshot on every (re)connection, so the page never has to
// remember what it missed while disconnected: it redraws from the snapshot. `onOpen` runs
// on every (re)connection too: a message that must go once is the caller's to guard.

const MAX_DELAY_MS = 10000;
// The server's "not yours / gone": reconnecting would not change its mind.
const FORBIDDEN = 4403;

export class LiveSocket {
  constructor(path, { onMessage, onOpen = () => {}, onState = () => {} }) {
    this.url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
    this.onMessage = onMessage;
    this.onOpen = onOpen;
    this.onState = onState;
    this.attempt = 0;
    this.closed = false;
    this.ws = null;
    this.timer = null;
    // Come back at once when the network or the tab does.
    this.wake = () => {
      if (!this.closed && (!this.ws || this.ws.readyState === WebSocket.CLOSED)) this.reconnectNow();
    };
    window.addEventListener("online", this.wake);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.wake();
    });
  }

  connect() {
    clearTimeout(this.timer);
    if (this.closed) return this; // closed from a callback while a reconnect was due
    this.onState(this.attempt ? "reconnecting" : "connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.onState("open");
      this.onOpen();
    });
    ws.addEventListener("message", (event) => {
      this.attempt = 0;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onMessage(message);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws || this.closed) return;
      if (event.code === FORBIDDEN) {
        this.close();
        this.onState("forbidden");
        return;
      }
      this.scheduleReconnect();
    });
    return this;
  }

  scheduleReconnect() {
    this.attempt += 1;
    // Exponential backoff with jitter, so a restarted server is not stampeded.
    const base = Math.min(MAX_DELAY_MS, 500 * 2 ** (this.attempt - 1));
    const delay = base / 2 + Math.random() * (base / 2);
    this.onState("reconnecting");
    this.timer = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    const old = this.ws;
    this.ws = null;
    if (old && old.readyState <= WebSocket.OPEN) old.close();
    this.attempt = Math.max(this.attempt, 1);
    this.connect();
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    window.removeEventListener("online", this.wake);
    if (this.ws) this.ws.close();
    this.onState("closed");
  }
}
