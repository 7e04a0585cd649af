// chatstream-client.js: a WebSocket client for the chatstream protocol v1.1
// (docs/PROTOCOL.md), for browsers and Node.js. It has no DOM dependence and
// no dependencies; docs/CLIENT.md documents its API.
//
// With a token provider it signs in with a first `auth` frame on every
// connection, sends a fresh token before the current one expires, stops on
// close code 4001 (refused) and reconnects with a new token on 4002
// (expired).
//
// One ChatClient owns one connection at a time. It reconnects by itself with
// exponential backoff and full jitter, resumes every room with `since` the
// last seq it saw (fetching with `history` what did not fit the server's
// page), never emits a message twice, queues sends while it is offline, and
// paces its frames below the server's frame rate.

/** Limits and timings used when the constructor's options leave them out. */
export const DEFAULTS = Object.freeze({
  // Reconnect delays: attempt k waits a random time in [0, min(maxMs, initialMs·2^k)).
  backoff: Object.freeze({ initialMs: 500, maxMs: 30_000 }),
  // A connection that stayed open this long starts the backoff over; one
  // that drops sooner (a server that accepts and closes) keeps growing it.
  stableMs: 5_000,
  // A send not acknowledged within this time rejects with code "timeout".
  sendTimeoutMs: 15_000,
  // A history request not answered within this time rejects with code "timeout".
  requestTimeoutMs: 15_000,
  // Every keepaliveMs, a connection that has received nothing since the
  // last check (so for keepaliveMs to twice that) sends a ping; if nothing
  // at all arrives within requestTimeoutMs after it, the connection is
  // dead (half-open) and is dropped and resumed. 0: never ping.
  keepaliveMs: 25_000,
  // Sends waiting for their ack (queued or in flight); one more rejects
  // with code "offline_queue_full".
  maxQueue: 100,
  // A socket that has not opened within this time is abandoned and retried.
  connectTimeoutMs: 10_000,
  // Client frames larger than this are refused locally with "too_large":
  // the server closes the connection on frames over its 64 KiB read limit.
  maxFrameBytes: 65_536,
  // Number of recent seqs remembered per room for deduplication.
  seenPerRoom: 1_000,
  // Delay before retrying a join the server answered with "unavailable"
  // or "rate_limited" without retry_after_ms.
  joinRetryMs: 1_000,
  // Frames per second the client writes at most, with a burst: half the
  // server's default --frame-rate and --frame-burst (20 and 40), so that
  // network jitter never bunches them over the server's limit.
  frameRate: 10,
  frameBurst: 20,
  // Messages asked for per history request while filling a resume's gap
  // (the protocol's largest limit; the server's page budget may cut it).
  resumePage: 500,
  // A token is refreshed this long before its exp, or a tenth of its
  // lifetime before when that is shorter.
  refreshBeforeMs: 30_000,
  // Delay before a failed refresh (provider error or refusal) is tried
  // again, while the token is still valid.
  refreshRetryMs: 5_000,
});

const OPEN = 1; // WebSocket.OPEN, the same in every implementation
const NORMAL_CLOSURE = 1000;

/** Close code of a connection whose token was refused (PROTOCOL.md v1.1): not retried. */
export const CLOSE_UNAUTHORIZED = 4001;
/** Close code of a connection whose token expired: reconnected with a new token. */
export const CLOSE_TOKEN_EXPIRED = 4002;

// Server frames that answer a client frame, in the order of the client's
// frames (PROTOCOL.md §11.2).
const replyTypes = new Set(['joined', 'left', 'history', 'ack', 'error', 'pong']);

// Local error codes, in addition to the server's codes of PROTOCOL.md §9.
export const CODE_TIMEOUT = 'timeout';
export const CODE_QUEUE_FULL = 'offline_queue_full';
export const CODE_CLOSED = 'closed';
export const CODE_DISCONNECTED = 'disconnected';
export const CODE_LEFT = 'left';
// The server's code for a refused or missing token; a token provider
// throws an error with this code to say the user is not signed in.
export const CODE_UNAUTHORIZED = 'unauthorized';
// A token provider failed (network, server): retried with backoff.
export const CODE_TOKEN_UNAVAILABLE = 'token_unavailable';

/**
 * ChatError is the rejection value of every promise of ChatClient and the
 * payload of its "error" event. `code` is a protocol error code (PROTOCOL.md
 * §9) or one of the local codes above; `message` is meant for people.
 */
export class ChatError extends Error {
  constructor({ code, message, ref, room, moderator, retryAfterMs }) {
    super(message || code);
    this.name = 'ChatError';
    this.code = code;
    if (ref) this.ref = ref;
    if (room) this.room = room;
    if (moderator) this.moderator = moderator;
    if (retryAfterMs) this.retryAfterMs = retryAfterMs;
  }
}

const seqPattern = /^(\d+)-(\d+)$/;

// isAfter reports whether seq a comes after seq b; seqs not of the form
// "<ms>-<n>" only compare as different.
function isAfter(a, b) {
  const c = compareSeq(a, b);
  return Number.isNaN(c) ? a !== b : c > 0;
}

/**
 * parseSeq parses a seq of the form "<ms>-<n>" into BigInts, or returns null
 * for any other form. Seqs are opaque on the wire; this helper is the only
 * place that looks inside them.
 */
export function parseSeq(seq) {
  const m = typeof seq === 'string' ? seqPattern.exec(seq) : null;
  return m ? { ms: BigInt(m[1]), n: BigInt(m[2]) } : null;
}

/**
 * compareSeq returns -1, 0 or 1 as seq a sorts before, equal to or after b
 * within one room, comparing the parts numerically (never as strings). It
 * returns NaN when either seq does not have the "<ms>-<n>" form.
 */
export function compareSeq(a, b) {
  const x = parseSeq(a);
  const y = parseSeq(b);
  if (!x || !y) return NaN;
  if (x.ms !== y.ms) return x.ms < y.ms ? -1 : 1;
  if (x.n !== y.n) return x.n < y.n ? -1 : 1;
  return 0;
}

// invisibleChar matches the characters the server refuses in names
// (PROTOCOL.md §3): controls, format and bidirectional characters,
// zero-width and default-ignorable ones, blanks that render as nothing,
// white space other than the space, private-use and surrogate code points,
// and the replacement character.
const invisibleChar = /[\p{Cc}\p{Cf}\p{Bidi_Control}\p{Join_Control}\p{Default_Ignorable_Code_Point}\p{Variation_Selector}\p{Co}\p{Cs}\u200B\uFEFF\uFFFD\u2800\u3164\u115F\u1160\uFFA0\u2062-\u2064\u{1D159}\u{1D173}-\u{1D17A}]|(?! )\p{White_Space}/u;

// confusableScripts are the scripts whose letters pass for one another; a
// name may use letters of one of them only.
const confusableScripts = [/\p{Script=Latin}/u, /\p{Script=Greek}/u, /\p{Script=Cyrillic}/u];

/**
 * validateUser returns why name is not a valid user name (PROTOCOL.md §3),
 * or "" when it is valid. It applies the server's name rules to the name
 * as the server sees it, in Unicode normal form NFKC (full-width "ａｌｉｃｅ"
 * is "alice").
 */
export function validateUser(name) {
  if (typeof name !== 'string' || name === '') return 'a name is required';
  const invisible = 'a name cannot contain control or invisible characters';
  if (invisibleChar.test(name)) return invisible;
  const n = name.normalize('NFKC');
  if (n.trim() === '') return 'a name is required';
  if ([...n].length > 32) return 'a name has at most 32 characters';
  if (n.trim() !== n) return 'a name cannot start or end with a space';
  if (invisibleChar.test(n) || !/^[\p{L}\p{M}\p{N}\p{P}\p{S} ]+$/u.test(n)) return invisible;
  const letters = [...n].filter((c) => /\p{L}/u.test(c));
  if (confusableScripts.filter((script) => letters.some((c) => script.test(c))).length > 1) {
    return 'a name cannot mix Latin, Greek and Cyrillic letters';
  }
  return '';
}

/**
 * validateRef returns why ref is not a valid client reference (PROTOCOL.md
 * §5: at most 64 printable characters), or "" when it is valid.
 */
export function validateRef(ref) {
  if (typeof ref !== 'string') return 'a ref must be a string';
  if ([...ref].length > 64) return 'a ref has at most 64 characters';
  if (!/^[\p{L}\p{M}\p{N}\p{P}\p{S} ]*$/u.test(ref)) return 'a ref may contain printable characters only';
  return '';
}

/**
 * validateRoom returns why name is not a valid room name (PROTOCOL.md §5),
 * or "" when it is valid.
 */
export function validateRoom(name) {
  if (typeof name !== 'string' || name === '') return 'a room name is required';
  if (name.length > 64) return 'a room name has at most 64 characters';
  if (!/^[A-Za-z0-9_.:-]+$/.test(name)) return 'a room name may contain only letters, digits and _ - . :';
  return '';
}

// wsURL turns an http(s) or ws(s) URL of the /ws endpoint into the WebSocket
// URL for user; without user (a token names it) the URL names nobody.
function wsURL(url, user) {
  const u = new URL(url, globalThis.location?.href);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (user) u.searchParams.set('user', user);
  return u.href;
}

function randomId() {
  const bytes = new Uint8Array(6);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(36).padStart(2, '0')).join('');
}

const encoder = new TextEncoder();

// Codes after which a join is tried again instead of given up.
const retryableJoin = new Set(['rate_limited', 'unavailable']);

/**
 * ChatClient is a chatstream connection that survives disconnects.
 *
 * Events (subscribe with on/off/once; listeners get one argument):
 *   status   {state: 'connecting'|'connected'|'reconnecting'|'offline', retryInMs?, attempt?}
 *   joined   {room, history: [message], truncated, resumed, more}
 *   message  {room, id, seq, user, text, ts, ref?, own}
 *   ack      {room, id, seq, ref}
 *   error    ChatError (every error frame, and local failures of requests)
 *   left     {room, error?}
 *   presence {room, users, count, joined, left, snapshot}
 *   authed   {user, name, exp, refreshed} (with a token provider: signed in
 *            or a fresh token accepted)
 *   unauthorized {reason, by: 'server'|'provider'} (the server refused the
 *            token, close 4001, or the provider said nobody is signed in:
 *            the client stopped)
 */
export class ChatClient {
  #url;
  #user;
  #tokenProvider;
  #WebSocket;
  #opts;
  #random;
  #listeners = new Map();

  #ws = null;
  #stopped = true;
  #attempt = 0;
  #openedAt = 0;
  #retryTimer = null;
  #connectTimer = null;
  #status = { state: 'offline' };
  #readyWaiters = [];
  // ready is set once the socket may carry frames: open, and signed in
  // when there is a token provider.
  #ready = false;

  // Signing in (token provider only): the display name and expiry (ms)
  // of the accepted token, the ref of the auth frame waiting for its
  // authed reply, the refresh timer, and the reason of the last refusal.
  #name = '';
  #expMs = 0;
  #authRef = null;
  #authTimer = null;
  #refreshTimer = null;
  #authReason = '';

  // rooms holds every room the application wants to be in, by name.
  #rooms = new Map();
  // leaving holds unconfirmed leave frames by ref: {room, resolve}.
  #leaving = new Map();
  // outbox holds sends until they are acked, rejected or timed out, in send order.
  #outbox = [];
  #pausedUntil = 0;
  #pauseTimer = null;
  #refBase = randomId();
  #refN = 0;

  // Frame pacing: frames wait in outq (as strings, with the ref and room
  // of their reply) for a token of the bucket.
  #outq = [];
  #tokens = 0;
  #tokensAt = 0;
  #pumpTimer = null;
  // unanswered holds the frames written on the current socket that wait
  // for their reply, oldest first: {ref, room, data}. Replies come in the
  // order of the frames, so a reply to a later frame proves that the
  // earlier unanswered ones were discarded by the server's rate limit.
  #unanswered = [];
  // received counts the server messages of the current socket: a frame
  // unanswered in time with nothing received since it was written shows a
  // half-open connection (see checkLink).
  #received = 0;
  // probing is set after a rate_limited error without ref: when the pause
  // ends, one cheap request finds out which frames were discarded.
  #probing = false;
  #probeRefs = new Set();
  // keepaliveTimer checks every keepaliveMs whether anything was received
  // (keepaliveSeen: #received at the last check).
  #keepaliveTimer = null;
  #keepaliveSeen = 0;
  // keepaliveWait ends the wait for the answer to the last ping.
  #keepaliveWait = null;

  /**
   * @param {object} options
   * @param {string} options.url URL of the /ws endpoint (http, https, ws or wss).
   * @param {string} [options.user] User name (PROTOCOL.md §3); required
   *   without options.token, ignored with it (the token names the user).
   * @param {() => Promise<string>} [options.token] Token provider: called
   *   before every connection and before the token's exp; resolves with a
   *   token, or rejects (code "unauthorized" stops the client, anything
   *   else is retried with backoff).
   * @param {Function} [options.WebSocket] WebSocket constructor; default globalThis.WebSocket.
   * @param {{initialMs?: number, maxMs?: number}} [options.backoff] Reconnect backoff.
   * @param {number} [options.sendTimeoutMs] See DEFAULTS.
   * @param {number} [options.requestTimeoutMs] See DEFAULTS.
   * @param {number} [options.keepaliveMs] See DEFAULTS.
   * @param {number} [options.maxQueue] See DEFAULTS.
   * @param {number} [options.connectTimeoutMs] See DEFAULTS.
   * @param {() => number} [options.random] Source of jitter in [0, 1); default Math.random.
   */
  constructor({ url, user, token, WebSocket, backoff, random, ...rest } = {}) {
    if (token !== undefined && typeof token !== 'function') {
      throw new TypeError('chatstream: token must be a function that returns a token');
    }
    const bad = token ? '' : validateUser(user);
    if (bad) throw new TypeError(`chatstream: invalid user: ${bad}`);
    if (!url) throw new TypeError('chatstream: url is required');
    this.#tokenProvider = token || null;
    // The server keeps the name in NFKC (PROTOCOL.md §3: full-width
    // "ａｌｉｃｅ" is "alice"), and messages carry that form: keep it too,
    // or own messages would not be recognised as own.
    const normal = token ? '' : user.normalize('NFKC');
    this.#url = wsURL(url, normal);
    this.#user = normal;
    this.#WebSocket = WebSocket || globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError('chatstream: no WebSocket implementation; pass options.WebSocket');
    }
    this.#opts = { ...DEFAULTS, ...rest, backoff: { ...DEFAULTS.backoff, ...backoff } };
    this.#random = random || Math.random;
    this.#tokens = this.#opts.frameBurst;
  }

  /**
   * The user name this client connects as, in NFKC as the server keeps it
   * (options.user "ａｌｉｃｅ" is "alice"); with a token provider, the user of
   * the accepted token ("" until the first authed).
   */
  get user() { return this.#user; }

  /** The display name of the accepted token ("" without one). */
  get name() { return this.#name; }

  /** When the accepted token expires, in ms since the epoch (0 without one). */
  get expiresAt() { return this.#expMs; }

  /** The last status event's payload. */
  get status() { return { ...this.#status }; }

  /** Whether the socket is open. */
  get connected() { return this.#status.state === 'connected'; }

  /** Names of the rooms the client is in or joining. */
  get rooms() { return [...this.#rooms.keys()]; }

  /** The newest seq seen in room, or null. */
  lastSeq(room) { return this.#rooms.get(room)?.lastSeq ?? null; }

  /** The present users of room from the latest presence frames: {users, count}. */
  presence(room) {
    const r = this.#rooms.get(room);
    return r ? { users: [...r.presence].sort(), count: r.presenceCount } : { users: [], count: 0 };
  }

  /** Number of sends waiting for their ack. */
  get pendingSends() { return this.#outbox.length; }

  // ---- events ----

  /** on subscribes fn to event type and returns a function that unsubscribes it. */
  on(type, fn) {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /** off unsubscribes fn from event type. */
  off(type, fn) {
    this.#listeners.get(type)?.delete(fn);
  }

  /** once subscribes fn for the next event of type only. */
  once(type, fn) {
    const off = this.on(type, (d) => { off(); fn(d); });
    return off;
  }

  #emit(type, detail) {
    const set = this.#listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(detail);
      } catch (err) {
        // A listener's bug must not break the client's state; report it
        // the way an uncaught error is reported.
        queueMicrotask(() => { throw err; });
      }
    }
  }

  #setStatus(state, extra = {}) {
    this.#status = { state, ...extra };
    this.#emit('status', { ...this.#status });
  }

  // ---- connection ----

  /**
   * connect opens the connection and keeps it open, reconnecting as needed,
   * until close. The promise resolves with true once the socket is open, or
   * with false if close is called first; it never rejects.
   */
  connect() {
    const p = new Promise((resolve) => {
      if (this.connected) resolve(true);
      else this.#readyWaiters.push(resolve);
    });
    if (this.#stopped) {
      this.#stopped = false;
      this.#attempt = 0;
      this.#open();
    }
    return p;
  }

  /**
   * close closes the connection and stops reconnecting. Pending sends,
   * joins and history requests reject with code "closed". The rooms are
   * kept: a later connect resumes them.
   */
  close() {
    this.#stop(CODE_CLOSED, 'the client was closed');
    if (this.#status.state !== 'offline') this.#setStatus('offline');
  }

  // stop closes the socket, stops reconnecting and rejects what is pending
  // with code; close and a refused token end here.
  #stop(code, message) {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#connectTimer);
    clearTimeout(this.#pauseTimer);
    this.#pausedUntil = 0;
    this.#resetWire();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      try { ws.close(NORMAL_CLOSURE); } catch { /* already closing */ }
    }
    const err = (room) => new ChatError({ code, message, room });
    for (const resolve of this.#readyWaiters.splice(0)) resolve(false);
    for (const rec of [...this.#outbox]) this.#settle(rec, null, err(rec.room));
    for (const r of this.#rooms.values()) {
      r.joined = false;
      r.joinRef = null;
      r.filling = null;
      clearTimeout(r.retryTimer);
      for (const w of r.waiters.splice(0)) w.reject(err(r.name));
      this.#failHistory(r, err(r.name));
    }
    this.#resolveLeaves();
  }

  /**
   * reconnectNow skips the rest of the backoff wait and reconnects at once.
   * It does nothing unless the client is waiting to reconnect. Call it when
   * the network comes back (the browser's "online" event).
   */
  reconnectNow() {
    if (this.#stopped || this.#ws) return;
    clearTimeout(this.#retryTimer);
    this.#open();
  }

  #open() {
    this.#retryTimer = null;
    this.#setStatus('connecting', { attempt: this.#attempt });
    let ws;
    try {
      ws = new this.#WebSocket(this.#url);
    } catch (err) {
      this.#emit('error', new ChatError({ code: CODE_DISCONNECTED, message: `cannot open a WebSocket: ${err.message}` }));
      this.#scheduleReconnect();
      return;
    }
    this.#ws = ws;
    // The socket must open, and sign in with a token provider, in time.
    this.#connectTimer = setTimeout(() => {
      if (ws === this.#ws && !this.#ready) this.#drop(ws);
    }, this.#opts.connectTimeoutMs);
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      this.#openedAt = Date.now();
      if (this.#tokenProvider) this.#authenticate(ws, false);
      else this.#becomeReady();
    };
    ws.onmessage = (ev) => {
      if (ws !== this.#ws) return;
      this.#received++;
      this.#receive(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws !== this.#ws) return;
      if (ev?.code === CLOSE_UNAUTHORIZED) this.#refused(ev.reason, 'server');
      else this.#drop(ws, ev?.code === CLOSE_TOKEN_EXPIRED);
    };
    // Browsers follow an error with a close event, but some WebSocket
    // implementations (Node 20's) do not when the connection fails: an
    // error ends the socket either way.
    ws.onerror = () => {
      if (ws === this.#ws) this.#drop(ws);
    };
  }

  // becomeReady starts using an open (and, with a token provider, signed
  // in) socket: joins and resumes every room and sends what is queued.
  #becomeReady() {
    clearTimeout(this.#connectTimer);
    this.#ready = true;
    this.#setStatus('connected');
    for (const resolve of this.#readyWaiters.splice(0)) resolve(true);
    for (const r of this.#rooms.values()) this.#sendJoin(r);
    if (this.#opts.keepaliveMs > 0) {
      this.#keepaliveSeen = this.#received;
      const ws = this.#ws;
      this.#keepaliveTimer = setInterval(() => this.#keepalive(ws), this.#opts.keepaliveMs);
    }
  }

  // keepalive pings when nothing came from the server since the last
  // check, so that a connection whose network path died is noticed even
  // when the client only reads (PROTOCOL.md §6.7): an unanswered ping
  // with nothing else received drops it (checkLink).
  #keepalive(ws) {
    if (ws !== this.#ws || !this.#ready) return;
    if (this.#received !== this.#keepaliveSeen) {
      this.#keepaliveSeen = this.#received;
      return;
    }
    if (this.#keepaliveWait) return; // the last ping's wait decides
    const ref = this.#nextRef('k');
    // Its answer is a pong, or bad_frame from a server without ping:
    // either shows the link works, and neither is the application's.
    this.#probeRefs.add(ref);
    if (!this.#write({ type: 'ping', ref })) return;
    this.#keepaliveWait = setTimeout(() => {
      this.#keepaliveWait = null;
      this.#probeRefs.delete(ref);
      if (ws === this.#ws && !this.#unqueue(ref)) this.#checkLink(ref);
    }, this.#opts.requestTimeoutMs);
  }

  // ---- signing in ----

  // authenticate asks the token provider for a token and sends it in an
  // auth frame on ws: the first frame of a connection, or a refresh.
  async #authenticate(ws, refresh) {
    let token;
    this.#authReason = '';
    try {
      token = await this.#tokenProvider();
      if (typeof token !== 'string' || !token) throw new TypeError('the token provider returned no token');
    } catch (err) {
      if (ws !== this.#ws) return;
      if (err?.code === CODE_UNAUTHORIZED) {
        this.#refused(err.message || 'not signed in', 'provider');
        return;
      }
      this.#emit('error', new ChatError({ code: CODE_TOKEN_UNAVAILABLE, message: `cannot get a token: ${err?.message || err}` }));
      if (refresh) this.#scheduleRefresh(this.#opts.refreshRetryMs);
      else this.#drop(ws);
      return;
    }
    if (ws !== this.#ws || ws.readyState !== OPEN) return;
    const ref = this.#nextRef('a');
    this.#authRef = ref;
    try {
      // Not paced: the first frame must go first, and a refresh must not
      // wait behind a backlog of sends until the token has expired.
      ws.send(JSON.stringify({ type: 'auth', token, ref }));
      this.#tokens -= 1;
    } catch {
      return; // the socket is failing; its close event follows
    }
    if (refresh) {
      // An unanswered refresh (the server discarded the frame) is tried
      // again; the 4002 at exp is the last resort.
      clearTimeout(this.#authTimer);
      this.#authTimer = setTimeout(() => {
        if (ws === this.#ws && this.#authRef === ref) this.#scheduleRefresh(0);
      }, this.#opts.requestTimeoutMs);
    }
  }

  #onAuthed(f) {
    if (!this.#authRef || (f.ref && f.ref !== this.#authRef)) return; // a late reply
    this.#authRef = null;
    clearTimeout(this.#authTimer);
    const refreshed = this.#ready;
    this.#user = typeof f.user === 'string' ? f.user : this.#user;
    this.#name = typeof f.name === 'string' && f.name ? f.name : this.#user;
    const exp = Date.parse(f.exp);
    this.#expMs = Number.isFinite(exp) ? exp : 0;
    this.#authReason = '';
    if (this.#expMs) {
      const life = this.#expMs - Date.now();
      this.#scheduleRefresh(life - Math.min(this.#opts.refreshBeforeMs, life / 10));
    }
    this.#emit('authed', { user: this.#user, name: this.#name, exp: f.exp ?? null, refreshed });
    if (!refreshed) this.#becomeReady();
  }

  // scheduleRefresh sends a fresh token after ms, unless the token expires
  // first (the server then closes with 4002 and the reconnect signs in).
  #scheduleRefresh(ms) {
    clearTimeout(this.#refreshTimer);
    const ws = this.#ws;
    if (!ws || !this.#expMs || Date.now() + ms >= this.#expMs) return;
    this.#refreshTimer = setTimeout(() => {
      if (ws === this.#ws) this.#authenticate(ws, true);
    }, Math.max(0, ms));
  }

  // refused stops the client after the server refused its token (close
  // 4001) or the provider said the user is not signed in: reconnecting
  // with the same token cannot help.
  #refused(reason, by) {
    // The error frame's message says more than a close reason, which is
    // cut to 123 bytes.
    const why = this.#authReason || reason || 'the token was refused';
    this.#authReason = '';
    this.#stop(CODE_UNAUTHORIZED, why);
    this.#setStatus('offline', { reason: why });
    this.#emit('unauthorized', { reason: why, by });
  }

  // drop forgets the current socket, puts in-flight work back in line and
  // schedules a reconnect: at once when the token expired (4002), with a
  // new token from the provider.
  #drop(ws, expired = false) {
    clearTimeout(this.#connectTimer);
    this.#ws = null;
    this.#resetWire();
    if (this.#openedAt && Date.now() - this.#openedAt >= this.#opts.stableMs) this.#attempt = 0;
    this.#openedAt = 0;
    try { ws.close(); } catch { /* already closed */ }
    for (const r of this.#rooms.values()) {
      r.joined = false;
      r.joinRef = null;
      r.filling = null;
      clearTimeout(r.retryTimer);
      this.#failHistory(r, new ChatError({ code: CODE_DISCONNECTED, message: 'the connection was lost', room: r.name }));
    }
    this.#resolveLeaves();
    for (const rec of this.#outbox) {
      if (rec.state === 'sent') {
        // Stored or not: the rejoin's history tells (PROTOCOL.md §11.3).
        rec.state = 'queued';
        rec.uncertain = true;
      }
    }
    if (!this.#stopped) this.#scheduleReconnect(expired);
  }

  #scheduleReconnect(now = false) {
    const { initialMs, maxMs } = this.#opts.backoff;
    const cap = Math.min(maxMs, initialMs * 2 ** Math.min(this.#attempt, 30));
    const delay = now ? 0 : Math.floor(this.#random() * cap);
    this.#attempt++;
    this.#setStatus('reconnecting', { retryInMs: delay, attempt: this.#attempt });
    this.#retryTimer = setTimeout(() => this.#open(), delay);
  }

  // write queues a frame for the open socket and reports whether there is
  // one. Frames go out in order, paced by the token bucket and held while
  // the client is paused by a rate_limited error.
  // A frame given as a string comes with meta {type, ref, room}.
  #write(frame, meta = frame) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== OPEN || !this.#ready) return false;
    const data = typeof frame === 'string' ? frame : JSON.stringify(frame);
    this.#outq.push({ data, type: meta.type, ref: meta.ref, room: meta.room });
    this.#pump();
    return true;
  }

  // pump writes queued frames while tokens last and sets a timer for the rest.
  #pump() {
    clearTimeout(this.#pumpTimer);
    this.#pumpTimer = null;
    const { frameRate, frameBurst } = this.#opts;
    while (this.#outq.length) {
      const ws = this.#ws;
      if (!ws || ws.readyState !== OPEN) return;
      const now = Date.now();
      if (now < this.#pausedUntil) return; // the pause timer pumps again
      this.#tokens = Math.min(frameBurst, this.#tokens + ((now - this.#tokensAt) * frameRate) / 1000);
      this.#tokensAt = now;
      if (this.#tokens < 1) {
        this.#pumpTimer = setTimeout(() => this.#pump(), Math.ceil(((1 - this.#tokens) * 1000) / frameRate));
        return;
      }
      const item = this.#outq.shift();
      try {
        ws.send(item.data);
      } catch {
        return; // the socket is failing; its close event follows
      }
      this.#tokens -= 1;
      if (item.ref) {
        item.receivedAt = this.#received;
        this.#unanswered.push(item);
      }
    }
  }

  // checkLink is called when the reply to the frame with ref is overdue.
  // When that frame was written on the current socket and nothing at all
  // has come from the server since, the connection is half-open (a dead
  // network path that no close event reports): drop it like a close, which
  // marks the sends in flight uncertain, and reconnect and resume.
  #checkLink(ref) {
    const ws = this.#ws;
    if (!ws || !this.#ready) return;
    const item = this.#unanswered.find((x) => x.ref === ref);
    if (!item || this.#received !== item.receivedAt) return;
    this.#emit('error', new ChatError({ code: CODE_DISCONNECTED, message: 'the server stopped answering; reconnecting' }));
    this.#drop(ws);
  }

  // unqueue removes the frame with ref from the pacing queue and reports
  // whether it was still there (not yet written).
  #unqueue(ref) {
    const i = this.#outq.findIndex((x) => x.ref === ref);
    if (i < 0) return false;
    this.#outq.splice(i, 1);
    return true;
  }

  // resetWire forgets the frames of a socket that is gone.
  #resetWire() {
    this.#ready = false;
    this.#authRef = null;
    clearTimeout(this.#authTimer);
    clearTimeout(this.#refreshTimer);
    clearTimeout(this.#pumpTimer);
    this.#pumpTimer = null;
    clearInterval(this.#keepaliveTimer);
    this.#keepaliveTimer = null;
    clearTimeout(this.#keepaliveWait);
    this.#keepaliveWait = null;
    this.#outq = [];
    this.#unanswered = [];
    this.#probing = false;
  }

  // answered records the reply to the frame with ref. Every frame written
  // before it that is still unanswered was discarded unread by the server's
  // frame limit (replies keep the order of frames): it is written again.
  #answered(ref) {
    const i = this.#unanswered.findIndex((x) => x.ref === ref);
    if (i < 0) return;
    const lost = this.#unanswered.splice(0, i + 1).slice(0, i);
    for (const item of lost) this.#rewrite(item);
  }

  // rewrite writes a discarded frame again if what it asked for is still
  // wanted: the same ref, so a late reply still matches.
  #rewrite(item) {
    const r = this.#rooms.get(item.room);
    let wanted = false;
    switch (item.type) {
      case 'send': wanted = this.#outbox.some((x) => x.ref === item.ref && x.state === 'sent'); break;
      case 'join': wanted = r?.joinRef === item.ref; break;
      // A probe is a history request without a waiter: not wanted again.
      case 'history': wanted = !!r?.historyWaiters.some((w) => w.ref === item.ref && !w.dead); break;
      case 'leave': wanted = this.#leaving.has(item.ref); break;
      default:
    }
    this.#probeRefs.delete(item.ref);
    if (wanted) this.#write(item.data, item);
  }

  // probe asks, once a rate_limited pause is over, for a reply that tells
  // which of the unanswered frames were discarded: a one-message history
  // of the first one's room (not_joined is as good an answer).
  #probe() {
    if (!this.#probing) return;
    this.#probing = false;
    const first = this.#unanswered[0];
    if (!first) return;
    const ref = this.#nextRef('p');
    this.#probeRefs.add(ref);
    // A frame without a room (a ping) is probed with a ping.
    this.#write(first.room ? { type: 'history', room: first.room, limit: 1, ref } : { type: 'ping', ref });
  }

  #nextRef(prefix) {
    return `${prefix}${this.#refBase}-${++this.#refN}`;
  }

  // ---- rooms ----

  /**
   * join joins room and resolves with the first joined event's payload:
   * {room, history, truncated, resumed}. While offline the join waits for
   * the connection. It rejects when the server refuses the join (for
   * example "invalid" or "room_limit"), when leave(room) is called first,
   * or on close. Joining a room already joined resolves at once with an
   * empty history.
   */
  join(room, { history = 50 } = {}) {
    let r = this.#rooms.get(room);
    if (r?.joined) return Promise.resolve({ room, history: [], truncated: false, resumed: true, more: false });
    if (!r) {
      r = {
        name: room, historyN: history, joined: false, everJoined: false, joinRef: null,
        lastSeq: null, seen: new Set(), waiters: [], historyWaiters: [],
        presence: new Set(), presenceCount: 0, retryTimer: null,
        // joinSince is the since of the join in flight; filling holds a
        // resume whose older messages are being fetched.
        joinSince: null, filling: null,
        // anchored: everything the room holds is new to this client (it
        // was empty when joined, or was reset), so a rejoin without a seq
        // seen asks for all of it; anchorOnly: the join in flight asked
        // for one message only to learn where the room stands.
        anchored: false, anchorOnly: false,
      };
      this.#rooms.set(room, r);
    }
    const p = new Promise((resolve, reject) => r.waiters.push({ resolve, reject }));
    if (!r.joinRef) this.#sendJoin(r);
    return p;
  }

  #sendJoin(r) {
    r.joinRef = this.#nextRef('j');
    r.joinSince = r.lastSeq;
    r.anchorOnly = false;
    const frame = { type: 'join', room: r.name, ref: r.joinRef };
    if (r.lastSeq) {
      frame.since = r.lastSeq;
      if (r.epoch) frame.epoch = r.epoch; // a resume across a loss gets reset
    } else if (r.anchored) {
      // Nothing was seen yet and the room was empty when joined: every
      // message it holds now came later, possibly while offline.
      frame.since = r.joinSince = '0-0';
    } else {
      // At least one message, so that the reply tells where the room
      // stands: a reconnect then resumes after it rather than skipping
      // what was sent while offline. history 0 shows none of it.
      frame.history = Math.max(r.historyN, 1);
      r.anchorOnly = r.historyN === 0;
    }
    if (!this.#write(frame)) r.joinRef = null; // sent on open
  }

  /**
   * leave leaves room. Sends still queued for it reject with code "left".
   * The promise resolves when the server confirms, or at once when offline.
   */
  leave(room) {
    const r = this.#rooms.get(room);
    if (!r) return Promise.resolve({ room });
    this.#rooms.delete(room);
    clearTimeout(r.retryTimer);
    const err = new ChatError({ code: CODE_LEFT, message: `left ${room}`, room });
    for (const w of r.waiters.splice(0)) w.reject(err);
    this.#failHistory(r, err);
    for (const rec of [...this.#outbox]) {
      if (rec.room === room && rec.state === 'queued') this.#settle(rec, null, err);
    }
    const ref = this.#nextRef('l');
    if (!this.#write({ type: 'leave', room, ref })) return Promise.resolve({ room });
    return new Promise((resolve) => this.#leaving.set(ref, { room, resolve }));
  }

  // resolveLeaves confirms every unconfirmed leave: a lost connection
  // leaves every room.
  #resolveLeaves() {
    for (const { room, resolve } of this.#leaving.values()) resolve({ room });
    this.#leaving.clear();
  }

  // accept records m as seen in r and reports whether it is new: not seen
  // before and, when seqs have the "<ms>-<n>" form, after the room's newest.
  #accept(r, m) {
    if (typeof m.seq !== 'string' || r.seen.has(m.seq)) return false;
    if (r.lastSeq && compareSeq(m.seq, r.lastSeq) <= 0) return false;
    r.seen.add(m.seq);
    if (r.seen.size > this.#opts.seenPerRoom) r.seen.delete(r.seen.values().next().value);
    r.lastSeq = m.seq;
    // A message carries its room's epoch: a room joined while empty learns
    // it from its first message, so its resume can detect a loss. A known
    // epoch is kept: a message of another epoch means the room was lost,
    // which the next resume learns as a reset.
    if (!r.epoch && typeof m.epoch === 'string' && m.epoch) r.epoch = m.epoch;
    return true;
  }

  // ---- sending ----

  /**
   * send sends text to room and resolves with the ack {room, id, seq, ref}
   * once the server has stored it, or rejects with a ChatError: the
   * server's refusal ("invalid", "rejected", "too_large", ...), "timeout"
   * if no ack came within sendTimeoutMs, "offline_queue_full" if maxQueue
   * sends are already waiting, "not_joined" for a room never joined, "left"
   * or "closed". While offline the send waits in the queue and goes out
   * after the room is resumed. The returned promise has a `ref` property:
   * the message will carry it, so the application can match its own
   * message events to the send (pass options.ref to choose it).
   */
  send(room, text, { ref } = {}) {
    // A bad ref would be refused without being echoed, so
    // the refusal could not be matched to this send (PROTOCOL.md §7.4):
    // refuse it here.
    const badRef = ref ? validateRef(ref) : '';
    ref ||= this.#nextRef('m');
    let rec;
    const p = new Promise((resolve, reject) => {
      const fail = (code, message) => reject(new ChatError({ code, message, ref, room }));
      if (badRef) return fail('invalid', badRef);
      if (!this.#rooms.has(room)) return fail('not_joined', `join room ${room} first`);
      if (this.#outbox.length >= this.#opts.maxQueue) {
        return fail(CODE_QUEUE_FULL, `${this.#opts.maxQueue} messages are already waiting to be sent`);
      }
      const frame = JSON.stringify({ type: 'send', room, text, ref });
      if (encoder.encode(frame).length > this.#opts.maxFrameBytes) return fail('too_large', 'the message is too long');
      rec = {
        ref, room, text, frame, state: 'queued', uncertain: false, resolve, reject,
        deadline: Date.now() + this.#opts.sendTimeoutMs, notBefore: 0,
      };
      rec.timer = setTimeout(() => {
        const s = Math.round(this.#opts.sendTimeoutMs / 1000);
        this.#settle(rec, null, new ChatError({ code: CODE_TIMEOUT, message: `not acknowledged within ${s} s`, ref, room }));
        // A frame still waiting for its turn is not written any more: the
        // caller was told it failed.
        if (!this.#unqueue(ref)) this.#checkLink(ref);
      }, this.#opts.sendTimeoutMs);
      this.#outbox.push(rec);
    });
    p.ref = ref;
    if (rec) this.#flush();
    return p;
  }

  // settle removes rec from the outbox and resolves or rejects its promise.
  #settle(rec, ack, err) {
    const i = this.#outbox.indexOf(rec);
    if (i < 0) return;
    this.#outbox.splice(i, 1);
    clearTimeout(rec.timer);
    clearTimeout(rec.retryTimer);
    if (err) rec.reject(err);
    else rec.resolve(ack);
  }

  // flush writes every queued send whose room is joined, in order. A send
  // a moderator rate-limited holds back the later sends of its room.
  #flush() {
    if (!this.connected || Date.now() < this.#pausedUntil) return;
    const held = new Set();
    for (const rec of this.#outbox) {
      if (rec.state !== 'queued' || !this.#rooms.get(rec.room)?.joined) continue;
      if (rec.notBefore || held.has(rec.room)) {
        held.add(rec.room);
        continue;
      }
      if (!this.#write(rec.frame, { type: 'send', ref: rec.ref, room: rec.room })) return;
      rec.state = 'sent';
    }
  }

  #pause(ms) {
    this.#pausedUntil = Date.now() + ms;
    clearTimeout(this.#pauseTimer);
    // The timer ends the pause itself: timers may fire a millisecond before
    // Date.now() reaches #pausedUntil, and a flush that saw the pause still
    // running would leave the queue stuck.
    this.#pauseTimer = setTimeout(() => {
      this.#pausedUntil = 0;
      this.#probe();
      this.#pump();
      this.#flush();
    }, ms);
  }

  // ---- history ----

  /**
   * history asks for up to limit messages of a joined room before seq
   * `before` (the newest when before is empty) and, with options.after,
   * after that seq; it resolves with {room, messages, more}. Messages are
   * oldest first and are not emitted as message events. The server may
   * send fewer than limit to keep its reply within its page budget; `more`
   * says older messages (after `after`) remain.
   */
  history(room, before, limit = 50, { after } = {}) {
    const r = this.#rooms.get(room);
    if (!r || !r.joined) {
      const code = r ? CODE_DISCONNECTED : 'not_joined';
      return Promise.reject(new ChatError({ code, message: r ? 'not connected' : `join room ${room} first`, room }));
    }
    return this.#requestHistory(r, before, limit, after);
  }

  #requestHistory(r, before, limit, after) {
    const room = r.name;
    const ref = this.#nextRef('h');
    const frame = { type: 'history', room, limit, ref };
    if (before) frame.before = before;
    if (after) frame.after = after;
    return new Promise((resolve, reject) => {
      const w = { ref, resolve, reject };
      w.timer = setTimeout(() => {
        const i = r.historyWaiters.indexOf(w);
        // Keep the slot so the late reply is matched to it and dropped.
        if (i >= 0) r.historyWaiters[i] = { ref, resolve() {}, reject() {}, timer: null, dead: true };
        reject(new ChatError({ code: CODE_TIMEOUT, message: 'history request timed out', ref, room }));
        if (!this.#unqueue(ref)) this.#checkLink(ref);
      }, this.#opts.requestTimeoutMs);
      r.historyWaiters.push(w);
      if (!this.#write(frame)) {
        r.historyWaiters.pop();
        clearTimeout(w.timer);
        reject(new ChatError({ code: CODE_DISCONNECTED, message: 'not connected', ref, room }));
      }
    });
  }

  #failHistory(r, err) {
    for (const w of r.historyWaiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
  }

  // ---- receiving ----

  #receive(data) {
    if (typeof data !== 'string') return; // the protocol has text messages only
    for (const line of data.split('\n')) {
      if (!line.trim()) continue;
      let f;
      try {
        f = JSON.parse(line);
      } catch {
        continue; // not a frame of the protocol; ignore it as PROTOCOL.md §2 asks
      }
      if (f && typeof f === 'object') this.#handle(f);
    }
  }

  #handle(f) {
    if (replyTypes.has(f.type) && typeof f.ref === 'string' && f.ref) this.#answered(f.ref);
    switch (f.type) {
      case 'joined': return this.#onJoined(f);
      case 'message': return this.#onMessage(f);
      case 'ack': return this.#onAck(f);
      case 'error': return this.#onError(f);
      case 'left': return this.#onLeft(f);
      case 'history': return this.#onHistory(f);
      case 'presence': return this.#onPresence(f);
      case 'pong': return void this.#probeRefs.delete(f.ref);
      case 'authed': return this.#onAuthed(f);
      default: // unknown frame types are ignored (PROTOCOL.md §2)
    }
  }

  #onJoined(f) {
    const r = this.#rooms.get(f.room);
    if (!r || !r.joinRef || r.filling) return; // left meanwhile, or a late duplicate
    if (f.ref && f.ref !== r.joinRef) return; // the reply to an older join
    const all = Array.isArray(f.history) ? f.history : [];
    if (typeof f.epoch === 'string' && f.epoch) r.epoch = f.epoch;
    if (f.reset) {
      // The server lost the room's stored data (PROTOCOL.md, epochs): what
      // this client kept of the room is gone there; start over from the
      // room's current history.
      r.seen.clear();
      r.lastSeq = null;
      this.#joined(r, all, false, !!f.more, true);
      return;
    }
    const since = r.joinSince;
    if (f.more && since && all.length) {
      // The page holds the newest messages after since; fetch the older
      // ones before going live (PROTOCOL.md §11.4). Live messages wait.
      r.filling = { since, got: all, held: [], truncated: !!f.truncated };
      this.#fill(r);
      return;
    }
    this.#joined(r, all, !!f.truncated, !!f.more);
  }

  // fill asks for the messages between the resume's since and the oldest
  // message it has, a page at a time, then completes the join.
  #fill(r) {
    const fl = r.filling;
    const oldest = fl.got[0].seq;
    this.#requestHistory(r, oldest, this.#opts.resumePage, fl.since).then((page) => {
      if (r.filling !== fl) return;
      // A server without `after` may send older messages: they are known.
      const older = page.messages.filter((m) => isAfter(m.seq, fl.since) && isAfter(oldest, m.seq));
      fl.got = [...older, ...fl.got];
      const reachedSince = older.length < page.messages.length;
      if (page.more && older.length && !reachedSince) this.#fill(r);
      else this.#joined(r, fl.got, fl.truncated, false);
    }, (err) => {
      if (r.filling !== fl) return;
      if (err.code === 'rate_limited') {
        // Over the server's history budget: ask for the same page again
        // once it is paid back, keeping what was collected (starting
        // over would spend the budget on the same pages again).
        clearTimeout(r.retryTimer);
        r.retryTimer = setTimeout(() => {
          if (r.filling === fl && this.#rooms.get(r.name) === r) this.#fill(r);
        }, err.retryAfterMs || this.#opts.joinRetryMs);
        return;
      }
      // Start the resume over: since has not moved.
      r.filling = null;
      r.joinRef = null;
      if (err.code === CODE_DISCONNECTED || err.code === CODE_CLOSED || err.code === CODE_LEFT) return;
      clearTimeout(r.retryTimer);
      r.retryTimer = setTimeout(() => {
        if (this.#rooms.get(r.name) === r && !r.joined && !r.joinRef) this.#sendJoin(r);
      }, err.retryAfterMs || this.#opts.joinRetryMs);
    });
  }

  // joined completes a join with all, its messages oldest first; reset
  // reports that the room's stored data was lost and all replaces it.
  #joined(r, all, truncated, more, reset = false) {
    const held = r.filling?.held ?? [];
    r.filling = null;
    r.joinRef = null;
    r.joined = true;
    const resumed = r.everJoined && !reset;
    r.everJoined = true;
    const history = [];
    for (const m of all) {
      if (this.#accept(r, m) && !r.anchorOnly) history.push(this.#toMessage(m));
    }
    r.anchorOnly = false;
    // A reply that left no seq seen came from an empty room (every join
    // asks for at least one message): all it stores from now on is new.
    if (!r.lastSeq) r.anchored = true;
    // Sends cut off by the disconnect: stored if the resumed history holds them.
    for (const rec of [...this.#outbox]) {
      if (rec.room !== r.name || !rec.uncertain) continue;
      const m = all.find((x) => x.ref === rec.ref && x.user === this.#user);
      if (m) this.#settle(rec, { room: r.name, id: m.id, seq: m.seq, ref: rec.ref });
      else rec.uncertain = false;
    }
    const detail = { room: r.name, history, truncated, resumed, more, reset, epoch: r.epoch ?? null };
    this.#emit('joined', detail);
    for (const w of r.waiters.splice(0)) w.resolve(detail);
    for (const m of held) this.#onMessage(m);
    this.#flush();
  }

  #toMessage(m) {
    const out = { room: m.room, id: m.id, seq: m.seq, user: m.user, text: m.text, ts: m.ts, own: m.user === this.#user };
    if (m.ref) out.ref = m.ref;
    return out;
  }

  #onMessage(f) {
    const r = this.#rooms.get(f.room);
    if (r?.filling) {
      r.filling.held.push(f);
      return;
    }
    if (!r || !r.joined || !this.#accept(r, f)) return;
    const m = this.#toMessage(f);
    if (m.own && m.ref) {
      // Our own message can arrive before its ack (PROTOCOL.md §11.2).
      const rec = this.#outbox.find((x) => x.ref === m.ref);
      if (rec) this.#settle(rec, { room: m.room, id: m.id, seq: m.seq, ref: m.ref });
    }
    this.#emit('message', m);
  }

  #onAck(f) {
    const ack = { room: f.room, id: f.id, seq: f.seq, ref: f.ref };
    const rec = this.#outbox.find((x) => x.ref === f.ref);
    if (rec) this.#settle(rec, ack);
    this.#emit('ack', ack);
  }

  #onError(f) {
    const err = new ChatError({
      code: f.code || 'internal', message: f.message, ref: f.ref, room: f.room,
      moderator: f.moderator, retryAfterMs: f.retry_after_ms,
    });
    if (this.#probeRefs.delete(f.ref)) return; // a probe's not_joined is an answer like any other
    if (f.ref && f.ref === this.#authRef && !this.#ready && err.code === 'invalid') {
      // A server without --auth jwt does not take tokens: retrying cannot help.
      this.#emit('error', err);
      this.#refused(err.message || 'this server does not use tokens', 'server');
      return;
    }
    if (err.code === CODE_UNAUTHORIZED && this.#tokenProvider) {
      // Before the close: 4001 follows, whose reason may be empty.
      this.#authReason = err.message;
      if (f.ref && f.ref === this.#authRef) {
        this.#authRef = null;
        clearTimeout(this.#authTimer);
        // A refused refresh: the current token holds until its exp.
        if (this.#ready) this.#scheduleRefresh(this.#opts.refreshRetryMs);
      }
    }
    if (f.ref) this.#correlateError(f.ref, err);
    else if (err.code === 'rate_limited') {
      // The server discarded frames unread, without saying which: pause,
      // then find out with a probe and write the discarded ones again.
      this.#probing = true;
      this.#pause(err.retryAfterMs || this.#opts.joinRetryMs);
    }
    this.#emit('error', err);
  }

  #correlateError(ref, err) {
    const rec = this.#outbox.find((x) => x.ref === ref);
    if (rec) {
      if (err.code === 'rate_limited') {
        // A moderator refused it for now (the frame-rate limit names no
        // frame): send it again after retry_after_ms, holding back the
        // later sends of its room only; other rooms, joins and history go
        // on. If that is past its deadline, fail now with the reason.
        const wait = err.retryAfterMs || this.#opts.joinRetryMs;
        if (Date.now() + wait >= rec.deadline) {
          this.#settle(rec, null, err);
        } else {
          rec.state = 'queued';
          rec.notBefore = Date.now() + wait;
          clearTimeout(rec.retryTimer);
          // The timer ends the hold itself: timers and Date.now() come
          // from different clocks.
          rec.retryTimer = setTimeout(() => {
            rec.notBefore = 0;
            this.#flush();
          }, wait);
        }
      } else {
        this.#settle(rec, null, err);
      }
      return;
    }
    const l = this.#leaving.get(ref);
    if (l) {
      if (err.code === 'rate_limited') {
        setTimeout(() => {
          if (this.#leaving.get(ref) === l && !this.#write({ type: 'leave', room: l.room, ref })) this.#resolveLeaves();
        }, err.retryAfterMs || this.#opts.joinRetryMs);
      } else {
        // not_joined: the server has already forgotten the room.
        this.#leaving.delete(ref);
        l.resolve({ room: l.room });
      }
      return;
    }
    for (const r of this.#rooms.values()) {
      if (r.joinRef === ref) {
        r.joinRef = null;
        if (retryableJoin.has(err.code)) {
          clearTimeout(r.retryTimer);
          r.retryTimer = setTimeout(() => {
            if (this.#rooms.get(r.name) === r && !r.joined && !r.joinRef) this.#sendJoin(r);
          }, err.retryAfterMs || this.#opts.joinRetryMs);
          return;
        }
        this.#rooms.delete(r.name);
        for (const w of r.waiters.splice(0)) w.reject(err);
        for (const x of [...this.#outbox]) if (x.room === r.name) this.#settle(x, null, err);
        if (r.everJoined) this.#emit('left', { room: r.name, error: err });
        return;
      }
      const i = r.historyWaiters.findIndex((w) => w.ref === ref);
      if (i >= 0) {
        const [w] = r.historyWaiters.splice(i, 1);
        clearTimeout(w.timer);
        w.reject(err);
        return;
      }
    }
  }

  #onLeft(f) {
    for (const [ref, l] of this.#leaving) {
      if (l.room !== f.room) continue;
      this.#leaving.delete(ref);
      l.resolve({ room: f.room });
      this.#emit('left', { room: f.room });
      return;
    }
    // A left nobody asked for: a refreshed token no longer allows the
    // room (PROTOCOL.md §3.1). Rejoining would be refused.
    const r = this.#rooms.get(f.room);
    if (!r || f.ref) return;
    const err = new ChatError({ code: 'forbidden', message: f.message || `your token no longer allows #${f.room}`, room: f.room });
    this.#rooms.delete(f.room);
    clearTimeout(r.retryTimer);
    for (const w of r.waiters.splice(0)) w.reject(err);
    this.#failHistory(r, err);
    for (const rec of [...this.#outbox]) if (rec.room === f.room) this.#settle(rec, null, err);
    this.#emit('left', { room: f.room, error: err });
  }

  #onHistory(f) {
    if (this.#probeRefs.delete(f.ref)) return; // a probe's answer
    const r = this.#rooms.get(f.room);
    if (!r) return;
    // Replies name their request's ref; a server that does not echo it
    // answers in order.
    const i = f.ref ? r.historyWaiters.findIndex((x) => x.ref === f.ref) : 0;
    if (i < 0 || !r.historyWaiters[i]) return;
    const [w] = r.historyWaiters.splice(i, 1);
    clearTimeout(w.timer);
    const messages = (Array.isArray(f.messages) ? f.messages : []).map((m) => this.#toMessage(m));
    w.resolve({ room: f.room, messages, more: !!f.more });
  }

  #onPresence(f) {
    const r = this.#rooms.get(f.room);
    if (!r || !(r.joined || r.filling)) return;
    const snapshot = Array.isArray(f.users);
    const joined = Array.isArray(f.joined) ? f.joined : [];
    const left = Array.isArray(f.left) ? f.left : [];
    if (snapshot) {
      r.presence = new Set(f.users);
    } else {
      for (const u of left) r.presence.delete(u);
      for (const u of joined) r.presence.add(u);
    }
    r.presenceCount = Number.isFinite(f.count) ? f.count : r.presence.size;
    this.#emit('presence', {
      room: r.name, users: [...r.presence].sort(), count: r.presenceCount,
      joined, left, snapshot,
    });
  }
}
