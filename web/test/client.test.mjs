// Tests of chatstream-client.js against a real chatstream server, whose base
// URL web/node_test.go passes in CHATSTREAM_URL. Every test uses rooms of
// its own, so the test files can share the server.

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { ChatClient, compareSeq, validateUser } from '../static/chatstream-client.js';
import net from 'node:net';

const BASE = process.env.CHATSTREAM_URL;
const WS_URL = BASE && new URL('/ws', BASE).href;
const WAIT_MS = 5000;

before(() => {
  assert.ok(BASE, 'CHATSTREAM_URL must name a running server (web/node_test.go sets it)');
  assert.equal(typeof WebSocket, 'function', 'run node with --experimental-websocket');
});

let roomN = 0;
const uniqueRoom = (name) => `${name}-${process.pid}-${Date.now().toString(36)}-${++roomN}`;

// Spy is a WebSocket that records what it receives, can be forced closed,
// and while `blocked` dials a port where nothing listens.
function spySockets() {
  const spy = { sockets: [], raw: [], sent: [], blocked: false };
  spy.WebSocket = class extends WebSocket {
    constructor(url, protocols) {
      super(spy.blocked ? 'ws://127.0.0.1:9/ws' : url, protocols);
      spy.sockets.push(this);
      this.addEventListener('message', (e) => spy.raw.push(e.data));
    }

    send(data) {
      spy.sent.push(JSON.parse(data));
      super.send(data);
    }
  };
  spy.current = () => spy.sockets.at(-1);
  return spy;
}

function newClient(t, user, opts = {}) {
  const c = new ChatClient({ url: WS_URL, user, backoff: { initialMs: 20, maxMs: 200 }, ...opts });
  t.after(() => c.close());
  return c;
}

// until polls cond until it is true or WAIT_MS passes.
async function until(cond, what) {
  const deadline = Date.now() + WAIT_MS;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

// inbox collects every message of room a client shows: the joined histories
// and the live messages, in order.
function inbox(c, room) {
  const got = [];
  c.on('joined', (j) => { if (j.room === room) got.push(...j.history); });
  c.on('message', (m) => { if (m.room === room) got.push(m); });
  return got;
}

const texts = (ms) => ms.map((m) => m.text);

// nextStatus resolves at the client's next status event with this state.
function nextStatus(c, state) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${state} status within ${WAIT_MS} ms`)), WAIT_MS);
    const off = c.on('status', (s) => {
      if (s.state !== state) return;
      clearTimeout(timer);
      off();
      resolve(s);
    });
  });
}

test('connect, join, send and ack', async (t) => {
  const room = uniqueRoom('basic');
  const c = newClient(t, 'alice');
  const states = [];
  c.on('status', (s) => states.push(s.state));
  const got = inbox(c, room);
  const acks = [];
  c.on('ack', (a) => acks.push(a));

  assert.equal(await c.connect(), true);
  assert.deepEqual(states, ['connecting', 'connected']);
  const joined = await c.join(room, { history: 10 });
  assert.deepEqual(joined, { room, history: [], truncated: false, resumed: false, more: false, reset: false, epoch: null });

  const sent = c.send(room, 'hello, world');
  const ack = await sent;
  assert.equal(ack.room, room);
  assert.equal(ack.ref, sent.ref);
  assert.match(ack.id, /^[0-9a-f-]{36}$/);
  assert.ok(ack.seq);
  await until(() => got.length === 1, 'own message');
  assert.equal(got[0].text, 'hello, world');
  assert.equal(got[0].seq, ack.seq);
  assert.equal(got[0].user, 'alice');
  assert.equal(got[0].own, true);
  assert.equal(got[0].ref, sent.ref);
  assert.ok(!Number.isNaN(Date.parse(got[0].ts)));
  await until(() => acks.length === 1, 'ack event');
  assert.equal(c.pendingSends, 0);
});

test('two clients see each other\'s messages, in the same order', async (t) => {
  const room = uniqueRoom('pair');
  const a = newClient(t, 'alice');
  const b = newClient(t, 'bob');
  const gotA = inbox(a, room);
  const gotB = inbox(b, room);
  await Promise.all([a.connect(), b.connect()]);
  await Promise.all([a.join(room), b.join(room)]);

  await a.send(room, 'hi bob');
  await b.send(room, 'hi alice');
  await a.send(room, 'how are you?');
  await until(() => gotA.length === 3 && gotB.length === 3, 'three messages on both');
  assert.deepEqual(texts(gotA), ['hi bob', 'hi alice', 'how are you?']);
  assert.deepEqual(texts(gotB), texts(gotA));
  assert.deepEqual(gotA.map((m) => m.own), [true, false, true]);
  assert.deepEqual(gotB.map((m) => m.own), [false, true, false]);
  for (let i = 1; i < gotA.length; i++) assert.equal(compareSeq(gotA[i - 1].seq, gotA[i].seq), -1);

  // A later joiner gets them as history, and pages back with history().
  const c = newClient(t, 'carol');
  await c.connect();
  const joined = await c.join(room, { history: 2 });
  assert.deepEqual(texts(joined.history), ['hi alice', 'how are you?']);
  const older = await c.history(room, joined.history[0].seq, 5);
  assert.deepEqual(texts(older.messages), ['hi bob']);
  assert.equal(older.more, false);
});

test('batched server messages are split into frames', async (t) => {
  const room = uniqueRoom('batch');
  const spy = spySockets();
  const c = newClient(t, 'alice', { WebSocket: spy.WebSocket });
  const got = inbox(c, room);
  await c.connect();
  await c.join(room);

  // Thirty sends without waiting make the server queue messages and acks
  // faster than it writes them, so it batches them.
  let sent = 0;
  for (let round = 0; round < 3 && !spy.raw.some((d) => d.includes('\n')); round++) {
    const acks = await Promise.all(Array.from({ length: 30 }, (_, i) => c.send(room, `m${sent + i}`)));
    sent += 30;
    assert.equal(acks.length, 30);
    await until(() => got.length === sent, `${sent} messages`);
  }
  assert.ok(spy.raw.some((d) => d.includes('\n')), 'the server sent no batched message');
  assert.deepEqual(texts(got), Array.from({ length: sent }, (_, i) => `m${i}`));
});

test('a resumed client gets every message once after its socket is dropped', async (t) => {
  const room = uniqueRoom('resume');
  const spy = spySockets();
  const a = newClient(t, 'alice', { WebSocket: spy.WebSocket });
  const b = newClient(t, 'bob');
  const got = inbox(a, room);
  await Promise.all([a.connect(), b.connect()]);
  await Promise.all([a.join(room), b.join(room)]);
  await b.send(room, 'one');
  await b.send(room, 'two');
  await until(() => got.length === 2, 'two messages');
  const lastSeen = a.lastSeq(room);

  // Drop alice's socket and keep her away while bob talks.
  spy.blocked = true;
  const old = spy.current();
  const away = nextStatus(a, 'reconnecting');
  old.close();
  await away;
  for (const text of ['three', 'four', 'five']) await b.send(room, text);

  // Record alice's frames on the new socket, and replay old ones there.
  spy.blocked = false;
  a.reconnectNow();
  await until(() => a.connected && spy.current() !== old, 'reconnected');
  const ws = spy.current();
  await until(() => got.length === 5, 'the missed messages');
  const rejoins = spy.sent.filter((f) => f.type === 'join').slice(1);
  assert.deepEqual(rejoins.map((f) => f.since), [lastSeen], 'rejoined once, with since the last seq seen');
  ws.dispatchEvent(new MessageEvent('message', { data: spy.raw.filter((d) => d.includes('"two"') || d.includes('"four"')).join('\n') }));
  await b.send(room, 'six');
  await until(() => got.length >= 6, 'the next live message');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(texts(got), ['one', 'two', 'three', 'four', 'five', 'six']);
  assert.equal(new Set(got.map((m) => m.seq)).size, 6);
});

test('a client that has seen nothing of a room still gets what was sent while it was offline', async (t) => {
  const quiet = uniqueRoom('quiet'); // one old message, joined with history 0
  const empty = uniqueRoom('empty'); // nothing stored when joined
  const spy = spySockets();
  const a = newClient(t, 'alice', { WebSocket: spy.WebSocket });
  const b = newClient(t, 'bob');
  await b.connect();
  await b.join(quiet, { history: 0 });
  await b.join(empty, { history: 0 });
  const old = await b.send(quiet, 'old');
  const gotQuiet = inbox(a, quiet);
  const gotEmpty = inbox(a, empty);
  await a.connect();
  await a.join(quiet, { history: 0 });
  await a.join(empty, { history: 2 });
  assert.equal(gotQuiet.length + gotEmpty.length, 0, 'history 0 shows nothing, and the empty room has nothing');

  spy.blocked = true;
  const away = nextStatus(a, 'reconnecting');
  spy.current().close();
  await away;
  for (const text of ['one', 'two', 'three']) {
    await b.send(quiet, text);
    await b.send(empty, text);
  }
  spy.blocked = false;
  a.reconnectNow();
  await until(() => gotQuiet.length === 3 && gotEmpty.length === 3, 'the messages sent while offline');
  const rejoins = spy.sent.filter((f) => f.type === 'join').slice(2);
  assert.deepEqual(rejoins.find((f) => f.room === quiet).since, old.seq, 'the quiet room resumes after its newest message at the join');
  assert.deepEqual(rejoins.find((f) => f.room === empty).since, '0-0', 'the empty room resumes from its start');
  await b.send(quiet, 'four');
  await until(() => gotQuiet.length === 4, 'the next live message');
  assert.deepEqual(texts(gotQuiet), ['one', 'two', 'three', 'four']);
  assert.deepEqual(texts(gotEmpty), ['one', 'two', 'three']);
});

test('sends made while offline are queued and sent once on reconnect', async (t) => {
  const room = uniqueRoom('queue');
  const spy = spySockets();
  const a = newClient(t, 'alice', { WebSocket: spy.WebSocket });
  const b = newClient(t, 'bob');
  const gotB = inbox(b, room);
  await Promise.all([a.connect(), b.connect()]);
  await Promise.all([a.join(room), b.join(room)]);

  spy.blocked = true;
  const away = nextStatus(a, 'reconnecting');
  spy.current().close();
  await away;
  const sends = ['q1', 'q2', 'q3'].map((text) => a.send(room, text));
  assert.equal(a.pendingSends, 3);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(gotB.length, 0, 'nothing went out while offline');

  spy.blocked = false;
  a.reconnectNow();
  const acks = await Promise.all(sends);
  assert.deepEqual(acks.map((x) => x.ref), sends.map((p) => p.ref));
  assert.equal(compareSeq(acks[0].seq, acks[1].seq), -1);
  assert.equal(compareSeq(acks[1].seq, acks[2].seq), -1);
  await until(() => gotB.length === 3, 'bob gets the queued messages');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(texts(gotB), ['q1', 'q2', 'q3']);
  assert.equal(a.pendingSends, 0);
});

test('the offline queue is bounded and unacknowledged sends time out', async (t) => {
  const room = uniqueRoom('bounded');
  const spy = spySockets();
  const a = newClient(t, 'alice', { WebSocket: spy.WebSocket, maxQueue: 2, sendTimeoutMs: 300 });
  await a.connect();
  await a.join(room);
  spy.blocked = true;
  const away = nextStatus(a, 'reconnecting');
  spy.current().close();
  await away;

  const first = a.send(room, 'one');
  const second = a.send(room, 'two');
  await assert.rejects(a.send(room, 'three'), { code: 'offline_queue_full' });
  const started = Date.now();
  await assert.rejects(first, { code: 'timeout' });
  await assert.rejects(second, { code: 'timeout' });
  assert.ok(Date.now() - started >= 250, 'timed out too early');
  assert.equal(a.pendingSends, 0);
});

test('invalid input is refused with the server\'s code', async (t) => {
  const room = uniqueRoom('invalid');
  const c = newClient(t, 'alice');
  const errors = [];
  c.on('error', (e) => errors.push(e));
  await c.connect();
  await c.join(room);

  const empty = c.send(room, '');
  await assert.rejects(empty, (err) => {
    assert.equal(err.code, 'invalid');
    assert.equal(err.ref, empty.ref);
    assert.match(err.message, /empty/);
    return true;
  });
  await assert.rejects(c.send(room, '   '), { code: 'invalid' });
  await assert.rejects(c.send(room, 'x'.repeat(5000)), { code: 'too_large' });
  await assert.rejects(c.send(room, 'bell \u0007'), { code: 'invalid' });
  await assert.rejects(c.join('not a room!'), { code: 'invalid' });
  await assert.rejects(c.send('never-joined', 'hi'), { code: 'not_joined' });
  assert.ok(errors.some((e) => e.ref === empty.ref), 'the error event fired too');
  // The connection survives every refusal.
  assert.equal((await c.send(room, 'still here')).room, room);
});

test('leave stops delivery for the room', async (t) => {
  const room = uniqueRoom('leave');
  const a = newClient(t, 'alice');
  const b = newClient(t, 'bob');
  const got = inbox(a, room);
  await Promise.all([a.connect(), b.connect()]);
  await Promise.all([a.join(room), b.join(room)]);
  await b.send(room, 'before');
  await until(() => got.length === 1, 'first message');
  assert.deepEqual(await a.leave(room), { room });
  assert.deepEqual(a.rooms, []);
  await b.send(room, 'after');
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(texts(got), ['before']);
});

test('a resume fetches what did not fit the server\'s page, and a fresh join pages back', async (t) => {
  const room = uniqueRoom('pages');
  const spy = spySockets();
  const a = newClient(t, 'alice', { WebSocket: spy.WebSocket });
  const b = newClient(t, 'bob');
  const got = inbox(a, room);
  await Promise.all([a.connect(), b.connect()]);
  await Promise.all([a.join(room, { history: 0 }), b.join(room, { history: 0 })]);
  await b.send(room, 'before');
  await until(() => got.length === 1, 'the first message');
  const lastSeen = a.lastSeq(room);

  spy.blocked = true;
  const away = nextStatus(a, 'reconnecting');
  spy.current().close();
  await away;
  // 40 texts of 4000 quotes, each sent escaped (8 KB): more than the
  // server's 256 KiB page.
  const big = Array.from({ length: 40 }, (_, i) => `${String(i).padStart(2, '0')} ${'"'.repeat(4000)}`);
  await Promise.all(big.map((text) => b.send(room, text)));

  spy.blocked = false;
  a.reconnectNow();
  await until(() => got.length === 41, 'every message missed');
  assert.deepEqual(texts(got), ['before', ...big]);
  const fills = spy.sent.filter((f) => f.type === 'history');
  assert.ok(fills.length >= 1, 'the resume needed no history request: the page was not full');
  assert.ok(fills.every((f) => f.after === lastSeen), 'every fill request stops at since');
  await b.send(room, 'live');
  await until(() => got.length === 42, 'the next live message');
  assert.equal(got.at(-1).text, 'live');

  // A fresh join gets the newest messages that fit, says more, and the
  // rest comes with history.
  const c = newClient(t, 'carol');
  await c.connect();
  const joined = await c.join(room, { history: 42 });
  assert.equal(joined.more, true);
  assert.ok(joined.history.length > 0 && joined.history.length < 42, `joined holds ${joined.history.length} messages`);
  let all = joined.history;
  for (let page = { more: true }; page.more;) {
    page = await c.history(room, all[0].seq, 50);
    all = [...page.messages, ...all];
  }
  assert.deepEqual(texts(all), ['before', ...big, 'live']);
});

// serverRefusesUser asks the server whether it takes name as ?user=: before
// the upgrade, a bad name is answered 400 "bad user: …"; a good one gets
// as far as the WebSocket handshake, which a plain GET fails otherwise.
async function serverRefusesUser(name) {
  const url = `${WS_URL.replace(/^ws/, 'http')}?user=${encodeURIComponent(name)}`;
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(url);
    const body = await res.text();
    if (res.status === 429 && attempt < 20) {
      await new Promise((r) => setTimeout(r, 1000 * Number(res.headers.get('Retry-After') || 1)));
      continue;
    }
    assert.equal(res.status, 400, `GET ?user=${JSON.stringify(name)}: ${body}`);
    return body.startsWith('bad user');
  }
}

test('validateUser refuses exactly the names the server refuses', async () => {
  const names = [
    'alice', 'Zoë Ünal', 'Ωμέγα', '🦊', 'ａｌｉｃｅ', 'Zoe\u0308', 'a'.repeat(32),
    '', ' alice', 'alice ', 'a'.repeat(33), 'bad\u0007bell', '\u0430lice', 'Zoë Ω', 'al\u3164ice',
    '\u2800', 'alice\ufe0f', 'al\u2060ice', 'al\u00a0ice', 'al\u200bice', 'al\u202eice', '\ue000x',
  ];
  for (const name of names) {
    const client = validateUser(name) !== '';
    assert.equal(client, await serverRefusesUser(name), `${JSON.stringify(name)}: validateUser says ${JSON.stringify(validateUser(name))}`);
  }
});


test('a name typed in another Unicode form is used in the server\'s NFKC form: own messages are own', async (t) => {
  const room = uniqueRoom('nfkc');
  const c = newClient(t, '\uff41\uff4c\uff49\uff43\uff45'); // full-width "alice"
  assert.equal(c.user, 'alice');
  const got = inbox(c, room);
  await c.connect();
  await c.join(room, { history: 0 });
  const sent = c.send(room, 'hi from me');
  await sent;
  await until(() => got.length === 1, 'own message');
  assert.equal(got[0].user, 'alice');
  assert.equal(got[0].own, true);
  assert.equal(got[0].ref, sent.ref);
});

// startProxy relays TCP connections to the server; mode "down-only" loses
// what the server sends (a half-open connection: no close, no error),
// "silent" loses both directions.
function startProxy() {
  const target = Number(new URL(BASE).port);
  const st = { mode: 'open', conns: [] };
  const srv = net.createServer((c) => {
    const s = net.connect(target, '127.0.0.1');
    st.conns.push([c, s]);
    c.on('data', (d) => { if (st.mode === 'open' || st.mode === 'down-only') s.write(d); });
    s.on('data', (d) => { if (st.mode === 'open') c.write(d); });
    const end = () => { c.destroy(); s.destroy(); };
    c.on('error', end); s.on('error', end); c.on('close', end); s.on('close', end);
  });
  st.close = () => {
    srv.close();
    for (const [a, b] of st.conns.splice(0)) { a.destroy(); b.destroy(); }
  };
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => {
    st.url = `http://127.0.0.1:${srv.address().port}/ws`;
    resolve(st);
  }));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('a client that only reads notices a dead connection by its keepalive ping, and resumes', async (t) => {
  const room = uniqueRoom('keepalive');
  const px = await startProxy();
  t.after(() => px.close());
  const spy = spySockets();
  const a = newClient(t, 'alice', { url: px.url, WebSocket: spy.WebSocket, keepaliveMs: 200, requestTimeoutMs: 400, connectTimeoutMs: 2000 });
  const b = newClient(t, 'bob');
  const got = inbox(a, room);
  const errors = [];
  a.on('error', (e) => errors.push(e.code));
  await Promise.all([a.connect(), b.connect()]);
  await Promise.all([a.join(room, { history: 0 }), b.join(room, { history: 0 })]);

  // A quiet but live connection: pings are answered, nothing is dropped.
  await until(() => spy.sent.filter((f) => f.type === 'ping').length >= 3, 'pings on a quiet connection');
  assert.equal(spy.sockets.length, 1, 'a live connection was dropped');
  assert.deepEqual(errors, [], 'a pong showed as an error');

  px.mode = 'silent'; // the network path dies: no close, no error
  const away = nextStatus(a, 'reconnecting');
  await b.send(room, 'while the link was dead');
  await away;
  px.mode = 'open';
  await until(() => got.length === 1, 'the message sent while the link was dead');
  assert.equal(got[0].text, 'while the link was dead');
  assert.deepEqual(errors, ['disconnected']);
});

test('a half-open connection is dropped when a send times out, and the resume delivers what was missed, once', async (t) => {
  const room = uniqueRoom('halfopen');
  const px = await startProxy();
  t.after(() => px.close());
  const spy = spySockets();
  const a = newClient(t, 'alice', { url: px.url, WebSocket: spy.WebSocket, sendTimeoutMs: 1500, connectTimeoutMs: 2000 });
  const b = newClient(t, 'bob');
  const got = inbox(a, room);
  await Promise.all([a.connect(), b.connect()]);
  await Promise.all([a.join(room, { history: 0 }), b.join(room, { history: 0 })]);
  await b.send(room, 'hello');
  await until(() => got.length === 1, 'the first message');

  px.mode = 'down-only'; // alice's frames still arrive; nothing comes back
  await b.send(room, 'are you there?');
  const first = a.send(room, 'first'); // stored, but its ack is lost
  await sleep(300);
  px.mode = 'silent';
  await sleep(900);
  const second = a.send(room, 'second'); // lost on the way: still in flight at the drop
  const away = nextStatus(a, 'reconnecting');
  await assert.rejects(first, { code: 'timeout' });
  await away;
  px.mode = 'open';
  const old = spy.sockets[0];
  await until(() => a.connected && spy.current() !== old, 'reconnected');
  const ack = await second;
  assert.equal(ack.ref, second.ref);
  await until(() => got.length === 4, 'the missed messages and the resent one');
  await sleep(100);
  assert.deepEqual(texts(got), ['hello', 'are you there?', 'first', 'second']);
  assert.equal(got[2].ref, first.ref);
  assert.ok(got.slice(2).every((m) => m.own));
  const rejoin = spy.sent.filter((f) => f.type === 'join').at(-1);
  assert.equal(rejoin.since, got[0].seq, 'the rejoin resumes after the last message seen');
  const resent = spy.sent.filter((f) => f.type === 'send' && f.text === 'second');
  assert.ok(resent.length >= 2, 'the second send was not written again');
  assert.ok(resent.every((f) => f.ref === second.ref), 'a resend changed the ref');

  // The room holds each message once.
  const c = newClient(t, 'carol');
  await c.connect();
  const joined = await c.join(room, { history: 10 });
  assert.deepEqual(texts(joined.history), ['hello', 'are you there?', 'first', 'second']);
});

test('a send that times out while waiting for its turn to be written is never written', async (t) => {
  const room = uniqueRoom('outq');
  const spy = spySockets();
  const a = newClient(t, 'alice', { WebSocket: spy.WebSocket, frameRate: 1, frameBurst: 2, sendTimeoutMs: 1500 });
  const b = newClient(t, 'bob');
  const gotB = inbox(b, room);
  await Promise.all([a.connect(), b.connect()]);
  await b.join(room, { history: 0 });
  await a.join(room, { history: 0 });
  await sleep(1200); // the bucket refills after the join
  // Two go out at once, the third a second later; the fourth would go out
  // two seconds later, after its timeout.
  const results = await Promise.allSettled(['one', 'two', 'three', 'four'].map((text) => a.send(room, text)));
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'rejected']);
  assert.equal(results[3].reason.code, 'timeout');
  await sleep(1000); // past the time the fourth would have been written
  assert.deepEqual(spy.sent.filter((f) => f.type === 'send').map((f) => f.text), ['one', 'two', 'three']);
  assert.deepEqual(texts(gotB), ['one', 'two', 'three']);
  assert.equal(a.pendingSends, 0);
});
