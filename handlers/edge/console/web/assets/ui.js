// Page furniture: how an error, an empty list or a missing feature is
// said to people, in words that tell them what to do next.
import { el } from './format.js';

export function problemNotice(err, what = 'this') {
  if (err.name === 'AbortError') return null;
  const p = err;
  let text;
  switch (true) {
    case p.status === 0: text = p.detail; break;
    case p.missing: return unavailable(what);
    case p.status === 404: text = `Not found: there is no ${what} with this id in the accounts this key can see. Check the id, or sign in with the key of the account it belongs to.`; break;
    case p.status === 403: text = `This API key may not see ${what}: ${p.detail}. Ask for a key with that scope.`; break;
    case p.status === 401: text = 'The API key is unknown or was revoked. Sign in again with a valid key.'; break;
    case p.status === 400: text = `The server could not read this request: ${p.detail}`; break;
    case p.status === 429: text = `Too many requests for this account just now. Wait ${p.retryAfter || 1} s and try again.`; break;
    case p.status === 503: text = `afterok cannot reach its database or NATS right now. Try again in ${p.retryAfter || 'a few'} s.`; break;
    default: text = `The server answered ${p.status}: ${p.detail || p.message}`;
  }
  return el('div', { class: 'notice error', role: 'alert' }, text,
    p.requestID ? el('div', { class: 'hint' }, 'Request id for support: ', el('code', {}, p.requestID)) : null);
}

export function unavailable(what) {
  return el('div', { class: 'notice warn' }, `${capitalize(what)} is not available on this server: its version of afterok does not have this part of the API yet.`);
}

export function empty(text, hint) {
  return el('div', { class: 'empty' }, el('p', {}, text), hint ? el('p', { class: 'hint' }, hint) : null);
}

export function capitalize(s) { return s.charAt(0).toUpperCase() + s.slice(1); }

export function loading() { return el('p', { class: 'muted', 'aria-busy': 'true' }, 'Loading…'); }

export function card(title, ...children) {
  return el('section', { class: 'card' }, title ? el('h2', {}, title) : null, ...children);
}
