// The WebSocket to the gateway: connect, reconnect with backoff, keep-alive, and the last `seq`
// seen per `stream` (what a `resume` asks for, and how a frame shown once is not shown twice).

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 5000;
const PING_EVERY_MS = 15000;
const SILENT_LIMIT_MS = 40000; // nothing received for this long (not even a pong): reconnect

// Frames that are events (each one shown once). The others (history, orders snapshots,
// position, account, grid_state) are states: applying one again changes nothing.
const EVENT_TYPES = new Set(['kline', 'trade_event', 'risk_alert', 'reconciliation']);

export class Feed {
  /**
   * @param {string} url ws:// or wss:// address
   * @param {{onHello: Function, onFrame: Function, onState: Function}} handlers
   *   onHello(frame, reconnected) after the first frame of each connection,
   *   onFrame(frame) for every other frame, onState('connecting'|'live'|'reconnecting').
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.state = 'connecting';
    this.lastSeq = {}; // stream -> highest seq of a frame of the current market
    this.ws = null;
    this.delay = BACKOFF_FIRST_MS;
    this.retryTimer = 0;
    this.everLive = false;
    this.lastRx = 0;
    this.lastPing = 0;
    this.frames = 0;
  }

  start() {
    this._connect();
    setInterval(() => this._keepAlive(), 5000);
  }

  /** Send a frame now; false when not connected (the caller decides what to do later). */
  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Record a frame's (stream, seq) and say whether to apply it: an event frame at or below the
   * last seq of its stream was already applied (a resume overlapping live frames).
   */
  accept(frame) {
    const { stream, seq } = frame;
    if (stream == null || seq == null) return true;
    const last = this.lastSeq[stream];
    const isEvent = EVENT_TYPES.has(frame.type) || (frame.type === 'orders' && !frame.data?.snapshot);
    if (isEvent && last !== undefined && seq <= last) return false;
    if (last === undefined || seq > last) this.lastSeq[stream] = seq;
    return true;
  }

  /** Forget the seqs of the given streams (the gateway's streams were reset). */
  forget(streams) {
    for (const s of streams) delete this.lastSeq[s];
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.handlers.onState(state);
  }

  _connect() {
    this.retryTimer = 0;
    this._setState(this.everLive ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      console.warn('sqt: cannot open the WebSocket', err);
      this._retry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.lastRx = Date.now();
      this.lastPing = Date.now();
    };
    ws.onmessage = (ev) => {
      if (this.ws === ws) this._onMessage(ev.data);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this._retry();
    };
    ws.onerror = () => {
      /* a close event follows; the retry happens there */
    };
  }

  _retry() {
    if (this.retryTimer) return;
    this._setState(this.everLive ? 'reconnecting' : 'connecting');
    const wait = this.delay;
    this.delay = Math.min(this.delay * 2, BACKOFF_MAX_MS);
    this.retryTimer = setTimeout(() => this._connect(), wait);
  }

  _onMessage(text) {
    this.lastRx = Date.now();
    this.frames += 1;
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      console.warn('sqt: a frame that is not JSON was ignored');
      return;
    }
    if (!frame || typeof frame.type !== 'string') return;
    if (frame.type === 'hello') {
      const reconnected = this.everLive;
      this.everLive = true;
      this.delay = BACKOFF_FIRST_MS;
      this._setState('live');
      this.handlers.onHello(frame, reconnected);
      return;
    }
    this.handlers.onFrame(frame);
  }

  _keepAlive() {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const now = Date.now();
    if (now - this.lastRx > SILENT_LIMIT_MS) {
      // A dead connection can take long to report its close: drop it and reconnect now.
      this.ws = null;
      ws.onclose = ws.onmessage = null;
      try {
        ws.close(4000, 'silent');
      } catch {
        /* already closing */
      }
      this._retry();
    } else if (now - this.lastPing >= PING_EVERY_MS) {
      this.lastPing = now;
      this.send({ type: 'ping' });
    }
  }
}
