// A use of every export of chatstream-client.js, type-checked against
// chatstream-client.d.ts by web/types_test.go (tsc --noEmit --strict).
import {
  ChatClient, ChatError, DEFAULTS, CLOSE_UNAUTHORIZED, CLOSE_TOKEN_EXPIRED, CODE_TIMEOUT, CODE_QUEUE_FULL,
  CODE_CLOSED, CODE_DISCONNECTED, CODE_LEFT, CODE_UNAUTHORIZED, CODE_TOKEN_UNAVAILABLE,
  parseSeq, compareSeq, validateUser, validateRoom, validateRef,
  type Ack, type ChatMessage, type Joined, type HistoryPage, type Status,
} from '@chatstream/client';

export async function chat(): Promise<void> {
  const codes: string[] = [CODE_TIMEOUT, CODE_QUEUE_FULL, CODE_CLOSED, CODE_DISCONNECTED, CODE_LEFT, CODE_UNAUTHORIZED, CODE_TOKEN_UNAVAILABLE];
  const closes: number[] = [CLOSE_UNAUTHORIZED, CLOSE_TOKEN_EXPIRED];
  const wait: number = DEFAULTS.backoff.maxMs + DEFAULTS.sendTimeoutMs + codes.length + closes.length;
  const c = new ChatClient({
    url: 'https://chat.example.com/ws',
    token: async () => 'a.jwt.token',
    backoff: { initialMs: 250 },
    sendTimeoutMs: wait,
  });
  const off = c.on('message', (m: ChatMessage) => { const own: boolean | undefined = m.own; void own; });
  off();
  c.once('status', (s: Status) => { if (s.state === 'reconnecting') void s.retryInMs; });
  c.on('error', (e: ChatError) => { const code: string = e.code; void code; });
  c.on('authed', ({ user, exp }) => { void user; void (exp ?? 0); });
  c.on('unauthorized', ({ by }) => { if (by === 'provider') c.close(); });
  const opened: boolean = await c.connect();
  const joined: Joined = await c.join('lobby', { history: 20 });
  const sending = c.send('lobby', 'hello', { ref: 'r-1' });
  const ref: string = sending.ref;
  const ack: Ack = await sending;
  const page: HistoryPage = await c.history('lobby', joined.history[0]?.seq ?? '', 50, { after: ack.seq });
  const seq = parseSeq(ack.seq);
  const big: bigint | undefined = seq?.ms;
  const n: number = compareSeq(ack.seq, c.lastSeq('lobby') ?? '0-0');
  const why: string = validateUser('alice') + validateRoom('lobby') + validateRef('r-1');
  const who: string = c.user + c.name + String(c.expiresAt + c.pendingSends) + c.rooms.join() + c.presence('lobby').count;
  await c.leave('lobby');
  c.reconnectNow();
  void [opened, ref, page.more, big, n, why, who, c.connected, c.status.state];
  // @ts-expect-error an unknown event is refused
  c.on('nope', () => {});
  // @ts-expect-error a url is required
  new ChatClient({ user: 'x' });
}
