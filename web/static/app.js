// app.js: the chatstream chat page. It keeps a model of every joined room
// (messages, pending sends, unread count, presence), renders the open room,
// and talks to the server only through ChatClient.
//
// It reads the server's sign-in mode from config.json: with auth "none" it
// asks for a name; with "jwt" it fetches a token from the configured token
// URL (with the browser's cookies), shows who is signed in, and says why
// when the server refuses the token.

import { ChatClient, ChatError, CODE_UNAUTHORIZED, validateRoom, validateUser } from './chatstream-client.js';
import { avatar, dayLabel, fullLabel, h, hueClass, icon, linkify, sameDay, timeLabel } from './dom.js';

// Messages of one user less than this far apart share one group.
const GROUP_MS = 5 * 60 * 1000;
// Messages asked for on join and per page of older history.
const HISTORY_PAGE = 50;
// Distance from the bottom, in pixels, that still counts as "at the bottom".
const STICK_PX = 48;
// Distance from the top, in pixels, at which older history is loaded.
const LOAD_OLDER_PX = 160;
// Items (messages and notices) a room keeps; beyond this plus TRIM_SLACK
// the oldest go, and can be paged back from the server like older history.
const MAX_ITEMS = 1000;
const TRIM_SLACK = 100;
// Screen-reader announcements kept in the live region.
const MAX_ANNOUNCEMENTS = 3;
const DEFAULT_ROOM = 'lobby';

const KEY_NAME = 'chatstream.name';
const KEY_ROOMS = 'chatstream.rooms';

// Labels of error codes for rejected messages; the server's reason follows.
const REASONS = {
  rejected: 'Blocked by moderation',
  too_large: 'Too long',
  invalid: 'Not accepted',
  rate_limited: 'Sending too fast',
  timeout: 'Not delivered',
  offline_queue_full: 'Too many unsent messages',
  not_joined: 'Not in this room',
  left: 'You left the room',
  closed: 'Disconnected',
  unavailable: 'Server unavailable',
  internal: 'Server error',
  unauthorized: 'Signed out',
  forbidden: 'Not allowed here',
};

const $ = (id) => document.getElementById(id);
const els = {
  welcome: $('welcome'), nameForm: $('name-form'), nameInput: $('name-input'), nameError: $('name-error'),
  chat: $('chat'), sidebar: $('sidebar'), backdrop: $('backdrop'), main: $('main'),
  roomList: $('room-list'), joinForm: $('join-form'), joinInput: $('join-input'), joinError: $('join-error'),
  meAvatar: $('me-avatar'), meName: $('me-name'), changeName: $('change-name'), closeSidebar: $('close-sidebar'),
  menuButton: $('menu-button'), menuBadge: $('menu-badge'), roomName: $('room-name'), roomMeta: $('room-meta'),
  status: $('status'), statusText: $('status-text'), retryButton: $('retry-button'),
  membersButton: $('members-button'), membersCount: $('members-count'), members: $('members'),
  memberList: $('member-list'), membersMore: $('members-more'), leaveButton: $('leave-button'),
  empty: $('empty'), timeline: $('timeline'), scroller: $('scroller'), loadOlder: $('load-older'),
  historyStatus: $('history-status'), messages: $('messages'), pending: $('pending'),
  newPill: $('new-pill'), newPillText: $('new-pill-text'),
  composer: $('composer'), input: $('composer-input'), composerLabel: $('composer-label'),
  announcer: $('announcer'), meSub: $('me-sub'),
  signedOut: $('signed-out'), signedOutReason: $('signed-out-reason'), signInLink: $('sign-in-link'),
  signedOutRetry: $('signed-out-retry'),
};

const narrow = matchMedia('(max-width: 760px)');
const coarsePointer = matchMedia('(pointer: coarse)');

const storage = {
  get(key, fallback) {
    try {
      const v = localStorage.getItem(key);
      return v == null ? fallback : JSON.parse(v);
    } catch {
      return fallback; // storage disabled or corrupt
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(key, JSON.stringify(value));
    } catch {
      // storage disabled or full: the page works without it
    }
  },
};

/** @type {ChatClient|null} */
let client = null;
let me = '';
/** Rooms by name, in the order they were joined. */
const rooms = new Map();
let active = null;
let countdown = null;
let hadConnection = false;
/** The server's sign-in configuration (config.json). */
let config = { auth: 'none' };

function newRoom(name) {
  return {
    name,
    items: [], // {kind: 'msg', m} | {kind: 'notice', text, ts}, oldest first
    seqs: new Set(),
    pending: new Map(), // ref → {ref, text, state: 'queued'|'sending'|'sent'|'failed', error}
    joined: false,
    more: false,
    loadingOlder: false,
    olderFailed: false,
    unread: 0,
    firstUnread: null, // seq of the first message that arrived while away
    presence: null, // {users, count}
    stick: true,
    scrollTop: 0,
    newCount: 0,
  };
}

// ---- start and name ----

function showWelcome(prefill = '') {
  els.chat.hidden = true;
  els.welcome.hidden = false;
  els.nameInput.value = prefill;
  els.nameError.textContent = '';
  els.nameInput.focus();
  document.title = 'chatstream';
}

els.nameForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const name = els.nameInput.value.trim();
  const bad = validateUser(name);
  if (bad) {
    els.nameError.textContent = bad[0].toUpperCase() + bad.slice(1) + '.';
    els.nameInput.setAttribute('aria-invalid', 'true');
    els.nameInput.focus();
    return;
  }
  els.nameInput.removeAttribute('aria-invalid');
  start(name);
  focusComposer();
});

function showMe(user, name) {
  me = user;
  els.meName.textContent = name || user;
  els.meSub.textContent = name && name !== user ? `You · ${user}` : 'You';
  els.meAvatar.className = `avatar ${hueClass(user)}`;
  els.meAvatar.textContent = avatar(name || user).textContent;
}

// start opens the chat as name, or, without name, signed in with tokens
// from config.tokenUrl.
function start(name) {
  const options = { url: new URL('ws', location.href).href, backoff: { initialMs: 1000, maxMs: 30_000 } };
  if (name) {
    // The server keeps the name in NFKC (full-width "ｔａｒｏ" is "taro"),
    // and own messages carry that form.
    name = name.normalize('NFKC');
    storage.set(KEY_NAME, name);
    showMe(name, '');
    options.user = name;
  } else {
    showMe('', 'Signing in…');
    options.token = fetchToken;
  }
  els.welcome.hidden = true;
  els.signedOut.hidden = true;
  els.chat.hidden = false;

  client = new ChatClient(options);
  client.on('authed', ({ user, name: display }) => showMe(user, display));
  client.on('unauthorized', ({ reason, by }) => {
    showSignedOut(by === 'server' ? `The server refused your sign-in: ${reason}.` : reason);
  });
  client.on('status', renderStatus);
  client.on('joined', onJoined);
  client.on('message', onMessage);
  client.on('presence', onPresence);
  client.on('left', onLeftByServer);
  client.on('error', (err) => {
    if (!err.ref) console.warn('chatstream:', err.code, err.message);
  });
  client.connect();

  const saved = storage.get(KEY_ROOMS, null);
  const names = Array.isArray(saved) ? saved.filter((r) => !validateRoom(r)) : [DEFAULT_ROOM];
  const fromHash = roomFromHash();
  if (fromHash && !names.includes(fromHash)) names.push(fromHash);
  for (const r of names) joinRoom(r);
  selectRoom(fromHash || names[0] || null);
}

function stop() {
  hadConnection = false;
  client?.close();
  client = null;
  rooms.clear();
  active = null;
  clearInterval(countdown);
}

// fetchToken is the client's token provider in jwt mode: a POST to the
// token URL with the browser's cookies. 401 and 403 mean nobody is signed
// in, which stops the client; other failures are retried with backoff.
async function fetchToken() {
  const res = await fetch(config.tokenUrl, {
    method: 'POST', credentials: 'include', cache: 'no-store', headers: { Accept: 'application/json, text/plain' },
  });
  if (res.status === 401 || res.status === 403) {
    throw new ChatError({ code: CODE_UNAUTHORIZED, message: 'You are not signed in.' });
  }
  if (!res.ok) throw new Error(`the token endpoint answered ${res.status}`);
  if ((res.headers.get('Content-Type') || '').includes('json')) return (await res.json()).token;
  return (await res.text()).trim();
}

// showSignedOut replaces the chat with why the page cannot sign in, a
// sign-in link when the server names one, and a button to try again.
function showSignedOut(reason) {
  els.chat.hidden = true;
  els.welcome.hidden = true;
  els.signedOut.hidden = false;
  els.signedOutReason.textContent = reason;
  els.signInLink.hidden = !config.signInUrl;
  if (config.signInUrl) els.signInLink.href = config.signInUrl;
  els.signedOutRetry.hidden = !client;
  document.title = 'Signed out · chatstream';
  (config.signInUrl ? els.signInLink : els.signedOutRetry).focus();
}

els.signedOutRetry.addEventListener('click', () => {
  if (!client) return;
  els.signedOut.hidden = true;
  els.chat.hidden = false;
  updateTitle();
  client.connect();
});

els.changeName.addEventListener('click', () => {
  const old = me;
  stop();
  showWelcome(old);
});

// ---- rooms ----

// The open room is in the URL as #/<room>, so a room can be linked to.
function roomFromHash() {
  if (!location.hash.startsWith('#/')) return null;
  let name;
  try {
    name = decodeURIComponent(location.hash.slice(2));
  } catch {
    return null; // a malformed escape such as #/%
  }
  return name && !validateRoom(name) ? name : null;
}

function saveRooms() {
  storage.set(KEY_ROOMS, [...rooms.keys()]);
}

function joinRoom(name) {
  if (rooms.has(name)) return rooms.get(name);
  const r = newRoom(name);
  rooms.set(name, r);
  saveRooms();
  renderRoomList();
  client.join(name, { history: HISTORY_PAGE }).catch((err) => {
    if (['left', 'closed', CODE_UNAUTHORIZED].includes(err.code) || rooms.get(name) !== r) return;
    dropRoom(name);
    els.joinError.textContent = `Could not join #${name}: ${err.message}`;
  });
  return r;
}

function dropRoom(name) {
  rooms.delete(name);
  saveRooms();
  if (active === name) selectRoom(rooms.keys().next().value ?? null);
  else renderRoomList();
}

function leaveRoom(name) {
  if (!rooms.has(name)) return;
  client.leave(name);
  dropRoom(name);
  announce(`You left #${name}`);
}

function onLeftByServer({ room, error }) {
  if (!error || !rooms.has(room)) return;
  dropRoom(room);
  els.joinError.textContent = `Removed from #${room}: ${error.message}`;
}

function selectRoom(name) {
  const prev = rooms.get(active);
  if (prev && prev.name !== name) {
    prev.stick = isAtBottom();
    prev.scrollTop = els.scroller.scrollTop;
    prev.firstUnread = null;
  }
  active = name && rooms.has(name) ? name : null;
  const r = rooms.get(active);
  if (r) {
    r.unread = 0;
    history.replaceState(null, '', `#/${encodeURIComponent(r.name)}`);
  } else {
    history.replaceState(null, '', location.pathname + location.search);
  }
  els.empty.hidden = !!r;
  els.timeline.hidden = !r;
  els.composer.hidden = !r;
  els.leaveButton.hidden = !r;
  closeMembers();
  renderHeader();
  renderRoomList();
  renderTimeline();
  if (r && !r.stick) els.scroller.scrollTop = r.scrollTop;
  const placeholder = r ? `Message #${r.name}` : 'Message';
  els.input.placeholder = placeholder;
  els.composerLabel.textContent = placeholder;
  updateTitle();
}

els.roomList.addEventListener('click', (e) => {
  const btn = e.target.closest('[data-room]');
  if (!btn) return;
  selectRoom(btn.dataset.room);
  if (narrow.matches) closeDrawer(false);
  focusComposer();
});

els.joinForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const name = els.joinInput.value.trim().replace(/^#/, '');
  const bad = validateRoom(name);
  if (bad) {
    els.joinError.textContent = bad[0].toUpperCase() + bad.slice(1) + '.';
    els.joinInput.setAttribute('aria-invalid', 'true');
    return;
  }
  els.joinInput.removeAttribute('aria-invalid');
  els.joinError.textContent = '';
  els.joinInput.value = '';
  joinRoom(name);
  selectRoom(name);
  if (narrow.matches) closeDrawer(false);
  focusComposer();
});

els.leaveButton.addEventListener('click', () => {
  if (active) leaveRoom(active);
  (active ? els.input : els.joinInput).focus();
});

addEventListener('hashchange', () => {
  const name = roomFromHash();
  if (!client || !name || name === active) return;
  joinRoom(name);
  selectRoom(name);
});

// ---- model updates from the client ----

function onJoined({ room, history, truncated, resumed, more, reset }) {
  const r = rooms.get(room);
  if (!r) return;
  r.joined = true;
  if (!resumed) {
    r.items = [];
    r.seqs.clear();
    if (reset) {
      r.items.push({ kind: 'notice', text: 'The server lost this room\'s history; showing what it holds now.', ts: new Date() });
    }
    for (const m of history) {
      r.items.push({ kind: 'msg', m });
      r.seqs.add(m.seq);
      settlePending(r, m);
    }
    // The server's page may hold fewer than asked for (more: older ones did
    // not fit its byte budget); a full page may have older ones too.
    r.more = more || history.length >= HISTORY_PAGE;
    if (room === active) renderTimeline(true);
  } else {
    if (truncated) addItem(r, { kind: 'notice', text: 'Some messages were missed while you were away.', ts: new Date() });
    for (const m of history) receive(r, m);
  }
  if (room === active) renderHeader();
}

function onMessage(m) {
  const r = rooms.get(m.room);
  if (r) receive(r, m);
}

// receive adds a new message to its room, replacing the pending send it
// confirms, counting it as unread when the room is not in view.
function receive(r, m) {
  if (r.seqs.has(m.seq)) return;
  settlePending(r, m);
  const inView = r.name === active && !document.hidden;
  if (!m.own && !inView) {
    r.unread++;
    r.firstUnread ??= m.seq;
    renderRoomList();
    updateTitle();
  }
  addItem(r, { kind: 'msg', m });
  if (!m.own && r.name === active) announce(`${m.user}: ${m.text.length > 140 ? m.text.slice(0, 140) + '…' : m.text}`);
}

// dropPendingNode takes a settled send's bubble off the page: at once, or,
// while the open room's new messages wait to be shown, together with them
// (flushItems), so that the message does not vanish for a frame.
function dropPendingNode(r, ref) {
  if (r.name !== active || queued?.r === r) return;
  els.pending.querySelector(`[data-ref="${CSS.escape(ref)}"]`)?.remove();
}

function settlePending(r, m) {
  if (!m.own || !m.ref || !r.pending.has(m.ref)) return;
  r.pending.delete(m.ref);
  dropPendingNode(r, m.ref);
}

function onPresence({ room, users, count, joined, left, snapshot }) {
  const r = rooms.get(room);
  if (!r) return;
  r.presence = { users, count };
  if (!snapshot) {
    const j = joined.filter((u) => u !== me);
    const l = left.filter((u) => u !== me);
    const now = new Date();
    if (j.length) addItem(r, { kind: 'notice', text: `${listNames(j)} joined`, ts: now, tone: 'join' });
    if (l.length) addItem(r, { kind: 'notice', text: `${listNames(l)} left`, ts: now, tone: 'leave' });
  }
  if (room === active) renderHeader();
}

function listNames(names) {
  if (names.length <= 3) return new Intl.ListFormat(undefined, { type: 'conjunction' }).format(names);
  return `${names.slice(0, 2).join(', ')} and ${names.length - 2} others`;
}

// addItem appends an item to a room's timeline and, for the open room,
// queues it for the page (flushItems).
function addItem(r, item) {
  const prev = r.items.at(-1);
  r.items.push(item);
  if (item.kind === 'msg') r.seqs.add(item.m.seq);
  if (r.name !== active) {
    if (r.items.length > MAX_ITEMS + TRIM_SLACK) trimRoom(r);
    return;
  }
  if (!queued) {
    const q = { r, prev, items: [] };
    // Once per frame, or soon in a tab that draws no frames.
    q.frame = requestAnimationFrame(() => flushItems(q));
    q.timer = setTimeout(() => flushItems(q), FLUSH_MS);
    queued = q;
  }
  queued.items.push(item);
}

// queued holds the items added to the open room since the page last showed
// them: a burst of messages is laid out once, not once per message.
let queued = null;
const FLUSH_MS = 100;

// flushItems shows the queued items at the end of the page, keeping the
// reader's place.
function flushItems(q) {
  if (!q || q !== queued) return;
  dropQueued();
  const { r } = q;
  if (r.name !== active || !rooms.has(r.name)) return;
  renderHistoryTop(r);
  const wasAtBottom = isAtBottom();
  const nodes = [];
  let prev = q.prev;
  for (const item of q.items) {
    nodes.push(...itemNodes(r, prev, item));
    prev = item;
  }
  els.messages.append(...nodes);
  for (const li of els.pending.querySelectorAll('li[data-ref]')) {
    if (!r.pending.has(li.dataset.ref)) li.remove(); // settled meanwhile
  }
  const msgs = q.items.filter((it) => it.kind === 'msg');
  if (wasAtBottom || msgs.some((it) => it.m.own)) {
    scrollToBottom();
  } else if (msgs.length) {
    r.newCount += msgs.length;
    renderPill(r);
  }
  if (r.items.length > MAX_ITEMS + TRIM_SLACK) trimRoom(r);
}

// dropQueued forgets the queued items and returns them: they are shown, or
// the timeline is drawn again from the room's items.
function dropQueued() {
  const q = queued;
  if (!q) return null;
  cancelAnimationFrame(q.frame);
  clearTimeout(q.timer);
  queued = null;
  return q;
}

// trimRoom drops a room's oldest items down to MAX_ITEMS, so a busy room
// does not grow without bound; they can be paged back. A room whose reader
// is scrolled up (or was, when they left it) waits, up to twice the bound.
function trimRoom(r) {
  const open = r.name === active;
  const reading = open ? !isAtBottom() : !r.stick;
  if (reading && r.items.length < 2 * MAX_ITEMS) return;
  const dropped = r.items.splice(0, r.items.length - MAX_ITEMS);
  for (const it of dropped) if (it.kind === 'msg') r.seqs.delete(it.m.seq);
  if (dropped.some((it) => it.kind === 'msg')) r.more = true;
  if (!open) {
    // The place saved when the reader left may be gone with the items:
    // the room opens at its newest messages.
    r.stick = true;
    return;
  }
  const { scrollHeight, scrollTop } = els.scroller;
  renderTimeline();
  if (!r.stick) els.scroller.scrollTop = scrollTop - (scrollHeight - els.scroller.scrollHeight);
}

// ---- sending ----

els.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = els.input.value;
  if (!text.trim() || !active) return;
  els.input.value = '';
  autosize();
  send(rooms.get(active), text);
});

els.input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey && !e.isComposing) {
    e.preventDefault();
    els.composer.requestSubmit();
  }
});

els.input.addEventListener('input', autosize);

function autosize() {
  const el = els.input;
  el.style.height = 'auto';
  el.style.height = `${Math.min(el.scrollHeight, 180)}px`;
}

// send sends text to room r and shows it as pending until its message
// arrives. A retry passes the failed send's ref: the server stores a send
// once per ref (PROTOCOL.md §6.3), so a message whose ack was lost is not
// stored twice.
function send(r, text, ref) {
  const promise = client.send(r.name, text, ref ? { ref } : {});
  const p = { ref: promise.ref, text, state: client.connected ? 'sending' : 'queued', error: null };
  r.pending.set(p.ref, p);
  if (r.name === active) {
    els.pending.append(pendingNode(p));
    scrollToBottom();
  }
  promise.then(
    (ack) => {
      if (r.pending.get(p.ref) !== p) return;
      if (r.seqs.has(ack.seq)) {
        // A retry of a message that was stored and shown already.
        r.pending.delete(p.ref);
        dropPendingNode(r, p.ref);
        return;
      }
      p.state = 'sent';
      refreshPending(r, p);
    },
    (err) => {
      if (r.pending.get(p.ref) !== p) return;
      p.state = 'failed';
      p.error = err;
      refreshPending(r, p);
      announce(`Message not sent. ${reasonText(err)}`);
    },
  );
}

function refreshPending(r, p) {
  if (r.name !== active) return;
  els.pending.querySelector(`[data-ref="${CSS.escape(p.ref)}"]`)?.replaceWith(pendingNode(p));
}

function reasonText(err) {
  const label = REASONS[err.code] || 'Not sent';
  const by = err.moderator ? ` (${err.moderator})` : '';
  return `${label}${by}: ${err.message}`;
}

els.pending.addEventListener('click', (e) => {
  const btn = e.target.closest('button[data-action]');
  if (!btn) return;
  const r = rooms.get(active);
  const li = btn.closest('[data-ref]');
  const p = r?.pending.get(li?.dataset.ref);
  if (!p) return;
  r.pending.delete(p.ref);
  li.remove();
  if (btn.dataset.action === 'retry') send(r, p.text, p.ref);
  focusComposer();
});

// ---- older history ----

async function loadOlder() {
  const r = rooms.get(active);
  if (!r || r.loadingOlder || !r.more || !r.joined || !client?.connected) return;
  const oldest = r.items.find((it) => it.kind === 'msg');
  if (!oldest) {
    r.more = false;
    renderHistoryTop(r);
    return;
  }
  r.loadingOlder = true;
  r.olderFailed = false;
  renderHistoryTop(r);
  try {
    const page = await client.history(r.name, oldest.m.seq, HISTORY_PAGE);
    // Trimmed meanwhile: the page would leave a gap before what is kept.
    if (r.items.find((it) => it.kind === 'msg') !== oldest) return;
    const older = page.messages.filter((m) => !r.seqs.has(m.seq));
    for (const m of older) r.seqs.add(m.seq);
    r.items.unshift(...older.map((m) => ({ kind: 'msg', m })));
    r.more = page.more;
    if (r.name === active) {
      const { scrollHeight, scrollTop } = els.scroller;
      renderTimeline();
      els.scroller.scrollTop = scrollTop + (els.scroller.scrollHeight - scrollHeight);
    }
  } catch {
    r.olderFailed = true;
  } finally {
    r.loadingOlder = false;
    if (r.name === active) renderHistoryTop(r);
  }
}

els.loadOlder.addEventListener('click', loadOlder);

// The skip link moves focus without changing the URL's room.
document.querySelector('.skip-link').addEventListener('click', (e) => {
  e.preventDefault();
  (els.composer.hidden ? els.joinInput : els.input).focus();
});

els.scroller.addEventListener('scroll', () => {
  const r = rooms.get(active);
  if (!r) return;
  r.stick = isAtBottom();
  if (r.stick && r.newCount) {
    r.newCount = 0;
    renderPill(r);
  }
  if (els.scroller.scrollTop < LOAD_OLDER_PX) loadOlder();
}, { passive: true });

// Keep the newest message in view when the viewport shrinks (a phone's
// keyboard opening) or the composer grows.
new ResizeObserver(() => {
  if (rooms.get(active)?.stick) scrollToBottom();
}).observe(els.scroller);

function isAtBottom() {
  const s = els.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < STICK_PX;
}

function scrollToBottom() {
  els.scroller.scrollTop = els.scroller.scrollHeight;
  const r = rooms.get(active);
  if (r) {
    r.stick = true;
    r.newCount = 0;
    renderPill(r);
  }
}

els.newPill.addEventListener('click', () => {
  scrollToBottom();
  focusComposer();
});

// ---- rendering ----

function renderTimeline(toBottom = false) {
  const q = dropQueued(); // drawn below from the room's items
  const r = rooms.get(active);
  els.messages.replaceChildren();
  els.pending.replaceChildren();
  if (!r) return;
  const nodes = [];
  let prev = null;
  for (const item of r.items) {
    nodes.push(...itemNodes(r, prev, item));
    prev = item;
  }
  els.messages.append(...nodes);
  els.pending.append(...[...r.pending.values()].map(pendingNode));
  renderHistoryTop(r);
  const msgs = q?.r === r ? q.items.filter((it) => it.kind === 'msg') : [];
  if (!toBottom && !r.stick && !msgs.some((it) => it.m.own)) r.newCount += msgs.length; // as flushItems counts them
  renderPill(r);
  if (toBottom || r.stick) scrollToBottom();
}

function itemDate(item) {
  if (item.kind === 'notice') return item.ts;
  const d = new Date(item.m.ts);
  return Number.isNaN(d.getTime()) ? new Date() : d;
}

// itemNodes returns the elements of item: a day divider when its day
// differs from prev's, the "new" divider, and the item itself.
function itemNodes(r, prev, item) {
  const out = [];
  const d = itemDate(item);
  const newDay = !prev || !sameDay(itemDate(prev), d);
  if (newDay) out.push(h('li', { class: 'divider day', attrs: { role: 'separator' } }, h('span', { text: dayLabel(d) })));
  const unreadMark = item.kind === 'msg' && item.m.seq === r.firstUnread;
  if (unreadMark) out.push(h('li', { class: 'divider unread', attrs: { role: 'separator' } }, h('span', { text: 'New' })));
  if (item.kind === 'notice') {
    out.push(h('li', { class: `notice ${item.tone || ''}`.trim() }, h('span', { text: item.text }), ' ',
      h('time', { dateTime: item.ts.toISOString(), text: timeLabel(item.ts) })));
    return out;
  }
  const m = item.m;
  const grouped = !newDay && !unreadMark && prev?.kind === 'msg' && prev.m.user === m.user &&
    d - itemDate(prev) < GROUP_MS;
  out.push(messageNode(m, d, grouped));
  return out;
}

function messageNode(m, d, grouped) {
  const li = h('li', { class: `msg${m.own ? ' own' : ''}${grouped ? ' grouped' : ''}`, dataset: { seq: m.seq, user: m.user } });
  if (!m.own) li.append(grouped ? h('span', { class: 'avatar-space', attrs: { 'aria-hidden': 'true' } }) : avatar(m.user));
  const body = h('div', { class: 'msg-body' });
  if (!m.own && !grouped) body.append(h('div', { class: `msg-user ${hueClass(m.user)}`, text: m.user }));
  else body.append(h('span', { class: 'visually-hidden', text: m.own ? 'You: ' : `${m.user}: ` }));
  body.append(h('div', { class: 'bubble' },
    h('p', { class: 'msg-text' }, linkify(m.text)),
    h('time', { class: 'msg-time', dateTime: m.ts, title: fullLabel(d), text: timeLabel(d) })));
  li.append(body);
  return li;
}

const PENDING_LABEL = { queued: 'Waiting for connection', sending: 'Sending', sent: 'Sent', failed: 'Not sent' };

function pendingNode(p) {
  const li = h('li', { class: `msg own pending ${p.state}`, dataset: { ref: p.ref } });
  const state = h('span', { class: 'msg-state', title: PENDING_LABEL[p.state] },
    icon(p.state === 'failed' ? 'alert' : p.state === 'sent' ? 'check' : 'clock', 'icon icon-xs'),
    h('span', { class: 'visually-hidden', text: PENDING_LABEL[p.state] }));
  const body = h('div', { class: 'msg-body' },
    h('span', { class: 'visually-hidden', text: 'You: ' }),
    h('div', { class: 'bubble' }, h('p', { class: 'msg-text' }, linkify(p.text)), state));
  if (p.state === 'failed') {
    body.append(h('div', { class: 'msg-error' },
      h('span', { class: 'msg-error-text', text: reasonText(p.error) }),
      h('span', { class: 'msg-error-actions' },
        h('button', { type: 'button', class: 'link-btn', dataset: { action: 'retry' }, text: 'Retry' }),
        h('button', { type: 'button', class: 'link-btn', dataset: { action: 'discard' }, text: 'Discard' }))));
  }
  li.append(body);
  return li;
}

function renderHistoryTop(r) {
  els.loadOlder.hidden = !(r.more && !r.loadingOlder);
  els.loadOlder.textContent = r.olderFailed ? 'Could not load earlier messages. Try again' : 'Load earlier messages';
  let text = '';
  if (r.loadingOlder) text = 'Loading earlier messages…';
  else if (!r.joined) text = 'Joining…';
  else if (!r.more) text = r.items.some((it) => it.kind === 'msg') ? `This is the beginning of #${r.name}.` : `No messages in #${r.name} yet. Say hello!`;
  els.historyStatus.textContent = text;
}

function renderPill(r) {
  els.newPill.hidden = !r.newCount;
  els.newPillText.textContent = r.newCount === 1 ? '1 new message' : `${r.newCount} new messages`;
}

function renderRoomList() {
  const items = [];
  for (const r of rooms.values()) {
    const current = r.name === active;
    items.push(h('li', {},
      h('button', {
        type: 'button', class: `room-item${r.unread ? ' has-unread' : ''}`, dataset: { room: r.name },
        attrs: current ? { 'aria-current': 'page' } : {},
      },
      icon('hash', 'icon room-hash'),
      h('span', { class: 'room-item-name', text: r.name }),
      r.unread ? h('span', { class: 'badge', text: r.unread > 99 ? '99+' : String(r.unread), attrs: { 'aria-label': `${r.unread} unread` } }) : null)));
  }
  els.roomList.replaceChildren(...items);
  els.menuBadge.hidden = ![...rooms.values()].some((r) => r.unread && r.name !== active);
}

function renderHeader() {
  const r = rooms.get(active);
  els.roomName.replaceChildren();
  if (!r) {
    els.roomName.textContent = 'chatstream';
    els.roomMeta.textContent = '';
    els.membersButton.hidden = true;
    return;
  }
  els.roomName.append(h('span', { class: 'room-name-hash', text: '#', attrs: { 'aria-hidden': 'true' } }), r.name);
  const p = r.presence;
  els.membersButton.hidden = !p;
  if (!r.joined) els.roomMeta.textContent = 'Joining…';
  else if (p) els.roomMeta.textContent = p.count === 1 ? 'Just you here' : `${p.count} people here`;
  else els.roomMeta.textContent = '';
  if (!p) return;
  els.membersCount.textContent = String(p.count);
  els.memberList.replaceChildren(...p.users.map((u) => h('li', { class: 'member' }, avatar(u, 'avatar-sm'),
    h('span', { class: 'member-name', text: u }), u === me ? h('span', { class: 'member-you', text: 'you' }) : null)));
  els.membersMore.textContent = p.count > p.users.length ? `and ${p.count - p.users.length} more` : '';
}

function renderStatus(s) {
  clearInterval(countdown);
  let state = s.state;
  let text;
  if (state === 'connected') text = 'Connected';
  else if (state === 'connecting' && s.attempt) [state, text] = ['reconnecting', 'Reconnecting…'];
  else if (state === 'connecting') text = 'Connecting…';
  else if (state === 'reconnecting') {
    const until = Date.now() + (s.retryInMs || 0);
    const tick = () => {
      const secs = Math.ceil((until - Date.now()) / 1000);
      els.statusText.textContent = secs > 0 ? `Reconnecting in ${secs} s` : 'Reconnecting…';
    };
    countdown = setInterval(tick, 250);
    tick();
  } else text = 'Offline';
  if (!navigator.onLine && state !== 'connected') [state, text] = ['offline', 'Offline: waiting for the network'];
  if (text) els.statusText.textContent = text;
  const was = els.status.dataset.state;
  els.status.dataset.state = state;
  // Announce changes of the connection, not every tick of the countdown.
  if (was !== state && (was === 'connected' || state === 'connected') && hadConnection) {
    announce(state === 'connected' ? 'Connected again.' : 'Connection lost. Reconnecting.');
  }
  if (state === 'connected') hadConnection = true;
  els.retryButton.hidden = s.state !== 'reconnecting' || !navigator.onLine;
  for (const r of rooms.values()) {
    let changed = false;
    for (const p of r.pending.values()) {
      const want = s.state === 'connected' ? 'sending' : 'queued';
      if ((p.state === 'queued' || p.state === 'sending') && p.state !== want) {
        p.state = want;
        changed = true;
      }
    }
    if (changed && r.name === active) renderTimeline();
  }
}

els.retryButton.addEventListener('click', () => client?.reconnectNow());

function updateTitle() {
  let unread = 0;
  for (const r of rooms.values()) unread += r.unread;
  document.title = `${unread ? `(${unread}) ` : ''}${active ? `#${active} · ` : ''}chatstream`;
}

function announce(text) {
  els.announcer.append(h('p', { text }));
  while (els.announcer.childElementCount > MAX_ANNOUNCEMENTS) els.announcer.firstElementChild.remove();
}

function focusComposer() {
  if (!coarsePointer.matches && active) els.input.focus();
}

// ---- members popover ----

function closeMembers() {
  els.members.hidden = true;
  els.membersButton.setAttribute('aria-expanded', 'false');
}

els.membersButton.addEventListener('click', (e) => {
  e.stopPropagation();
  const open = els.members.hidden;
  els.members.hidden = !open;
  els.membersButton.setAttribute('aria-expanded', String(open));
});

document.addEventListener('click', (e) => {
  if (!els.members.hidden && !els.members.contains(e.target)) closeMembers();
});

// ---- narrow screens: the room list is a drawer ----

function openDrawer() {
  document.body.classList.add('drawer-open');
  els.menuButton.setAttribute('aria-expanded', 'true');
  els.backdrop.hidden = false;
  els.main.inert = true;
  (els.roomList.querySelector('[aria-current]') || els.joinInput).focus();
}

function closeDrawer(restoreFocus = true) {
  if (!document.body.classList.contains('drawer-open')) return;
  document.body.classList.remove('drawer-open');
  els.menuButton.setAttribute('aria-expanded', 'false');
  els.backdrop.hidden = true;
  els.main.inert = false;
  if (restoreFocus) els.menuButton.focus();
}

els.menuButton.addEventListener('click', openDrawer);
els.closeSidebar.addEventListener('click', () => closeDrawer());
els.backdrop.addEventListener('click', () => closeDrawer());
narrow.addEventListener('change', () => closeDrawer(false));

document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape') {
    if (!els.members.hidden) {
      closeMembers();
      els.membersButton.focus();
    } else {
      closeDrawer();
    }
    return;
  }
  // Alt+↑ / Alt+↓ switch rooms.
  if (e.altKey && (e.key === 'ArrowUp' || e.key === 'ArrowDown') && rooms.size > 1 && client) {
    e.preventDefault();
    const names = [...rooms.keys()];
    const i = names.indexOf(active);
    selectRoom(names[(i + (e.key === 'ArrowUp' ? -1 : 1) + names.length) % names.length]);
    focusComposer();
  }
});

// ---- page lifecycle ----

document.addEventListener('visibilitychange', () => {
  if (document.hidden || !client) return;
  client.reconnectNow();
  const r = rooms.get(active);
  if (r?.unread) {
    r.unread = 0;
    renderRoomList();
    updateTitle();
  }
});
addEventListener('online', () => {
  client?.reconnectNow();
  if (client) renderStatus(client.status);
});
addEventListener('offline', () => {
  if (client) renderStatus(client.status);
});

// boot reads the server's sign-in mode, then asks for a name (auth none)
// or signs in with a token (auth jwt).
async function boot() {
  try {
    const res = await fetch('config.json', { cache: 'no-store' });
    // A server older than protocol v1.1 has no config.json: it takes names.
    if (res.status === 404) config = { auth: 'none' };
    else if (!res.ok) throw new Error(`config.json answered ${res.status}`);
    else config = await res.json();
  } catch (err) {
    showSignedOut(`Cannot load the server's configuration (${err.message}). Reload the page to try again.`);
    return;
  }
  if (config.auth === 'jwt') {
    els.changeName.hidden = true;
    if (!config.tokenUrl) {
      showSignedOut('This server needs you to sign in, but it names no token URL (--token-url) to get a token from.');
      return;
    }
    start('');
    return;
  }
  const saved = storage.get(KEY_NAME, '');
  if (typeof saved === 'string' && !validateUser(saved)) start(saved);
  else showWelcome();
}

boot();
