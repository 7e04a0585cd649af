// dom.js: small DOM helpers of the chat page. Text from the network only
// ever reaches the page through textContent and createTextNode.

/**
 * h creates an element with properties and children. Properties named
 * "class", "text", "dataset", "attrs" and "on" are special; others are
 * assigned as element properties. Children are nodes or strings (as text).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'attrs') for (const [a, av] of Object.entries(v)) el.setAttribute(a, av);
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else el[k] = v;
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return el;
}

// A URL candidate: http(s)://, then anything up to white space or a
// character that cannot be part of a URL in running text.
const urlPattern = /\bhttps?:\/\/[^\s<>"'`]+/gi;

const trailingPunctuation = '.,;:!?*~';

function count(s, c) {
  let n = 0;
  for (const x of s) if (x === c) n++;
  return n;
}

// trimURL drops trailing punctuation that belongs to the sentence, and a
// closing bracket that has no opening one in the URL.
function trimURL(raw) {
  let s = raw;
  for (;;) {
    const last = s.at(-1);
    if (trailingPunctuation.includes(last)) s = s.slice(0, -1);
    else if (last === ')' && count(s, '(') < count(s, ')')) s = s.slice(0, -1);
    else if (last === ']' && count(s, '[') < count(s, ']')) s = s.slice(0, -1);
    else return s;
  }
}

/**
 * safeHref returns the normalised URL when s is an absolute http or https
 * URL with a host, and null otherwise.
 */
export function safeHref(s) {
  let u;
  try {
    u = new URL(s);
  } catch {
    return null;
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || !u.hostname) return null;
  return u.href;
}

/**
 * linkify returns text as a fragment of text nodes, with http and https
 * URLs as links that open in a new tab without access to this page.
 */
export function linkify(text) {
  const frag = document.createDocumentFragment();
  let at = 0;
  for (const m of text.matchAll(urlPattern)) {
    const raw = trimURL(m[0]);
    const href = safeHref(raw);
    if (!href) continue;
    if (m.index > at) frag.append(document.createTextNode(text.slice(at, m.index)));
    const a = document.createElement('a');
    a.href = href;
    a.textContent = raw;
    a.target = '_blank';
    a.rel = 'noopener noreferrer nofollow';
    frag.append(a);
    at = m.index + raw.length;
  }
  if (at < text.length) frag.append(document.createTextNode(text.slice(at)));
  return frag;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' });
const yearDayFormat = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'long', day: 'numeric' });

/** timeLabel formats the local time of day of d. */
export const timeLabel = (d) => timeFormat.format(d);

/** fullLabel formats d with its date, for tooltips. */
export const fullLabel = (d) => fullFormat.format(d);

/** sameDay reports whether a and b are on the same local calendar day. */
export function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

/** dayLabel names the local day of d: Today, Yesterday or a date. */
export function dayLabel(d, now = new Date()) {
  if (sameDay(d, now)) return 'Today';
  const y = new Date(now);
  y.setDate(y.getDate() - 1);
  if (sameDay(d, y)) return 'Yesterday';
  return d.getFullYear() === now.getFullYear() ? dayFormat.format(d) : yearDayFormat.format(d);
}

/** hueClass picks one of eight avatar colour classes for a name. */
export function hueClass(name) {
  let x = 2166136261;
  for (const ch of name) {
    x ^= ch.codePointAt(0);
    x = Math.imul(x, 16777619) >>> 0;
  }
  return `hue-${x % 8}`;
}

/** initial returns the first character of name, upper-cased, for avatars. */
export function initial(name) {
  const seg = globalThis.Intl?.Segmenter ? new Intl.Segmenter().segment(name)[Symbol.iterator]().next().value?.segment : [...name][0];
  return (seg || '?').toLocaleUpperCase();
}

/** avatar returns the decorative avatar element of a user. */
export function avatar(name, extra = '') {
  return h('span', { class: `avatar ${hueClass(name)} ${extra}`.trim(), text: initial(name), attrs: { 'aria-hidden': 'true' } });
}

/** icon returns an SVG icon from the page's sprite. */
export function icon(name, cls = 'icon') {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', cls);
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const use = document.createElementNS(ns, 'use');
  use.setAttribute('href', `#i-${name}`);
  svg.append(use);
  return svg;
}
