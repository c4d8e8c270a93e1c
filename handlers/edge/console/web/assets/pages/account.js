// An account: what it can spend (balance), what is held for messages not
// yet final (reserved), its totals, and its money events.
import { call, query } from '../api.js';
import { el, time, facts, money, link, eventInWords, actor } from '../format.js';
import { problemNotice, loading, card, empty } from '../ui.js';

export async function render(page, { id, params, signal, access }) {
  document.title = 'Account · afterok console';
  page.append(loading());
  let own;
  try {
    own = await call('/v1/account', { signal });
  } catch (err) {
    page.replaceChildren(el('h1', {}, 'Account'), problemNotice(err, 'the account'));
    return;
  }
  const accountID = id || own.account_id;
  let a;
  try {
    a = await call('/v1/accounts/' + encodeURIComponent(accountID), { signal });
  } catch (err) {
    page.replaceChildren(el('h1', {}, 'Account ', el('span', { class: 'id' }, accountID)), problemNotice(err, 'account'));
    return;
  }
  const mine = accountID === own.account_id;
  page.replaceChildren(
    el('div', { class: 'headline' }, el('h1', {}, a.name, ' ', el('span', { class: 'sub' }, mine ? '(the account of this key)' : ''))),
    el('div', { class: 'grid' },
      card('Balance', el('div', { class: 'money', id: 'balance' }, money(a.balance)), el('p', { class: 'hint' }, 'What the account can still spend now.')),
      card('Reserved', el('div', { class: 'money', id: 'reserved' }, money(a.reserved)), el('p', { class: 'hint' }, 'Held for messages not yet delivered or failed; charged on delivery, given back on failure.')),
      card('Totals', facts([['Credited', money(a.credited)], ['Spent', money(a.spent)], ['Refunded', money(a.refunded)],
        ['Opened', time(a.opened_at)], ['Account id', link.account(a.account_id)],
        mine && own.allowed_countries && own.allowed_countries.length ? ['Allowed countries', own.allowed_countries.join(', ')] : null]))));
  const events = el('div', {}, loading());
  page.append(events);
  if (!access.has('events:read')) {
    events.replaceChildren(card('Money events', el('p', { class: 'hint' }, 'Listing them needs the events:read scope, which this key lacks.')));
    return;
  }
  // The account's own stream, newest first: what support asks about is
  // the recent part of a history that holds every message's money.
  const cursor = params.get('cursor') || '';
  let res;
  try {
    res = await call(query('/v1/accounts/' + encodeURIComponent(accountID) + '/events', { cursor, limit: 100 }), { signal });
  } catch (err) {
    events.replaceChildren(card('Money events', problemNotice(err, 'the money events')));
    return;
  }
  const base = mine ? '/console/account' : '/console/accounts/' + encodeURIComponent(accountID);
  if (!res.events.length) {
    events.replaceChildren(card('Money events', empty(cursor ? 'No older money events.' : 'No money events yet.')));
    return;
  }
  const rows = res.events.map((e) => {
    const d = e.data || {};
    const amount = d.amount || d.price || d.credit || null;
    const subject = d.order_id ? link.order(d.order_id) : d.message_id ? link.message(d.message_id) : (d.reason || '');
    return el('tr', {}, el('td', {}, time(e.recorded_at)), el('td', {}, eventInWords(e.type)),
      el('td', { class: 'num' }, amount && amount.amount_micros !== undefined ? money(amount) : moneyOf(d)),
      el('td', { class: 'num hide-narrow' }, d.balance_after !== undefined ? money({ amount_micros: d.balance_after, currency: a.currency }) : '—'),
      el('td', {}, subject, d.reason && subject !== d.reason ? ' · ' + d.reason : '', actor(e) ? [' ', actor(e)] : null));
  });
  const pager = el('div', { class: 'pager' });
  if (cursor) pager.append(el('a', { class: 'button secondary', href: base }, '← The newest'));
  if (res.next_cursor) pager.append(el('a', { class: 'button secondary', href: query(base, { cursor: res.next_cursor }) }, 'Older events →'));
  events.replaceChildren(card('Money events', el('p', { class: 'hint' }, 'The account\'s own history, the newest first: its money, and the API keys issued and revoked.'),
    el('div', { class: 'table-wrap' }, el('table', { id: 'money-events' }, el('thead', {}, el('tr', {}, ['When', 'What', 'Amount', 'Balance after', 'For'].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows))), pager));
}

// moneyOf finds the amount in an event whose field is not one of the usual names.
function moneyOf(d) {
  for (const v of Object.values(d)) if (v && typeof v === 'object' && 'amount_micros' in v) return money(v);
  return '—';
}
