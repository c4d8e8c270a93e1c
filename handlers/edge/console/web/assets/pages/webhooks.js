// Webhook endpoints: the list, one endpoint's delivery attempts, and a
// replay of its events. Servers without webhooks say so.
import { call, query } from '../api.js';
import { el, badge, time, link, facts, fromLocalInput, toLocalInput } from '../format.js';
import { problemNotice, loading, card, empty, unavailable } from '../ui.js';

export async function render(page, ctx) {
  document.title = 'Webhooks · afterok console';
  if (!ctx.access.can('GET', '/v1/webhooks')) {
    page.append(el('h1', {}, 'Webhooks'), unavailable('webhooks'));
    return;
  }
  if (ctx.id) return endpoint(page, ctx);
  page.append(el('h1', {}, 'Webhooks'), loading());
  let res;
  try {
    res = await call('/v1/webhooks', { signal: ctx.signal });
  } catch (err) {
    page.replaceChildren(el('h1', {}, 'Webhooks'), problemNotice(err, 'webhooks'));
    return;
  }
  const list = res.webhooks || [];
  page.replaceChildren(el('h1', {}, 'Webhooks'), list.length
    ? card(null, el('div', { class: 'table-wrap' }, el('table', {},
      el('thead', {}, el('tr', {}, ['Endpoint', 'URL', 'State', 'Events', 'Created'].map((h) => el('th', {}, h)))),
      el('tbody', {}, list.map((w) => el('tr', {}, el('td', {}, link.webhook(w.webhook_id)), el('td', { class: 'mono' }, w.url),
        el('td', {}, badge(w.enabled ? 'enabled' : 'disabled')), el('td', {}, (w.event_types || []).join(', ') || 'every event'),
        el('td', {}, time(w.created_at))))))))
    : card(null, empty('No webhook endpoints yet.', 'Create one with POST /v1/webhooks {"url": "https://…"}.')));
}

async function endpoint(page, { id, params, signal, access, navigate }) {
  const path = '/v1/webhooks/' + encodeURIComponent(id);
  page.append(loading());
  let w;
  try {
    w = await call(path, { signal });
  } catch (err) {
    page.replaceChildren(el('h1', {}, 'Webhook ', el('span', { class: 'id' }, id)), problemNotice(err, 'webhook endpoint'));
    return;
  }
  const outcome = params.get('outcome') || '';
  const attempts = el('div', {}, loading());
  page.replaceChildren(el('div', { class: 'headline' }, el('h1', {}, 'Webhook ', el('span', { class: 'id' }, w.webhook_id)), badge(w.enabled ? 'enabled' : 'disabled')),
    el('div', { class: 'grid' }, card('Endpoint', facts([['URL', el('span', { class: 'mono' }, w.url)], ['Description', w.description || '—'],
      ['Events', (w.event_types || []).join(', ') || 'every event'], ['Created', time(w.created_at)],
      w.enabled ? null : ['Disabled because', w.disabled_reason || 'turned off by a key holder (PATCH enabled: false)']])),
    replayCard(path, access)), attempts);
  let res;
  try {
    res = await call(query(path + '/attempts', { outcome, cursor: params.get('cursor') || '' }), { signal });
  } catch (err) {
    attempts.replaceChildren(card('Delivery attempts', problemNotice(err, 'delivery attempts')));
    return;
  }
  const base = '/console/webhooks/' + encodeURIComponent(id);
  const filter = el('p', {}, 'Show: ', ['', 'succeeded', 'failed', 'exhausted'].map((o) =>
    [el('a', { href: query(base, { outcome: o }), 'aria-current': o === outcome ? 'true' : null }, o || 'all'), ' ']));
  const list = res.attempts || [];
  if (!list.length) {
    attempts.replaceChildren(card('Delivery attempts', filter, empty('No delivery attempts' + (outcome ? ' with this outcome.' : ' yet.'))));
    return;
  }
  const pager = el('div', { class: 'pager' });
  if (res.next_cursor) pager.append(el('a', { class: 'button secondary', href: query(base, { outcome, cursor: res.next_cursor }) }, 'More →'));
  attempts.replaceChildren(card('Delivery attempts', filter, el('div', { class: 'table-wrap' }, el('table', {},
    el('thead', {}, el('tr', {}, ['When', 'Outcome', 'Event', 'Attempt', 'Status', 'Took', 'Error or answer', 'Next try'].map((h) => el('th', {}, h)))),
    el('tbody', {}, list.map((a) => el('tr', {}, el('td', {}, time(a.at)), el('td', {}, badge(a.outcome)),
      el('td', {}, el('div', {}, a.event_type), el('div', { class: 'id muted' }, a.event_id), streamLink(a.stream_id)),
      el('td', { class: 'num' }, a.attempt), el('td', { class: 'num' }, a.status_code || '—'), el('td', { class: 'num' }, a.duration_ms !== undefined ? a.duration_ms + ' ms' : '—'),
      el('td', {}, a.error || el('code', {}, a.response_excerpt || '')), el('td', {}, a.next_attempt_at ? time(a.next_attempt_at) : '—')))))), pager));
}

// streamLink links an attempt's stream (message-… or order-…) to its page.
function streamLink(stream) {
  if (!stream) return null;
  const [kind, id] = [stream.slice(0, stream.indexOf('-')), stream.slice(stream.indexOf('-') + 1)];
  if (kind === 'message') return el('div', {}, link.message(id));
  if (kind === 'order') return el('div', {}, link.order(id));
  return el('div', { class: 'id muted' }, stream);
}

function replayCard(path, access) {
  if (!access.has('webhooks:manage')) return card('Replay', el('p', { class: 'hint' }, 'Replaying needs the webhooks:manage scope, which this key lacks.'));
  const sinceInput = el('input', { id: 'replay-since', type: 'datetime-local', step: 1, value: toLocalInput(new Date(Date.now() - 3600_000).toISOString()) });
  const out = el('div', { role: 'status' });
  const form = el('form', { class: 'asof' }, el('div', {}, el('label', { for: 'replay-since' }, 'Send again every event since'), sinceInput),
    el('button', { type: 'submit' }, 'Replay'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const res = await call(path + '/replay', { method: 'POST', body: { since: fromLocalInput(sinceInput.value) } });
      out.replaceChildren(el('div', { class: 'notice ok' }, `${res.queued} event(s) queued to be sent again.`));
    } catch (err) {
      out.replaceChildren(problemNotice(err, 'replay'));
    }
  });
  return card('Replay', form, out, el('p', { class: 'hint' }, 'Receivers deduplicate on the webhook-id header, which stays the event id.'));
}
