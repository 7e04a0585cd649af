// Types of chatstream-client.js (protocol v1.1, docs/PROTOCOL.md), written
// by hand; web/types_test.go checks a usage of every export with tsc.

/** Limits and timings used when the constructor's options leave them out. */
export declare const DEFAULTS: Readonly<{
  backoff: Readonly<{ initialMs: number; maxMs: number }>;
  stableMs: number;
  sendTimeoutMs: number;
  requestTimeoutMs: number;
  keepaliveMs: number;
  maxQueue: number;
  connectTimeoutMs: number;
  maxFrameBytes: number;
  seenPerRoom: number;
  joinRetryMs: number;
  frameRate: number;
  frameBurst: number;
  resumePage: number;
  refreshBeforeMs: number;
  refreshRetryMs: number;
}>;

/** Close code of a connection whose token was refused: not retried. */
export declare const CLOSE_UNAUTHORIZED: 4001;
/** Close code of a connection whose token expired: reconnected with a new token. */
export declare const CLOSE_TOKEN_EXPIRED: 4002;

/** Local error codes, besides the server's (PROTOCOL.md §9). */
export declare const CODE_TIMEOUT: 'timeout';
export declare const CODE_QUEUE_FULL: 'offline_queue_full';
export declare const CODE_CLOSED: 'closed';
export declare const CODE_DISCONNECTED: 'disconnected';
export declare const CODE_LEFT: 'left';
export declare const CODE_UNAUTHORIZED: 'unauthorized';
export declare const CODE_TOKEN_UNAVAILABLE: 'token_unavailable';

/** The rejection value of every promise of ChatClient and the payload of its "error" event. */
export declare class ChatError extends Error {
  constructor(fields: { code: string; message?: string; ref?: string; room?: string; moderator?: string; retryAfterMs?: number });
  name: 'ChatError';
  /** A protocol error code (PROTOCOL.md §9) or one of the CODE_ constants. */
  code: string;
  ref?: string;
  room?: string;
  moderator?: string;
  retryAfterMs?: number;
}

/** Parses a seq "<ms>-<n>", or returns null for any other form. */
export declare function parseSeq(seq: string): { ms: bigint; n: bigint } | null;
/** -1, 0 or 1 as a sorts before, equal to or after b; NaN for a malformed seq. */
export declare function compareSeq(a: string, b: string): number;
/** Why name is not a valid user name, or "" when it is. */
export declare function validateUser(name: string): string;
/** Why name is not a valid room name, or "" when it is. */
export declare function validateRoom(name: string): string;

/** Why ref is not a valid client reference (at most 64 printable characters), or "" when it is. */
export declare function validateRef(ref: string): string;

/** A stored chat message. */
export interface ChatMessage {
  room: string;
  id: string;
  seq: string;
  user: string;
  text: string;
  /** Storing time, RFC 3339 with milliseconds. */
  ts: string;
  ref?: string;
  /** Whether this client sent it. */
  own?: boolean;
  [field: string]: unknown;
}

export interface Ack {
  room: string;
  id: string;
  seq: string;
  ref: string;
}

export interface Joined {
  room: string;
  history: ChatMessage[];
  truncated: boolean;
  resumed: boolean;
  more: boolean;
  /** The resume crossed a loss of the room's data: history is the room's current one. */
  reset?: boolean;
  /** The room's epoch. */
  epoch?: string;
  [field: string]: unknown;
}

export interface HistoryPage {
  room: string;
  messages: ChatMessage[];
  more: boolean;
}

export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'offline';

export interface Status {
  state: ConnectionState;
  retryInMs?: number;
  attempt?: number;
}

export interface Presence {
  room: string;
  users: string[];
  count: number;
  joined?: string[];
  left?: string[];
  snapshot?: boolean;
}

/** The events of a ChatClient and their payloads. */
export interface ChatEvents {
  status: Status;
  joined: Joined;
  message: ChatMessage;
  ack: Ack;
  error: ChatError;
  left: { room: string; error?: ChatError };
  presence: Presence;
  authed: { user: string; name: string; exp: number | null; refreshed: boolean };
  unauthorized: { reason: string; by: 'server' | 'provider' };
}

export interface ChatClientOptions {
  /** URL of the /ws endpoint (http, https, ws or wss). */
  url: string;
  /** User name; required without token, ignored with it. */
  user?: string;
  /**
   * Token provider: called before every connection and before the token's
   * exp; rejecting with code "unauthorized" stops the client, anything else
   * is retried with backoff.
   */
  token?: () => Promise<string>;
  /** WebSocket constructor; default globalThis.WebSocket. */
  WebSocket?: new (url: string) => unknown;
  backoff?: { initialMs?: number; maxMs?: number };
  /** Source of jitter in [0, 1); default Math.random. */
  random?: () => number;
  stableMs?: number;
  sendTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** Check every this many ms for a frame from the server and ping when none came (0: never); see DEFAULTS. */
  keepaliveMs?: number;
  maxQueue?: number;
  connectTimeoutMs?: number;
  maxFrameBytes?: number;
  seenPerRoom?: number;
  joinRetryMs?: number;
  frameRate?: number;
  frameBurst?: number;
  resumePage?: number;
  refreshBeforeMs?: number;
  refreshRetryMs?: number;
}

/** A chatstream connection that survives disconnects (docs/CLIENT.md). */
export declare class ChatClient {
  constructor(options: ChatClientOptions);
  /** The user this client connects as, in NFKC as the server keeps it ("ａｌｉｃｅ" is "alice"); "" until the first authed with a token. */
  readonly user: string;
  /** The display name of the accepted token ("" without one). */
  readonly name: string;
  /** When the accepted token expires, ms since the epoch (0 without one). */
  readonly expiresAt: number;
  readonly status: Status;
  readonly connected: boolean;
  readonly rooms: string[];
  readonly pendingSends: number;
  lastSeq(room: string): string | null;
  presence(room: string): { users: string[]; count: number };
  /** Subscribes fn and returns a function that unsubscribes it. */
  on<K extends keyof ChatEvents>(type: K, fn: (detail: ChatEvents[K]) => void): () => void;
  off<K extends keyof ChatEvents>(type: K, fn: (detail: ChatEvents[K]) => void): void;
  once<K extends keyof ChatEvents>(type: K, fn: (detail: ChatEvents[K]) => void): () => void;
  /** Resolves true once open, false if close came first; never rejects. */
  connect(): Promise<boolean>;
  close(): void;
  reconnectNow(): void;
  join(room: string, options?: { history?: number }): Promise<Joined>;
  leave(room: string): Promise<{ room: string }>;
  /** The promise carries the ref the message will have. */
  send(room: string, text: string, options?: { ref?: string }): Promise<Ack> & { ref: string };
  history(room: string, before: string, limit?: number, options?: { after?: string }): Promise<HistoryPage>;
}
