// The account's orders, newest first (GET /v1/orders, where the server
// has it), and a box to open one by id.
import { call, query } from '../api.js';
import { el, badge, time, link, money, num } from '../format.js';
import { problemNotice, loading, card, empty, unavailable } from '../ui.js';

export async function render(page, { params, signal, access, navigate }) {
  document.title = 'Orders · afterok console';
  const idInput = el('input', { id: 'order-id', name: 'order_id', placeholder: '01…', spellcheck: 'false', class: 'mono' });
  const open = el('form', { class: 'filters' }, el('div', {}, el('label', { for: 'order-id' }, 'Open an order by id'), idInput),
    el('div', {}, el('button', { type: 'submit' }, 'Open')));
  open.addEventListener('submit', (e) => {
    e.preventDefault();
    if (idInput.value.trim()) navigate('/console/orders/' + encodeURIComponent(idInput.value.trim()));
  });
  const list = el('div', {}, loading());
  page.append(el('h1', {}, 'Orders'), card(null, open), list);
  if (!access.can('GET', '/v1/orders')) {
    list.replaceChildren(unavailable('the list of orders'));
    return;
  }
  const state = params.get('state') || '';
  const cursor = params.get('cursor') || '';
  let res;
  try {
    res = await call(query('/v1/orders', { state, cursor, limit: 50 }), { signal });
  } catch (err) {
    list.replaceChildren(problemNotice(err, 'the list of orders'));
    return;
  }
  if (!res.orders.length) {
    list.replaceChildren(card(null, empty('No orders yet.', 'Submit one with POST /v1/orders.')));
    return;
  }
  const pager = el('div', { class: 'pager' });
  if (cursor) pager.append(el('a', { class: 'button secondary', href: query('/console/orders', { state }) }, '← Newest'));
  if (res.next_cursor) pager.append(el('a', { class: 'button secondary', href: query('/console/orders', { state, cursor: res.next_cursor }) }, 'Older →'));
  list.replaceChildren(card(null, el('div', { class: 'table-wrap' }, el('table', {},
    el('thead', {}, el('tr', {}, ['State', 'Order', 'Messages', 'Delivered', 'Failed', 'Price', 'Accepted'].map((h) => el('th', {}, h)))),
    el('tbody', {}, res.orders.map((o) => el('tr', {}, el('td', {}, badge(o.state)), el('td', {}, link.order(o.order_id)),
      el('td', { class: 'num' }, num(o.message_count)), el('td', { class: 'num' }, num(o.counts.delivered)),
      el('td', { class: 'num' }, num(o.counts.failed)), el('td', {}, money(o.price)), el('td', {}, time(o.timestamps.accepted_at))))))), pager));
}
