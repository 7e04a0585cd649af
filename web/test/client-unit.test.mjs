// Unit tests of chatstream-client.js against a scripted fake WebSocket: the
// cases a real server cannot be made to produce on demand (duplicates,
// a send stored just before the connection dropped, rate limiting,
// presence). Run by web/node_test.go; no server needed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatClient, ChatError, compareSeq, parseSeq, validateRoom, validateUser } from '../static/chatstream-client.js';

// FakeSocket is a WebSocket the test drives: open() opens it, recv() delivers
// one server message (frames joined with "\n"), drop() loses the connection.
class FakeSocket {
  static instances = [];
  static OPEN = 1;

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.instances.push(this);
  }

  send(data) {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(JSON.parse(data));
  }

  close() {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code: 1000 }));
  }

  open() {
    this.readyState = 1;
    this.onopen?.({});
  }

  recv(...frames) {
    this.onmessage?.({ data: frames.map((f) => (typeof f === 'string' ? f : JSON.stringify(f))).join('\n') });
  }

  drop() {
    this.readyState = 3;
    this.onclose?.({ code: 1006 });
  }

  // serverClose closes the socket from the server's side with code and reason.
  serverClose(code, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  lastSent(type) {
    return this.sent.filter((f) => f.type === type).at(-1);
  }
}

function latest() {
  return FakeSocket.instances.at(-1);
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

// until waits for cond, however late a loaded machine runs the timers.
async function until(cond, what) {
  const deadline = Date.now() + 5000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await tick(2);
  }
}

// nextSocket waits for the client to open its next socket.
async function nextSocket() {
  const n = FakeSocket.instances.length;
  await until(() => FakeSocket.instances.length > n, 'a reconnect attempt');
  return latest();
}

function msg(room, seq, user, text, ref) {
  const m = { type: 'message', room, id: `id-${seq}`, seq, user, text, ts: '2026-01-02T03:04:05.000Z' };
  if (ref) m.ref = ref;
  return m;
}

function newClient(t, opts = {}) {
  FakeSocket.instances = [];
  const c = new ChatClient({
    url: 'http://chat.test/ws', user: 'alice', WebSocket: FakeSocket,
    backoff: { initialMs: 10, maxMs: 40 }, random: () => 0.5, ...opts,
  });
  t.after(() => c.close());
  return c;
}

// record collects every event of the given types.
function record(c, ...types) {
  const log = [];
  for (const type of types) c.on(type, (d) => log.push({ type, ...d }));
  return log;
}

// connectAndJoin opens a client and joins room with the given history.
async function connectAndJoin(c, room, history = []) {
  const connected = c.connect();
  latest().open();
  await connected;
  const joined = c.join(room);
  latest().recv({ type: 'joined', room, history });
  return joined;
}

test('compareSeq compares both parts as numbers, never as strings', () => {
  const cases = [
    ['9-0', '10-0', -1],
    ['10-0', '9-0', 1],
    ['5-9', '5-10', -1],
    ['1795716957201-16', '1795716957201-16', 0],
    ['1795716957201-16', '1795716957201-2', 1],
    ['99999999999999999999-1', '100000000000000000000-0', -1],
  ];
  for (const [a, b, want] of cases) assert.equal(compareSeq(a, b), want, `${a} vs ${b}`);
  assert.ok(Number.isNaN(compareSeq('abc', '1-0')));
  assert.equal(parseSeq('x-1'), null);
  assert.deepEqual(parseSeq('12-3'), { ms: 12n, n: 3n });
});

test('user and room names are checked like the server does', () => {
  assert.equal(validateUser('alice'), '');
  assert.equal(validateUser('Zoë Ünal'), '');
  assert.notEqual(validateUser(''), '');
  assert.notEqual(validateUser(' alice'), '');
  assert.notEqual(validateUser('a'.repeat(33)), '');
  assert.notEqual(validateUser('bad\u0007bell'), '');
  assert.equal(validateUser('ａｌｉｃｅ'), ''); // the server takes it as "alice"
  assert.match(validateUser('\u0430lice'), /mix Latin, Greek and Cyrillic/); // a Cyrillic а
  assert.match(validateUser('al\u3164ice'), /invisible/); // HANGUL FILLER
  assert.match(validateUser('\u2800'), /invisible/); // BRAILLE PATTERN BLANK
  assert.match(validateUser('alice\ufe0f'), /invisible/); // a variation selector
  assert.equal(validateRoom('dev.ops:eu-1_b'), '');
  assert.notEqual(validateRoom('has space'), '');
  assert.notEqual(validateRoom('r'.repeat(65)), '');
  assert.throws(() => new ChatClient({ url: 'ws://x/ws', user: '', WebSocket: FakeSocket }), TypeError);
});

test('the socket URL carries the user and a ws scheme', (t) => {
  const c = newClient(t, { user: 'Zoë & co' });
  c.connect();
  const u = new URL(latest().url);
  assert.equal(u.protocol, 'ws:');
  assert.equal(u.pathname, '/ws');
  assert.equal(u.searchParams.get('user'), 'Zoë & co');
});

test('a batched server message is split into its frames', async (t) => {
  const c = newClient(t);
  const log = record(c, 'message', 'ack');
  await connectAndJoin(c, 'lobby');
  latest().recv(
    msg('lobby', '10-0', 'bob', 'one'),
    '',
    msg('lobby', '10-1', 'bob', 'two\nlines'),
    { type: 'ack', ref: 'zz', room: 'lobby', id: 'i', seq: '10-1' },
    { type: 'from-the-future', x: 1 },
    'not json',
    msg('lobby', '11-0', 'carol', 'three'),
  );
  assert.deepEqual(log.map((e) => e.type === 'message' ? e.text : e.type), ['one', 'two\nlines', 'ack', 'three']);
});

test('duplicates and older seqs are never emitted twice', async (t) => {
  const c = newClient(t);
  const log = record(c, 'message');
  const joined = await connectAndJoin(c, 'lobby', [msg('lobby', '5-0', 'bob', 'a'), msg('lobby', '6-0', 'bob', 'b')]);
  assert.deepEqual(joined.history.map((m) => m.text), ['a', 'b']);
  latest().recv(msg('lobby', '6-0', 'bob', 'b'), msg('lobby', '5-0', 'bob', 'a'), msg('lobby', '7-0', 'bob', 'c'), msg('lobby', '7-0', 'bob', 'c'));
  assert.deepEqual(log.map((m) => m.text), ['c']);
  assert.equal(c.lastSeq('lobby'), '7-0');
});

test('reconnect resumes each room with since, with backoff and full jitter', async (t) => {
  const c = newClient(t, { random: () => 0.999 });
  const status = record(c, 'status');
  await connectAndJoin(c, 'lobby', [msg('lobby', '5-0', 'bob', 'a')]);
  const log = record(c, 'message', 'joined');

  latest().drop();
  let s = status.at(-1);
  assert.equal(s.state, 'reconnecting');
  assert.equal(s.retryInMs, 9); // floor(0.999 × min(40, 10·2⁰))
  (await nextSocket()).drop(); // the first attempt fails
  assert.equal(status.at(-1).retryInMs, 19); // floor(0.999 × 20)
  (await nextSocket()).drop();
  assert.equal(status.at(-1).retryInMs, 39); // floor(0.999 × 40)
  (await nextSocket()).drop();
  assert.equal(status.at(-1).retryInMs, 39, 'the delay is capped at maxMs');

  const ws = await nextSocket();
  ws.open();
  assert.deepEqual(ws.lastSent('join'), { type: 'join', room: 'lobby', since: '5-0', ref: ws.lastSent('join').ref });
  ws.recv({ type: 'joined', room: 'lobby', history: [msg('lobby', '5-0', 'bob', 'a'), msg('lobby', '6-0', 'carol', 'b')] });
  const joined = log.find((e) => e.type === 'joined');
  assert.equal(joined.resumed, true);
  assert.deepEqual(joined.history.map((m) => m.text), ['b'], 'the resumed history holds only unseen messages');
  s = status.at(-1);
  assert.equal(s.state, 'connected');
});

test('a send cut off by a disconnect is not sent again when the resumed history holds it', async (t) => {
  const c = newClient(t);
  await connectAndJoin(c, 'lobby', [msg('lobby', '5-0', 'bob', 'a')]);
  const p1 = c.send('lobby', 'stored before the drop');
  const p2 = c.send('lobby', 'lost in the drop');
  const first = latest();
  assert.equal(first.sent.filter((f) => f.type === 'send').length, 2);
  first.drop();
  assert.equal(c.pendingSends, 2);
  const ws = await nextSocket();
  ws.open();
  assert.equal(ws.sent.filter((f) => f.type === 'send').length, 0, 'nothing is sent before the room is resumed');
  ws.recv({ type: 'joined', room: 'lobby', history: [msg('lobby', '6-0', 'alice', 'stored before the drop', p1.ref)] });
  assert.deepEqual(await p1, { room: 'lobby', id: 'id-6-0', seq: '6-0', ref: p1.ref });
  const resent = ws.sent.filter((f) => f.type === 'send');
  assert.deepEqual(resent.map((f) => f.text), ['lost in the drop']);
  assert.equal(resent[0].ref, p2.ref, 'a resend keeps its ref');
  ws.recv({ type: 'ack', ref: p2.ref, room: 'lobby', id: 'id-7-0', seq: '7-0' });
  assert.equal((await p2).seq, '7-0');
});

test('a rate-limited send is sent again after retry_after_ms', async (t) => {
  const c = newClient(t);
  await connectAndJoin(c, 'lobby');
  const errors = record(c, 'error');
  const p = c.send('lobby', 'hello');
  const ws = latest();
  ws.recv({ type: 'error', code: 'rate_limited', message: 'too many frames', ref: p.ref, room: 'lobby', retry_after_ms: 300 });
  assert.equal(errors.length, 1);
  assert.equal(errors[0].retryAfterMs, 300);
  assert.equal(ws.sent.filter((f) => f.type === 'send').length, 1);
  await tick(10);
  assert.equal(ws.sent.filter((f) => f.type === 'send').length, 1, 'sent again before retry_after_ms');
  await until(() => ws.sent.filter((f) => f.type === 'send').length === 2, 'the send again');
  ws.recv({ type: 'ack', ref: p.ref, room: 'lobby', id: 'x', seq: '9-0' });
  assert.equal((await p).seq, '9-0');
});

test('a rate-limited send goes out even when its timer fires before the clock says so', async (t) => {
  const c = newClient(t);
  await connectAndJoin(c, 'lobby');
  const p = c.send('lobby', 'hello');
  const ws = latest();
  ws.recv({ type: 'error', code: 'rate_limited', message: 'too many frames', ref: p.ref, room: 'lobby', retry_after_ms: 50 });
  // Timers and Date.now() come from different clocks; make the wall clock
  // lag so that the retry timer fires "early".
  const realNow = Date.now;
  Date.now = () => realNow() - 40;
  t.after(() => { Date.now = realNow; });
  await until(() => ws.sent.filter((f) => f.type === 'send').length === 2, 'the send again');
  Date.now = realNow;
  ws.recv({ type: 'ack', ref: p.ref, room: 'lobby', id: 'x', seq: '9-1' });
  assert.equal((await p).seq, '9-1');
});

test('a rejected send rejects with the code, reason and moderator', async (t) => {
  const c = newClient(t);
  await connectAndJoin(c, 'lobby');
  const p = c.send('lobby', 'buy spam');
  latest().recv({ type: 'error', code: 'rejected', message: 'no spam here', moderator: 'no-spam', ref: p.ref, room: 'lobby' });
  await assert.rejects(p, { code: 'rejected', message: 'no spam here', moderator: 'no-spam', ref: p.ref });
  assert.equal(c.pendingSends, 0);
});

test('an own message resolves its send even before the ack', async (t) => {
  const c = newClient(t);
  await connectAndJoin(c, 'lobby');
  const log = record(c, 'message');
  const p = c.send('lobby', 'hi');
  latest().recv(msg('lobby', '8-0', 'alice', 'hi', p.ref));
  assert.equal((await p).seq, '8-0');
  assert.equal(log[0].own, true);
  latest().recv({ type: 'ack', ref: p.ref, room: 'lobby', id: 'id-8-0', seq: '8-0' }); // late ack: harmless
});

test('a join the server cannot serve is tried again; a refused one rejects', async (t) => {
  const c = newClient(t, { joinRetryMs: 10 });
  const connected = c.connect();
  latest().open();
  await connected;
  const ws = latest();
  const joining = c.join('lobby');
  ws.recv({ type: 'error', code: 'unavailable', message: 'history is unavailable; join again', ref: ws.lastSent('join').ref, room: 'lobby' });
  await until(() => ws.sent.filter((f) => f.type === 'join').length === 2, 'the join again');
  ws.recv({ type: 'joined', room: 'lobby', history: [] });
  assert.equal((await joining).room, 'lobby');

  const bad = c.join('no way');
  ws.recv({ type: 'error', code: 'invalid', message: 'room name may contain only letters', ref: ws.lastSent('join').ref, room: 'no way' });
  await assert.rejects(bad, { code: 'invalid' });
  assert.deepEqual(c.rooms, ['lobby']);
});

test('presence snapshots replace the list and changes apply to it', async (t) => {
  const c = newClient(t);
  const log = record(c, 'presence');
  await connectAndJoin(c, 'lobby');
  const ws = latest();
  ws.recv({ type: 'presence', room: 'lobby', users: ['alice', 'bob'], count: 2 });
  ws.recv({ type: 'presence', room: 'lobby', joined: ['carol'], left: ['bob'], count: 2 });
  ws.recv({ type: 'presence', room: 'elsewhere', users: ['x'], count: 1 });
  assert.equal(log.length, 2);
  assert.deepEqual(log[0], { type: 'presence', room: 'lobby', users: ['alice', 'bob'], count: 2, joined: [], left: [], snapshot: true });
  assert.deepEqual(log[1], { type: 'presence', room: 'lobby', users: ['alice', 'carol'], count: 2, joined: ['carol'], left: ['bob'], snapshot: false });
  assert.deepEqual(c.presence('lobby'), { users: ['alice', 'carol'], count: 2 });
});

test('history replies are matched to requests in order', async (t) => {
  const c = newClient(t);
  await connectAndJoin(c, 'lobby', [msg('lobby', '50-0', 'bob', 'x')]);
  const ws = latest();
  const a = c.history('lobby', '50-0', 2);
  const b = c.history('lobby', '40-0', 2);
  assert.deepEqual(ws.sent.filter((f) => f.type === 'history').map((f) => f.before), ['50-0', '40-0']);
  ws.recv(
    { type: 'history', room: 'lobby', messages: [msg('lobby', '41-0', 'bob', 'p'), msg('lobby', '42-0', 'bob', 'q')], more: true },
    { type: 'history', room: 'lobby', messages: [], more: false },
  );
  assert.deepEqual((await a).messages.map((m) => m.text), ['p', 'q']);
  assert.equal((await b).more, false);
  await assert.rejects(c.history('elsewhere'), { code: 'not_joined' });
});

test('leave confirms, and queued sends for the room reject', async (t) => {
  const c = newClient(t);
  await connectAndJoin(c, 'lobby');
  latest().drop();
  const queued = c.send('lobby', 'never');
  const left = c.leave('lobby');
  await assert.rejects(queued, { code: 'left' });
  assert.deepEqual(await left, { room: 'lobby' });
  await assert.rejects(c.send('lobby', 'x'), { code: 'not_joined' });
});

test('close rejects what is pending and stops reconnecting', async (t) => {
  const c = newClient(t);
  const status = record(c, 'status');
  await connectAndJoin(c, 'lobby');
  latest().drop();
  const p = c.send('lobby', 'x');
  const n = FakeSocket.instances.length;
  c.close();
  await assert.rejects(p, { code: 'closed' });
  assert.equal(status.at(-1).state, 'offline');
  await tick(60);
  assert.equal(FakeSocket.instances.length, n, 'no reconnect after close');
});

// reconnected joins lobby with one message seen (5-0), drops the socket and
// opens the next one: it returns the joined and message events recorded
// from then on, the new socket and the join the client sent on it.
async function reconnected(t) {
  const c = newClient(t);
  await connectAndJoin(c, 'lobby', [msg('lobby', '5-0', 'bob', 'a')]);
  const log = record(c, 'joined', 'message');
  latest().drop();
  const ws = await nextSocket();
  ws.open();
  return { c, log, ws, join: ws.lastSent('join') };
}

test('a resume whose page is full fetches the rest, after since, before going live', async (t) => {
  const { c, log, ws, join } = await reconnected(t);
  assert.equal(join.since, '5-0');
  ws.recv({ type: 'joined', room: 'lobby', ref: join.ref, history: [msg('lobby', '9-0', 'bob', 'e'), msg('lobby', '10-0', 'bob', 'f')], more: true });
  let h = ws.lastSent('history');
  assert.deepEqual([h.before, h.after], ['9-0', '5-0'], 'asks for what is older than the page and after since');
  ws.recv(msg('lobby', '11-0', 'carol', 'g')); // live, while the gap is filled
  assert.deepEqual(log, [], 'nothing is emitted before the gap is filled');
  ws.recv({ type: 'history', room: 'lobby', ref: h.ref, messages: [msg('lobby', '7-0', 'bob', 'c'), msg('lobby', '8-0', 'bob', 'd')], more: true });
  await until(() => ws.lastSent('history').ref !== h.ref, 'the next history request');
  h = ws.lastSent('history');
  assert.deepEqual([h.before, h.after], ['7-0', '5-0']);
  ws.recv({ type: 'history', room: 'lobby', ref: h.ref, messages: [msg('lobby', '6-0', 'bob', 'b')], more: false });
  await until(() => log.length === 2, 'the joined event and the held message');
  assert.deepEqual(log.map((e) => e.type), ['joined', 'message']);
  assert.deepEqual(log[0].history.map((m) => m.text), ['b', 'c', 'd', 'e', 'f']);
  assert.equal(log[0].resumed, true);
  assert.equal(log[0].more, false);
  assert.equal(log[1].text, 'g', 'the live message follows the filled history');
  assert.equal(c.lastSeq('lobby'), '11-0');
});

test('a resume page refused over the history budget is asked for again after retry_after_ms, keeping what was collected', async (t) => {
  const { log, ws, join } = await reconnected(t);
  ws.recv({ type: 'joined', room: 'lobby', ref: join.ref, history: [msg('lobby', '9-0', 'bob', 'e')], more: true });
  let h = ws.lastSent('history');
  ws.recv({ type: 'history', room: 'lobby', ref: h.ref, messages: [msg('lobby', '8-0', 'bob', 'd')], more: true });
  await until(() => ws.lastSent('history').ref !== h.ref, 'the second history request');
  h = ws.lastSent('history');
  assert.equal(h.before, '8-0');
  const refusedAt = Date.now();
  ws.recv({ type: 'error', code: 'rate_limited', message: 'too much history', room: 'lobby', ref: h.ref, retry_after_ms: 60 });
  await until(() => ws.lastSent('history').ref !== h.ref, 'the request asked again');
  assert.ok(Date.now() - refusedAt >= 50, 'asked again before retry_after_ms');
  h = ws.lastSent('history');
  assert.deepEqual([h.before, h.after], ['8-0', '5-0'], 'the same page, not the resume from the start');
  assert.equal(ws.sent.filter((f) => f.type === 'join').length, 1, 'no new join');
  ws.recv({ type: 'history', room: 'lobby', ref: h.ref, messages: [msg('lobby', '6-0', 'bob', 'b'), msg('lobby', '7-0', 'bob', 'c')], more: false });
  await until(() => log.length === 1, 'the joined event');
  assert.deepEqual(log[0].history.map((m) => m.text), ['b', 'c', 'd', 'e']);
});

test('a fresh join passes more on, for the application to page back', async (t) => {
  const c = newClient(t);
  const joined = await (async () => {
    const connected = c.connect();
    latest().open();
    await connected;
    const p = c.join('lobby', { history: 50 });
    latest().recv({ type: 'joined', room: 'lobby', ref: latest().lastSent('join').ref, history: [msg('lobby', '9-0', 'bob', 'x')], more: true });
    return p;
  })();
  assert.equal(joined.more, true);
  assert.equal(latest().lastSent('history'), undefined, 'a fresh join fetches nothing by itself');
  const page = c.history('lobby', '9-0', 50);
  const h = latest().lastSent('history');
  latest().recv({ type: 'history', room: 'lobby', ref: h.ref, messages: [msg('lobby', '8-0', 'bob', 'w')], more: false });
  assert.deepEqual((await page).messages.map((m) => m.text), ['w']);
});

test('frames are paced below the server\'s frame rate', async (t) => {
  const c = newClient(t, { frameRate: 8, frameBurst: 3 });
  await connectAndJoin(c, 'lobby'); // the join takes one token
  const ws = latest();
  const sends = ['a', 'b', 'c', 'd', 'e'].map((text) => c.send('lobby', text));
  assert.equal(ws.sent.filter((f) => f.type === 'send').length, 2, 'the burst is spent');
  await until(() => ws.sent.filter((f) => f.type === 'send').length === 5, 'the paced sends');
  assert.deepEqual(ws.sent.filter((f) => f.type === 'send').map((f) => f.text), ['a', 'b', 'c', 'd', 'e']);
  for (const f of ws.sent.filter((x) => x.type === 'send')) ws.recv({ type: 'ack', ref: f.ref, room: 'lobby', id: f.ref, seq: '1-0' });
  await Promise.all(sends);
});

test('frames the server discarded unread are written again', async (t) => {
  const c = newClient(t);
  await connectAndJoin(c, 'lobby');
  const ws = latest();
  const sendsOf = () => ws.sent.filter((f) => f.type === 'send');
  const errors = record(c, 'error');

  // A reply to a later frame proves the earlier unanswered ones were discarded.
  const first = ['a', 'b', 'c'].map((text) => c.send('lobby', text));
  ws.recv({ type: 'ack', ref: first[2].ref, room: 'lobby', id: 'i3', seq: '3-0' });
  assert.deepEqual(sendsOf().slice(3).map((f) => f.ref), [first[0].ref, first[1].ref]);
  ws.recv({ type: 'ack', ref: first[0].ref, room: 'lobby', id: 'i1', seq: '4-0' }, { type: 'ack', ref: first[1].ref, room: 'lobby', id: 'i2', seq: '5-0' });
  await Promise.all(first);

  // A rate_limited error without ref says frames were discarded, not which:
  // after the pause one probe finds out, and only the discarded go again.
  const second = ['d', 'e'].map((text) => c.send('lobby', text));
  ws.recv({ type: 'ack', ref: second[0].ref, room: 'lobby', id: 'i4', seq: '6-0' });
  ws.recv({ type: 'error', code: 'rate_limited', message: 'too many frames', retry_after_ms: 30 });
  assert.equal(errors.at(-1).code, 'rate_limited');
  assert.equal(ws.lastSent('history'), undefined, 'nothing is written during the pause');
  await until(() => ws.lastSent('history'), 'the probe');
  const probe = ws.lastSent('history');
  assert.deepEqual([probe.room, probe.limit], ['lobby', 1]);
  assert.equal(sendsOf().length, 7, 'nothing resent before the probe is answered');
  ws.recv({ type: 'history', room: 'lobby', ref: probe.ref, messages: [], more: false });
  assert.deepEqual(sendsOf().slice(7).map((f) => [f.ref, f.text]), [[second[1].ref, 'e']]);
  ws.recv({ type: 'ack', ref: second[1].ref, room: 'lobby', id: 'i5', seq: '7-0' });
  assert.deepEqual((await Promise.all(second)).map((a) => a.seq), ['6-0', '7-0']);
  assert.equal(errors.length, 1, 'the probe\'s reply is not an error of the application');
});

test('a probe answered with not_joined is not an error of the application', async (t) => {
  const c = newClient(t);
  await connectAndJoin(c, 'lobby');
  const ws = latest();
  const errors = record(c, 'error');
  const p = c.send('lobby', 'x');
  ws.recv({ type: 'error', code: 'rate_limited', message: 'too many frames', retry_after_ms: 20 });
  await until(() => ws.lastSent('history'), 'the probe');
  const probe = ws.lastSent('history');
  ws.recv({ type: 'error', code: 'not_joined', message: 'join room lobby first', ref: probe.ref, room: 'lobby' });
  assert.deepEqual(errors.map((e) => e.code), ['rate_limited']);
  const sends = ws.sent.filter((f) => f.type === 'send');
  assert.deepEqual(sends.map((f) => f.ref), [p.ref, p.ref], 'the discarded send goes again with its ref');
  ws.recv({ type: 'ack', ref: p.ref, room: 'lobby', id: 'i', seq: '2-0' });
  assert.equal((await p).seq, '2-0');
});

test('a resume sends the room epoch; a reset drops what the client kept and starts over', async (t) => {
  const c = newClient(t);
  const connected = c.connect();
  latest().open();
  await connected;
  const joined = c.join('lobby');
  latest().recv({ type: 'joined', room: 'lobby', epoch: 'e1', history: [msg('lobby', '900-0', 'bob', 'old')] });
  await joined;
  const log = record(c, 'message', 'joined');
  const pending = c.send('lobby', 'cut off');
  latest().drop();

  const ws = await nextSocket();
  ws.open();
  const join = ws.lastSent('join');
  assert.equal(join.since, '900-0');
  assert.equal(join.epoch, 'e1', 'the resume names the epoch its since belongs to');
  // The server lost the room: its seqs start lower, in a new epoch.
  ws.recv({ type: 'joined', room: 'lobby', ref: join.ref, epoch: 'e2', reset: true, history: [msg('lobby', '5-0', 'carol', 'new')] });
  const j = log.find((e) => e.type === 'joined');
  assert.equal(j.reset, true);
  assert.equal(j.resumed, false, 'a reset is a fresh start, not a resume');
  assert.deepEqual(j.history.map((m) => m.text), ['new'], 'messages below the old since are not dropped as seen');
  ws.recv(msg('lobby', '6-0', 'carol', 'live'));
  assert.ok(log.some((e) => e.type === 'message' && e.text === 'live'), 'live messages after the reset arrive');
  const resent = ws.sent.filter((f) => f.type === 'send');
  assert.equal(resent.length, 1, 'the cut-off send is sent again');
  assert.equal(resent[0].ref, pending.ref);
  ws.recv({ type: 'ack', ref: pending.ref, room: 'lobby', id: 'id-7-0', seq: '7-0' });
  assert.equal((await pending).seq, '7-0');

  // The next resume uses the new epoch.
  ws.drop();
  const ws2 = await nextSocket();
  ws2.open();
  assert.equal(ws2.lastSent('join').epoch, 'e2');
  assert.equal(ws2.lastSent('join').since, '6-0', 'since is the newest message received');
});

test('a room joined while empty learns its epoch from its messages', async (t) => {
  const c = newClient(t);
  await connectAndJoin(c, 'lobby', []); // an empty room: joined has no epoch
  latest().recv({ ...msg('lobby', '5-0', 'bob', 'first'), epoch: 'e9' });
  latest().drop();
  const ws = await nextSocket();
  ws.open();
  assert.equal(ws.lastSent('join').since, '5-0');
  assert.equal(ws.lastSent('join').epoch, 'e9');
});

// ---- signing in with a token provider (protocol v1.1) ----

// tokens returns a token provider that hands out tok-1, tok-2, ... and
// counts its calls; fail(err) makes the next call reject with err.
function tokens() {
  const p = async () => {
    p.calls++;
    if (p.next) {
      const err = p.next;
      p.next = null;
      throw err;
    }
    return `tok-${p.calls}`;
  };
  p.calls = 0;
  p.next = null;
  p.fail = (err) => { p.next = err; };
  return p;
}

// authedFrame answers the auth frame of ws for user, expiring in ms.
function authedFrame(ws, user, ms, name = '') {
  const auth = ws.lastSent('auth');
  return { type: 'authed', user, name, exp: new Date(Date.now() + ms).toISOString(), ref: auth.ref };
}

// signIn opens the client's socket, waits for its auth frame and answers it.
async function signIn(c, user = 'alice', ms = 3_600_000, name = '') {
  const connected = c.connect();
  const ws = latest();
  ws.open();
  await until(() => ws.lastSent('auth'), 'the auth frame');
  ws.recv(authedFrame(ws, user, ms, name));
  assert.equal(await connected, true);
  return ws;
}

test('with a token provider the first frame is auth, and nothing else goes out before authed', async (t) => {
  const provider = tokens();
  const c = newClient(t, { user: undefined, token: provider });
  const log = record(c, 'authed', 'status');
  const connected = c.connect();
  const ws = latest();
  assert.equal(new URL(ws.url).searchParams.has('user'), false, 'the URL names no user: the token does');
  ws.open();
  await until(() => ws.sent.length > 0, 'the first frame');
  assert.deepEqual(ws.sent, [{ type: 'auth', token: 'tok-1', ref: ws.sent[0].ref }]);
  assert.equal(c.connected, false, 'not connected before authed');
  assert.equal(log.at(-1).state, 'connecting');
  // A join and a send on the open socket before authed wait: they would
  // get unauthorized.
  const joined = c.join('lobby');
  const sent = c.send('lobby', 'early');
  await tick(5);
  assert.deepEqual(ws.sent.map((f) => f.type), ['auth']);

  ws.recv(authedFrame(ws, 'alice', 3_600_000, 'Alice Liddell'));
  assert.equal(await connected, true);
  assert.equal(c.user, 'alice');
  assert.equal(c.name, 'Alice Liddell');
  assert.ok(c.expiresAt > Date.now());
  assert.deepEqual(log.filter((e) => e.type === 'authed').map((e) => [e.user, e.name, e.refreshed]), [['alice', 'Alice Liddell', false]]);
  const join = ws.lastSent('join');
  assert.ok(join, 'the join goes out after authed');
  ws.recv({ type: 'joined', room: 'lobby', ref: join.ref, history: [] });
  await joined;
  ws.recv(msg('lobby', '5-0', 'alice', 'early', sent.ref));
  assert.equal((await sent).seq, '5-0', 'an own message (user from authed) settles the send');
});

test('a fresh token is sent before exp on the same socket', async (t) => {
  const provider = tokens();
  const c = newClient(t, { user: undefined, token: provider, refreshBeforeMs: 30_000 });
  const authed = record(c, 'authed');
  // 400 ms to live: a tenth of it (40 ms) is less than refreshBeforeMs.
  const ws = await signIn(c, 'alice', 400);
  await tick(100);
  assert.equal(ws.sent.filter((f) => f.type === 'auth').length, 1, 'refreshed too early');
  await until(() => ws.sent.filter((f) => f.type === 'auth').length === 2, 'the refresh');
  const refresh = ws.lastSent('auth');
  assert.equal(refresh.token, 'tok-2');
  assert.equal(provider.calls, 2);
  ws.recv(authedFrame(ws, 'alice', 3_600_000));
  assert.deepEqual(authed.map((e) => e.refreshed), [false, true]);
  assert.equal(FakeSocket.instances.length, 1, 'a refresh does not reconnect');
  assert.equal(c.connected, true);
});

test('a refused refresh is tried again while the token is valid', async (t) => {
  const provider = tokens();
  const c = newClient(t, { user: undefined, token: provider, refreshRetryMs: 20 });
  const errors = record(c, 'error');
  const ws = await signIn(c, 'alice', 1_000);
  await until(() => ws.sent.filter((f) => f.type === 'auth').length === 2, 'the refresh');
  ws.recv({ type: 'error', code: 'unauthorized', message: 'token for another user', ref: ws.lastSent('auth').ref });
  assert.equal(c.connected, true, 'the connection stays: the current token holds');
  assert.equal(errors.at(-1).code, 'unauthorized');
  await until(() => ws.sent.filter((f) => f.type === 'auth').length === 3, 'the second refresh');
  provider.fail(new Error('network down'));
  ws.recv({ type: 'error', code: 'unauthorized', message: 'again', ref: ws.lastSent('auth').ref });
  await until(() => errors.some((e) => e.code === 'token_unavailable'), 'the provider failure');
  await until(() => ws.sent.filter((f) => f.type === 'auth').length === 4, 'a refresh after the provider failed');
});

test('close 4001 stops reconnecting and says why', async (t) => {
  const provider = tokens();
  const c = newClient(t, { user: undefined, token: provider });
  const log = record(c, 'unauthorized', 'status');
  const connected = c.connect();
  const joined = c.join('lobby');
  const send = c.send('lobby', 'never');
  const ws = latest();
  ws.open();
  await until(() => ws.lastSent('auth'), 'the auth frame');
  ws.recv({ type: 'error', code: 'unauthorized', message: 'token signature is invalid', ref: ws.lastSent('auth').ref });
  ws.serverClose(4001, 'unauthorized');
  assert.equal(await connected, false);
  await assert.rejects(send, (err) => err instanceof ChatError && err.code === 'unauthorized');
  await assert.rejects(joined, (err) => err.code === 'unauthorized');
  const ev = log.find((e) => e.type === 'unauthorized');
  assert.deepEqual({ reason: ev.reason, by: ev.by }, { reason: 'token signature is invalid', by: 'server' });
  const s = log.filter((e) => e.type === 'status').at(-1);
  assert.deepEqual({ state: s.state, reason: s.reason }, { state: 'offline', reason: 'token signature is invalid' });
  await tick(100); // several backoff periods
  assert.equal(FakeSocket.instances.length, 1, 'no reconnect after 4001');
  assert.equal(provider.calls, 1);
  assert.deepEqual(c.rooms, ['lobby'], 'rooms are kept for a later connect');

  // Signed in again: connect resumes.
  c.connect();
  const ws2 = latest();
  assert.notEqual(ws2, ws);
  ws2.open();
  await until(() => ws2.lastSent('auth'), 'the auth frame');
  ws2.recv(authedFrame(ws2, 'alice', 60_000));
  assert.ok(ws2.lastSent('join'), 'the room is joined again');
});

test('close 4001 without an error frame uses the close reason', async (t) => {
  const c = newClient(t, { user: undefined, token: tokens() });
  const log = record(c, 'unauthorized');
  await signIn(c);
  latest().serverClose(4001, 'no valid auth within 10 s');
  assert.equal(log[0].reason, 'no valid auth within 10 s');
});

test('close 4002 reconnects at once with a new token and resumes', async (t) => {
  const provider = tokens();
  // A backoff far longer than the test: only an immediate reconnect passes.
  const c = newClient(t, { user: undefined, token: provider, backoff: { initialMs: 60_000, maxMs: 60_000 } });
  const joined = record(c, 'joined');
  const ws = await signIn(c);
  c.join('lobby');
  ws.recv({ type: 'joined', room: 'lobby', ref: ws.lastSent('join').ref, history: [msg('lobby', '5-0', 'bob', 'a')] });
  ws.serverClose(4002, 'token expired');
  const ws2 = await nextSocket();
  ws2.open();
  await until(() => ws2.lastSent('auth'), 'the auth frame');
  assert.equal(ws2.lastSent('auth').token, 'tok-2', 'a new token from the provider');
  assert.equal(ws2.lastSent('join'), undefined, 'no join before authed');
  ws2.recv(authedFrame(ws2, 'alice', 60_000));
  assert.equal(ws2.lastSent('join').since, '5-0', 'the room is resumed');
  ws2.recv({ type: 'joined', room: 'lobby', ref: ws2.lastSent('join').ref, history: [msg('lobby', '6-0', 'bob', 'b')] });
  assert.deepEqual(joined.at(-1).history.map((m) => m.text), ['b']);
  assert.equal(joined.at(-1).resumed, true);
});

test('a failing provider is retried with backoff; an unauthorized one stops the client', async (t) => {
  const provider = tokens();
  const c = newClient(t, { user: undefined, token: provider });
  const log = record(c, 'unauthorized');
  const errors = [];
  c.on('error', (e) => errors.push(e));
  provider.fail(new Error('HTTP 502'));
  c.connect();
  latest().open();
  const ws2 = await nextSocket();
  assert.equal(errors[0].code, 'token_unavailable');
  assert.match(errors[0].message, /HTTP 502/);
  provider.fail(new ChatError({ code: 'unauthorized', message: 'not signed in' }));
  ws2.open();
  await until(() => log.some((e) => e.type === 'unauthorized'), 'the unauthorized event');
  assert.deepEqual(log.filter((e) => e.type === 'unauthorized').map((e) => [e.reason, e.by]), [['not signed in', 'provider']]);
  await tick(100);
  assert.equal(FakeSocket.instances.length, 2, 'no reconnect after the provider said not signed in');
});

test('a token provider must be a function', () => {
  assert.throws(() => new ChatClient({ url: 'ws://x/ws', token: 'abc', WebSocket: FakeSocket }), TypeError);
  assert.doesNotThrow(() => new ChatClient({ url: 'ws://x/ws', token: async () => 't', WebSocket: FakeSocket }));
});

test('a left the client did not ask for (a refreshed token no longer allows the room) drops the room', async (t) => {
  const c = newClient(t, { user: undefined, token: tokens() });
  const left = record(c, 'left');
  const ws = await signIn(c);
  for (const room of ['lobby', 'team-red']) {
    c.join(room);
    ws.recv({ type: 'joined', room, ref: ws.lastSent('join').ref, history: [] });
  }
  const send = c.send('team-red', 'queued behind nothing');
  ws.recv({ type: 'left', room: 'team-red' });
  assert.deepEqual(c.rooms, ['lobby']);
  assert.equal(left.length, 1);
  assert.equal(left[0].room, 'team-red');
  assert.equal(left[0].error.code, 'forbidden');
  await assert.rejects(send, (err) => err.code === 'forbidden');
  ws.drop();
  const ws2 = await nextSocket();
  ws2.open();
  await until(() => ws2.lastSent('auth'), 'the auth frame');
  ws2.recv(authedFrame(ws2, 'alice', 60_000));
  assert.deepEqual(ws2.sent.filter((f) => f.type === 'join').map((f) => f.room), ['lobby'], 'the room is not joined again');
});

test('a server that does not use tokens (invalid on auth) stops the client', async (t) => {
  const c = newClient(t, { user: undefined, token: tokens() });
  const log = record(c, 'unauthorized');
  const connected = c.connect();
  const ws = latest();
  ws.open();
  await until(() => ws.lastSent('auth'), 'the auth frame');
  ws.recv({ type: 'error', code: 'invalid', message: 'this server does not use tokens', ref: ws.lastSent('auth').ref });
  assert.equal(await connected, false);
  assert.deepEqual(log.map((e) => [e.reason, e.by]), [['this server does not use tokens', 'server']]);
  await tick(100);
  assert.equal(FakeSocket.instances.length, 1, 'no reconnect');
});

test('a send with a ref the server would refuse unechoed is refused at once with invalid', async (t) => {
  const c = newClient(t, { sendTimeoutMs: 5000 });
  await connectAndJoin(c, 'lobby');
  const ws = latest();
  for (const ref of ['x'.repeat(65), 'ж'.repeat(65), 'bell\u0007', 'tab\there', 'zero\u200bwidth', 'a\ud800']) {
    const p = c.send('lobby', 'hi', { ref });
    await assert.rejects(p, (err) => {
      assert.equal(err.code, 'invalid', JSON.stringify(ref));
      assert.equal(err.ref, ref);
      return true;
    });
  }
  assert.equal(ws.sent.filter((f) => f.type === 'send').length, 0, 'a bad ref went out');
  assert.equal(c.pendingSends, 0);
  // The longest refs the server takes still go out.
  for (const ref of ['r'.repeat(64), 'ж'.repeat(64), 'my ref 1']) c.send('lobby', 'hi', { ref }).catch(() => {}); // closed at the end
  assert.deepEqual(ws.sent.filter((f) => f.type === 'send').map((f) => f.ref), ['r'.repeat(64), 'ж'.repeat(64), 'my ref 1']);
});

test('a moderator\'s rate_limited holds back only its room, and fails a send that cannot go out in time', async (t) => {
  const c = newClient(t, { sendTimeoutMs: 2000 });
  await connectAndJoin(c, 'lobby');
  const ws = latest();
  const other = c.join('other');
  ws.recv({ type: 'joined', room: 'other', history: [] });
  await other;
  const first = c.send('lobby', 'one');
  const second = c.send('lobby', 'two');
  ws.recv({ type: 'error', code: 'rate_limited', message: 'too many messages; wait 0.3s', ref: first.ref, room: 'lobby', retry_after_ms: 300, moderator: 'ratelimit' });
  ws.recv({ type: 'ack', ref: second.ref, room: 'lobby', id: 'id-2', seq: '2-0' });
  await second;
  // Another room's send and a history request go out at once.
  const elsewhere = c.send('other', 'elsewhere');
  const page = c.history('lobby', '', 1);
  assert.deepEqual(ws.sent.filter((f) => f.type === 'send').map((f) => f.text), ['one', 'two', 'elsewhere']);
  assert.equal(ws.sent.filter((f) => f.type === 'history').length, 1, 'the history request waited');
  ws.recv({ type: 'ack', ref: elsewhere.ref, room: 'other', id: 'id-3', seq: '3-0' });
  ws.recv({ type: 'history', ref: ws.lastSent('history').ref, room: 'lobby', messages: [], more: false });
  await Promise.all([elsewhere, page]);
  // A later send of the held room waits behind the held one.
  const third = c.send('lobby', 'three');
  assert.deepEqual(ws.sent.filter((f) => f.type === 'send').map((f) => f.text), ['one', 'two', 'elsewhere']);
  await until(() => ws.sent.filter((f) => f.type === 'send').length === 5, 'the held sends');
  assert.deepEqual(ws.sent.filter((f) => f.type === 'send').slice(3).map((f) => f.text), ['one', 'three']);
  ws.recv({ type: 'ack', ref: first.ref, room: 'lobby', id: 'id-4', seq: '4-0' });
  ws.recv({ type: 'ack', ref: third.ref, room: 'lobby', id: 'id-5', seq: '5-0' });
  assert.equal((await first).seq, '4-0');
  await third;

  // A wait past the send's deadline fails it now, with the moderator's reason.
  const late = c.send('lobby', 'four');
  ws.recv({ type: 'error', code: 'rate_limited', message: 'too many messages; wait 30s', ref: late.ref, room: 'lobby', retry_after_ms: 30000, moderator: 'ratelimit' });
  await assert.rejects(late, { code: 'rate_limited', moderator: 'ratelimit', retryAfterMs: 30000, message: 'too many messages; wait 30s' });
  assert.equal(c.pendingSends, 0);
});

test('an overdue ack with nothing heard since the send drops the half-open socket and resumes', async (t) => {
  const c = newClient(t, { sendTimeoutMs: 200 });
  await connectAndJoin(c, 'lobby', [msg('lobby', '1-0', 'bob', 'hi')]);
  const ws = latest();
  const errors = record(c, 'error');
  const lost = c.send('lobby', 'lost');
  await tick(50);
  const inFlight = c.send('lobby', 'in flight');
  await assert.rejects(lost, { code: 'timeout' });
  const next = await nextSocket();
  assert.ok(errors.some((e) => e.code === 'disconnected'), 'no error event says why');
  next.open();
  const join = next.lastSent('join');
  assert.equal(join.since, '1-0', 'the resume starts after the last seq seen');
  // The resumed history holds the timed-out send (stored after all), not the other.
  next.recv({ type: 'joined', room: 'lobby', ref: join.ref, history: [msg('lobby', '2-0', 'alice', 'lost', lost.ref)] });
  assert.deepEqual(next.sent.filter((f) => f.type === 'send').map((f) => [f.text, f.ref]), [['in flight', inFlight.ref]]);
  next.recv({ type: 'ack', ref: inFlight.ref, room: 'lobby', id: 'id-3', seq: '3-0' });
  assert.equal((await inFlight).seq, '3-0');
  assert.equal(ws.readyState, 3, 'the old socket was closed');
});

test('an overdue ack on a socket that still delivers is no reason to reconnect', async (t) => {
  const c = newClient(t, { sendTimeoutMs: 150 });
  await connectAndJoin(c, 'lobby');
  const ws = latest();
  const slow = c.send('lobby', 'slow');
  ws.recv(msg('lobby', '1-0', 'bob', 'still talking'));
  await assert.rejects(slow, { code: 'timeout' });
  await tick(30);
  assert.equal(FakeSocket.instances.length, 1);
  assert.equal(c.connected, true);
});
