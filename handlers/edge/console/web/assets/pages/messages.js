// Messages search: every filter of GET /v1/messages, newest first, a page
// at a time. The filters live in the address, so a search is a link.
import { call, query } from '../api.js';
import { el, badge, displayState, stateInWords, failureInWords, time, link, toLocalInput, fromLocalInput } from '../format.js';
import { problemNotice, empty, loading, card } from '../ui.js';

const states = ['scheduled', 'accepted', 'queued', 'routed', 'submitted', 'delivered', 'failed', 'expired', 'canceled'];

export async function render(page, { params, signal, access, navigate }) {
  document.title = 'Messages · afterok console';
  const f = Object.fromEntries(['to', 'state', 'order_id', 'since', 'until', 'account_id', 'cursor', 'limit'].map((k) => [k, params.get(k) || '']));
  const input = (name, label, attrs = {}) => el('div', {}, el('label', { for: 'f-' + name }, label),
    el('input', { id: 'f-' + name, name, value: f[name], ...attrs }));
  const form = el('form', { class: 'filters', role: 'search' },
    input('to', 'Phone number', { type: 'search', inputmode: 'tel', placeholder: '+4915112345678', autocomplete: 'off' }),
    el('div', {}, el('label', { for: 'f-state' }, 'State'),
      el('select', { id: 'f-state', name: 'state' }, el('option', { value: '' }, 'any state'),
        states.map((s) => el('option', { value: s, selected: f.state === s }, s)))),
    input('order_id', 'Order id', { placeholder: '01…', spellcheck: 'false' }),
    el('div', {}, el('label', { for: 'f-since' }, 'Accepted from'), el('input', { id: 'f-since', name: 'since', type: 'datetime-local', step: 1, value: toLocalInput(f.since) })),
    el('div', {}, el('label', { for: 'f-until' }, 'Accepted before'), el('input', { id: 'f-until', name: 'until', type: 'datetime-local', step: 1, value: toLocalInput(f.until) })),
    access.has('admin') ? input('account_id', 'Account id (admin)', { placeholder: 'your own', spellcheck: 'false' }) : null,
    el('div', {}, el('button', { type: 'submit' }, 'Search')),
    el('div', {}, el('a', { href: '/console/messages', class: 'button secondary' }, 'Clear')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const d = new FormData(form);
    navigate(query('/console/messages', { to: d.get('to').trim(), state: d.get('state'), order_id: d.get('order_id').trim(),
      since: fromLocalInput(d.get('since')), until: fromLocalInput(d.get('until')), account_id: (d.get('account_id') || '').trim() }));
  });
  const results = el('div', {}, loading());
  page.append(el('h1', {}, 'Messages ', el('span', { class: 'sub' }, 'newest first')), card(null, form), results);
  if (!f.to && !f.state && !f.order_id && !f.since && !f.until && !f.cursor) form.querySelector('input[name="to"]').focus();

  let res;
  try {
    res = await call(query('/v1/messages', { to: f.to, state: f.state, order_id: f.order_id, since: f.since, until: f.until,
      account_id: f.account_id, cursor: f.cursor, limit: f.limit || 50 }), { signal });
  } catch (err) {
    results.replaceChildren(problemNotice(err, 'messages'));
    return;
  }
  const filtered = f.to || f.state || f.order_id || f.since || f.until;
  if (!res.messages.length) {
    results.replaceChildren(card(null, empty(filtered ? 'No message matches this search.' : 'This account has no messages yet.',
      filtered ? 'Check the number (with its country code, e.g. +49…), widen the time range or clear a filter.' : 'Submit an order with POST /v1/orders and it shows here.')));
    return;
  }
  const rows = res.messages.map((m) => {
    const st = displayState(m);
    return el('tr', {},
      el('td', {}, badge(st, stateInWords(st))),
      el('td', { class: 'mono' }, m.to),
      el('td', {}, link.message(m.message_id)),
      el('td', { class: 'hide-narrow' }, link.order(m.order_id)),
      el('td', {}, time(m.timestamps.accepted_at)),
      el('td', { class: 'num hide-narrow' }, m.attempt || '—'),
      el('td', { class: 'hide-narrow' }, m.route ? m.route.provider : '—'),
      el('td', { class: 'hide-narrow' }, m.failure ? failureInWords(m.failure.code) : ''));
  });
  const back = params.get('back') ? params.get('back').split(',') : [];
  const here = new URLSearchParams(params);
  const pager = el('div', { class: 'pager' });
  if (f.cursor) {
    const prev = new URLSearchParams(here);
    const before = back.slice(0, -1);
    if (back.length && back[back.length - 1]) prev.set('cursor', back[back.length - 1]); else prev.delete('cursor');
    if (before.length) prev.set('back', before.join(',')); else prev.delete('back');
    pager.append(el('a', { class: 'button secondary', href: '/console/messages?' + prev }, '← Newer'));
  }
  if (res.next_cursor) {
    const next = new URLSearchParams(here);
    next.set('cursor', res.next_cursor);
    next.set('back', [...back, f.cursor].join(','));
    pager.append(el('a', { class: 'button secondary', href: '/console/messages?' + next, rel: 'next' }, 'Older →'));
  }
  pager.append(el('span', { class: 'muted' }, `${res.messages.length} shown${res.next_cursor ? ', more older ones' : ''}`));
  results.replaceChildren(card(null, el('div', { class: 'table-wrap' }, el('table', { id: 'results' },
    el('thead', {}, el('tr', {}, ['State', 'To', 'Message', 'Order', 'Accepted', 'Attempt', 'Provider', 'Failure'].map((h, i) =>
      el('th', { class: [3, 5, 6, 7].includes(i) ? 'hide-narrow' + (i === 5 ? ' num' : '') : '' }, h)))),
    el('tbody', {}, rows))), pager));
}
