// One order: its counts per state, kept live from the account's event
// stream (SSE, filtered to the order), and its messages a page at a time.
import { call, query, stream } from '../api.js';
import { el, badge, displayState, stateInWords, failureInWords, time, link, facts, money, num } from '../format.js';
import { problemNotice, loading, card, empty } from '../ui.js';

const order = ['scheduled', 'accepted', 'queued', 'routed', 'submitted', 'delivered', 'failed', 'expired', 'canceled'];

export async function render(page, { id, params, signal, access }) {
  document.title = `Order ${id} · afterok console`;
  const path = '/v1/orders/' + encodeURIComponent(id);
  page.append(loading());
  let o;
  try {
    o = await call(path, { signal });
  } catch (err) {
    page.replaceChildren(el('h1', {}, 'Order ', el('span', { class: 'id' }, id)), problemNotice(err, 'order'));
    return;
  }
  const head = el('div', { class: 'headline' });
  const counts = el('div', { class: 'counts', id: 'counts' });
  const summary = el('div');
  const live = el('span', { class: 'live', id: 'live' });
  const draw = () => {
    head.replaceChildren(el('h1', {}, 'Order ', el('span', { class: 'id' }, o.order_id)), badge(o.state), el('span', { class: 'state-words' }, stateInWords(o.state)));
    const keys = [...order.filter((k) => k in o.counts), ...Object.keys(o.counts).filter((k) => !order.includes(k))];
    counts.replaceChildren(...keys.map((k) => el('a', { class: 'count', href: query('/console/orders/' + encodeURIComponent(o.order_id), { state: k }), title: 'list the ' + k + ' messages' },
      el('b', { 'data-state': k }, num(o.counts[k])), el('span', {}, k === 'failed' && o.counts.expired ? 'failed (incl. expired)' : k))));
    summary.replaceChildren(facts([
      ['Account', link.account(o.account_id)],
      ['Messages', num(o.message_count)],
      ['Price', money(o.price)], ['Charged', money(o.charged)], ['Refunded', money(o.refunded)],
      ['Accepted', time(o.timestamps.accepted_at)], ['Started', time(o.timestamps.started_at)],
      ['Completed', time(o.timestamps.completed_at)], o.send_at ? ['Send at', time(o.send_at)] : null,
      ['Expires', time(o.expires_at)],
      o.metadata ? ['Metadata', el('code', {}, JSON.stringify(o.metadata))] : null,
    ]));
  };
  draw();
  const list = el('div', {}, loading());
  page.replaceChildren(head, el('div', { class: 'grid' }, card('Counts', counts, live), card('Summary', summary)),
    redriveCard(o, access), list);

  // Live counts: any event of this order means its read model moved; fetch
  // the summary again, at most a few times a second.
  if (o.state !== 'completed' && access.has('events:read')) {
    let timer = 0;
    const refresh = () => {
      if (timer) return;
      timer = setTimeout(async () => {
        timer = 0;
        try { o = await call(path, { signal }); draw(); } catch { /* the next event tries again */ }
      }, 250);
    };
    stream(query('/v1/events/stream', { order_id: o.order_id, account_id: o.account_id }), {
      signal,
      onEvent: () => { refresh(); setTimeout(refresh, 1200); /* the read model trails the event by a moment */ },
      onState: (s) => { live.className = 'live' + (s === 'live' ? ' on' : ''); live.textContent = s === 'live' ? 'live: counts update as events arrive' : 'reconnecting…'; },
    }).catch((err) => { live.textContent = 'not live: ' + err.message; });
  } else if (o.state !== 'completed') {
    live.textContent = 'Counts are not live: that needs the events:read scope.';
  }
  await messages(list, o, params, signal);
}

// redriveCard offers to send the order's failed messages again, as a new
// order, where it has any, the server has the endpoint and the key holds
// messages:write.
function redriveCard(o, access) {
  if (!o.counts.failed || !access.can('POST', '/v1/orders/{id}/redrive') || !access.has('messages:write')) return null;
  const path = '/v1/orders/' + encodeURIComponent(o.order_id) + '/redrive';
  const reason = el('textarea', { id: 'redrive-reason', name: 'reason', required: true, placeholder: 'Why? It is recorded in each message\'s history with your key.' });
  const out = el('div', { role: 'status', id: 'redrive-result' });
  const button = el('button', { type: 'submit' }, 'Re-drive the failed messages');
  const form = el('form', {}, el('label', { for: 'redrive-reason' }, 'Reason'), reason, el('div', {}, button), out);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    button.disabled = true;
    try {
      const res = await call(path, { method: 'POST', body: { reason: reason.value.trim() || undefined } });
      out.replaceChildren(el('div', { class: 'notice ok' }, `Re-driven ${num(res.redriven)} message${res.redriven === 1 ? '' : 's'} as `,
        ...res.order_ids.flatMap((id, i) => (i ? [', ', link.order(id)] : [link.order(id)])), '.'));
    } catch (err) {
      button.disabled = false;
      out.replaceChildren(err.status === 409 ? el('div', { class: 'notice warn' }, err.detail || 'Nothing left to re-drive.') : problemNotice(err, 'the re-drive'));
    }
  });
  return el('section', { class: 'card actions', id: 'redrive' }, el('h2', {}, 'Re-drive'),
    el('p', { class: 'hint' }, 'Sends every failed message not yet re-driven again, as a new order, priced anew; these stay failed.'), form);
}

async function messages(list, o, params, signal) {
  const state = params.get('state') || '';
  const cursor = params.get('cursor') || '';
  let res;
  try {
    res = await call(query(`/v1/orders/${encodeURIComponent(o.order_id)}/messages`, { state, cursor, limit: 50 }), { signal });
  } catch (err) {
    list.replaceChildren(problemNotice(err, 'the order\'s messages'));
    return;
  }
  const base = '/console/orders/' + encodeURIComponent(o.order_id);
  const title = el('h2', {}, 'Messages ', el('span', { class: 'sub' }, state ? [`in state ${state} · `, el('a', { href: base }, 'show all')] : 'in request order'));
  if (!res.messages.length) {
    list.replaceChildren(card(null, title, empty(state ? `No message of this order is ${state}.` : 'This order has no messages.')));
    return;
  }
  const rows = res.messages.map((m) => {
    const st = displayState(m);
    return el('tr', {}, el('td', { class: 'num' }, m.index), el('td', {}, badge(st, stateInWords(st))), el('td', { class: 'mono' }, m.to),
      el('td', {}, link.message(m.message_id)), el('td', { class: 'hide-narrow' }, m.route ? m.route.provider : '—'),
      el('td', { class: 'hide-narrow' }, m.failure ? failureInWords(m.failure.code) : ''));
  });
  const pager = el('div', { class: 'pager' });
  if (cursor) pager.append(el('a', { class: 'button secondary', href: query(base, { state }) }, '← First page'));
  if (res.next_cursor) pager.append(el('a', { class: 'button secondary', href: query(base, { state, cursor: res.next_cursor }) }, 'Next page →'));
  list.replaceChildren(card(null, title, el('div', { class: 'table-wrap' }, el('table', {},
    el('thead', {}, el('tr', {}, el('th', { class: 'num' }, '#'), el('th', {}, 'State'), el('th', {}, 'To'), el('th', {}, 'Message'),
      el('th', { class: 'hide-narrow' }, 'Provider'), el('th', { class: 'hide-narrow' }, 'Failure'))),
    el('tbody', {}, rows))), pager));
}
