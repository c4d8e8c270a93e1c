// An account: what it can spend (balance), what is held for messages not
// yet final (reserved), its totals, and its money events.
import { call, query } from '../api.js';
import { el, time, facts, money, link, eventInWords } from '../format.js';
import { problemNotice, loading, card, empty } from '../ui.js';

const moneyTypes = ['AccountCredited', 'BalanceReserved', 'BalanceCharged', 'BalanceReleased'];

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
  const after = params.get('after') || '';
  let res;
  try {
    res = await call(query('/v1/events', { type: moneyTypes.join(','), after, limit: 100, account_id: mine ? '' : accountID }), { signal });
  } catch (err) {
    events.replaceChildren(card('Money events', problemNotice(err, 'the money events')));
    return;
  }
  const base = mine ? '/console/account' : '/console/accounts/' + encodeURIComponent(accountID);
  if (!res.events.length) {
    events.replaceChildren(card('Money events', empty(after ? 'No later money events.' : 'No money events yet.')));
    return;
  }
  const rows = res.events.map((e) => {
    const d = e.data || {};
    const amount = d.amount || d.price || d.credit || null;
    const subject = d.order_id ? link.order(d.order_id) : d.message_id ? link.message(d.message_id) : (d.reason || '');
    return el('tr', {}, el('td', {}, time(e.recorded_at)), el('td', {}, eventInWords(e.type)),
      el('td', { class: 'num' }, amount && amount.amount_micros !== undefined ? money(amount) : moneyOf(d)),
      el('td', { class: 'num hide-narrow' }, d.balance_after !== undefined ? money({ amount_micros: d.balance_after, currency: a.currency }) : '—'),
      el('td', {}, subject));
  });
  const pager = el('div', { class: 'pager' });
  if (after) pager.append(el('a', { class: 'button secondary', href: base }, '← From the first'));
  if (res.events.length === 100) pager.append(el('a', { class: 'button secondary', href: query(base, { after: res.next_after }) }, 'Later events →'));
  events.replaceChildren(card('Money events', el('p', { class: 'hint' }, 'In the order they were recorded, oldest first.'),
    el('div', { class: 'table-wrap' }, el('table', { id: 'money-events' }, el('thead', {}, el('tr', {}, ['When', 'What', 'Amount', 'Balance after', 'For'].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows))), pager));
}

// moneyOf finds the amount in an event whose field is not one of the usual names.
function moneyOf(d) {
  for (const v of Object.values(d)) if (v && typeof v === 'object' && 'amount_micros' in v) return money(v);
  return '—';
}
