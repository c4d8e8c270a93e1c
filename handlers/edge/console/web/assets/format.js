// Words, times and small DOM builders shared by the pages. Text goes in
// as text nodes, never as HTML, so nothing the API returns can run.

// el builds an element: el('a', {href: '/x', class: 'id'}, 'text', child…).
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, '');
    else e.setAttribute(k, String(v));
  }
  append(e, children);
  return e;
}

function append(e, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const stateWords = {
  scheduled: 'Waiting for its send time',
  accepted: 'Accepted, waiting to be queued',
  queued: 'Queued, waiting for a worker',
  routed: 'A provider was chosen; about to be sent',
  submitted: 'Handed to the provider, waiting for its delivery receipt',
  delivered: 'Delivered: the provider confirmed it reached the phone',
  failed: 'Failed: it will not be delivered',
  expired: 'Expired: its validity ran out before it was delivered',
  canceled: 'Canceled before it was sent, and refunded',
  executing: 'Its messages are on their way',
  completed: 'Every message reached a final state',
};

// displayState is the state people should see: an expired message is
// failed with code expired, and its badge says expired.
export function displayState(m) {
  if (m.state === 'failed' && m.failure && m.failure.code === 'expired') return 'expired';
  return m.state;
}

export function stateInWords(state) { return stateWords[state] || state; }

export function badge(state, title) {
  return el('span', { class: 'badge ' + (stateWords[state] || ['valid', 'broken', 'succeeded', 'exhausted', 'enabled', 'disabled', 'retrying'].includes(state) ? state : 'unknown'),
    title: title || stateWords[state] || state }, state);
}

const failureWords = {
  invalid_destination: 'The number cannot receive SMS',
  undeliverable: 'The network could not deliver it to the phone',
  rejected: 'The provider refused the content or the sender',
  provider_unavailable: 'The provider was unavailable (server error or refused connection)',
  timeout: 'The provider did not answer in time',
  throttled: 'The provider asked us to slow down',
  delivery_failed_temporarily: 'Delivery failed for now; it may work on a later attempt',
  no_route: 'No route serves this destination',
  routes_exhausted: 'Every provider for this destination failed it',
  attempts_exhausted: 'Every allowed attempt was used',
  expired: 'Its validity ran out before it was delivered',
  dead_lettered: 'Its job could not be processed and was set aside',
  canceled: 'Canceled on request',
};

export function failureInWords(code) { return failureWords[code] || code; }

const stageWords = { routing: 'while routing', submit: 'when sent to the provider', delivery: 'in the delivery receipt', expiry: 'at expiry' };
export function stageInWords(stage) { return stageWords[stage] || stage; }

const eventWords = {
  MessageAccepted: 'Accepted', MessageScheduled: 'Scheduled', MessageQueued: 'Queued for a worker',
  MessageRouted: 'Routed', MessageSubmitted: 'Submitted to the provider', MessageDelivered: 'Delivered',
  MessageFailed: 'Failed', MessageRetried: 'Will be retried', MessageCanceled: 'Canceled',
  MessageRedriven: 'Re-driven', OrderAccepted: 'Order accepted', OrderCompleted: 'Order completed',
  AccountOpened: 'Account opened', AccountCredited: 'Credit added', BalanceCredited: 'Credit added', BalanceReserved: 'Price reserved',
  BalanceCharged: 'Charged', BalanceReleased: 'Refunded', APIKeyIssued: 'API key issued', APIKeyRevoked: 'API key revoked',
};
export function eventInWords(type) { return eventWords[type] || type.replace(/([a-z])([A-Z])/g, '$1 $2'); }

// Events that record a person's (or a script's) action rather than the
// pipeline's work; each says who took it.
const actions = new Set(['MessageCanceled', 'MessageRedriven', 'BalanceCredited', 'AccountCredited', 'AccountOpened',
  'APIKeyIssued', 'APIKeyRevoked']);

// actor says who took the action an event records: the API key's id (in
// the event, or in its metadata), or the command line's "cli:<user>".
// Nothing for the pipeline's own events.
export function actor(e) {
  if (!actions.has(e.type)) return null;
  const who = (e.data && e.data.actor) || (e.metadata && e.metadata.actor) || '';
  if (!who) return null;
  if (who === 'cli' || who.startsWith('cli:')) return el('span', { class: 'step-actor' }, 'by the command line ', el('code', {}, who));
  return el('span', { class: 'step-actor' }, 'by key ', el('code', { class: 'actor' }, who));
}

// The viewer's zone, named in every time shown (a time pasted into a
// ticket says which zone it is in), to the millisecond: the steps of a
// message are often milliseconds apart.
const local = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric',
  hour: 'numeric', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3, timeZoneName: 'short' });

// time shows a moment in the viewer's time zone, with UTC on hover.
export function time(iso) {
  if (!iso) return el('span', { class: 'muted' }, '—');
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return el('span', {}, iso);
  return el('time', { datetime: iso, title: 'UTC ' + iso.replace('T', ' ').replace('Z', '') }, local.format(d));
}

// duration says how long ms milliseconds are, in the largest useful units.
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  const neg = ms < 0;
  ms = Math.abs(ms);
  let s;
  if (ms < 1000) s = `${Math.round(ms)} ms`;
  else if (ms < 60_000) s = `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  else if (ms < 3_600_000) s = `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
  else if (ms < 86_400_000) s = `${Math.floor(ms / 3_600_000)} h ${Math.round((ms % 3_600_000) / 60_000)} min`;
  else s = `${Math.floor(ms / 86_400_000)} d ${Math.round((ms % 86_400_000) / 3_600_000)} h`;
  return neg ? '−' + s : s;
}

export function since(fromIso, toIso) {
  return new Date(toIso).getTime() - new Date(fromIso).getTime();
}

export function money(m) {
  if (!m) return '—';
  const v = m.amount_micros / 1e6;
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency: m.currency, minimumFractionDigits: 2, maximumFractionDigits: 6 }).format(v);
  } catch {
    return `${v} ${m.currency}`;
  }
}

export function num(n) { return n === undefined || n === null ? '—' : new Intl.NumberFormat().format(n); }

// Links to the console's own pages, one per kind of id.
export const link = {
  message: (id) => el('a', { href: '/console/messages/' + encodeURIComponent(id), class: 'id' }, id),
  order: (id) => el('a', { href: '/console/orders/' + encodeURIComponent(id), class: 'id' }, id),
  account: (id) => el('a', { href: '/console/accounts/' + encodeURIComponent(id), class: 'id' }, id),
  webhook: (id) => el('a', { href: '/console/webhooks/' + encodeURIComponent(id), class: 'id' }, id),
};

// facts is a definition list of [label, value] pairs, skipping empty ones.
export function facts(rows) {
  return el('dl', { class: 'facts' }, rows.filter((r) => r && r[1] !== undefined).map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

export function raw(value) {
  let text = value;
  if (typeof value !== 'string') text = JSON.stringify(value, null, 2);
  else { try { text = JSON.stringify(JSON.parse(value), null, 2); } catch { /* keep as sent */ } }
  return el('pre', { class: 'raw' }, text);
}

// The datetime-local inputs speak the viewer's local time; the API speaks
// RFC 3339. These convert both ways.
// With ms, the value keeps the milliseconds (for an input with step
// 0.001), so that a moment read from a link survives being shown again.
export function toLocalInput(iso, { ms = false } = {}) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const p = (n, w = 2) => String(n).padStart(w, '0');
  const s = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  return ms && d.getMilliseconds() ? `${s}.${p(d.getMilliseconds(), 3)}` : s;
}
export function fromLocalInput(v) {
  if (!v) return '';
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}
