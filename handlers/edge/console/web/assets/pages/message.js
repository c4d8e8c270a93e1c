// One message: its state now (or as of a chosen time), the route decision
// with every candidate, the failure, the timeline of every recorded event
// with the time between steps and the raw receipts, whether the hash
// chain holds, and the actions the key may take.
import { call, query } from '../api.js';
import {
  el, badge, displayState, stateInWords, failureInWords, stageInWords, eventInWords, time, duration, since,
  link, facts, raw, money, toLocalInput, fromLocalInput, actor,
} from '../format.js';
import { problemNotice, loading, card, unavailable } from '../ui.js';

const cancelable = ['scheduled', 'accepted', 'queued'];

export async function render(page, { id, params, signal, access, navigate }) {
  document.title = `Message ${id} · afterok console`;
  const asOf = params.get('as_of') || '';
  page.append(loading());
  const path = '/v1/messages/' + encodeURIComponent(id);
  const [msg, history] = await Promise.allSettled([
    call(query(path, { as_of: asOf }), { signal }),
    access.has('events:read') ? call(path + '/events', { signal }) : Promise.reject(Object.assign(new Error('no events:read'), { scope: true })),
  ]);
  if (signal.aborted) return;
  page.replaceChildren();
  if (msg.status === 'rejected') {
    page.append(el('h1', {}, 'Message ', el('span', { class: 'id' }, id)), problemNotice(msg.reason, 'message'));
    return;
  }
  const m = msg.value;
  const st = displayState(m);
  page.append(el('div', { class: 'headline' },
    el('h1', {}, 'Message ', el('span', { class: 'id' }, m.message_id)), badge(st), el('span', { class: 'state-words' }, stateInWords(st))));
  if (asOf) {
    page.append(el('div', { class: 'notice warn' }, 'Shown as it was at ', time(m.as_of || asOf),
      '. Events recorded later are greyed out in the timeline. ', el('a', { href: '/console/messages/' + encodeURIComponent(id) }, 'Show it as it is now')));
  }
  const times = m.timestamps;
  page.append(el('div', { class: 'grid' },
    card('Summary', facts([
      ['To', el('span', { class: 'mono' }, m.to)],
      m.from ? ['From', m.from] : null,
      ['Order', link.order(m.order_id)],
      ['Account', link.account(m.account_id)],
      ['Attempt', String(m.attempt || 0)],
      ['Provider', m.route ? m.route.provider : '—'],
      ['Provider\'s id', m.provider_message_id ? el('span', { class: 'mono' }, m.provider_message_id) : '—'],
      ['Price', `${money(m.price)} · ${m.segments} segment${m.segments === 1 ? '' : 's'} (${m.encoding})`],
      ['Accepted', time(times.accepted_at)],
      ['Delivered', times.delivered_at ? time(times.delivered_at) : undefined],
      ['Failed', times.failed_at ? time(times.failed_at) : undefined],
      ['Expires', time(m.expires_at)],
      m.redrive_of ? ['Re-drive of', link.message(m.redrive_of)] : null,
      m.redriven_as ? ['Re-driven as', link.message(m.redriven_as)] : null,
    ]), el('h3', {}, 'Text'), el('p', { class: 'body' }, m.body)),
    el('div', {}, m.failure ? failureCard(m.failure) : null, routeCard(m, history), asOfCard(id, asOf, navigate),
      actionsCard(m, access, navigate))));
  page.append(timelineCard(m, history));
  if (!asOf) watchCatchUp(page, m, history, path, signal, navigate);
}

// watchCatchUp: the summary comes from the read model, the timeline from the
// event log, and the read model trails the log by a moment (longer when the
// projector is busy or its database was briefly away). When the timeline
// already holds events the summary has not folded in, the page says so and
// shows itself again once the read model has caught up, so that a support
// person never reads a stale state under a history that contradicts it.
async function watchCatchUp(page, m, history, path, signal, navigate) {
  if (history.status !== 'fulfilled' || !history.value.events.length) return;
  const latest = history.value.events[history.value.events.length - 1].version;
  if (!(latest > m.version)) return;
  const behind = latest - m.version;
  page.querySelector('.headline').after(el('div', { class: 'notice warn', id: 'catching-up', role: 'status' },
    `The summary is catching up: the timeline below already holds ${behind} newer event${behind === 1 ? '' : 's'}. `
    + 'This page shows itself again when the summary has them.'));
  for (let wait = 500; !signal.aborted; wait = Math.min(wait * 2, 5000)) {
    await new Promise((r) => setTimeout(r, wait));
    if (signal.aborted) return;
    const now = await call(path, { signal }).catch(() => null);
    if (now && now.version >= latest) {
      navigate('/console/messages/' + encodeURIComponent(m.message_id), { replace: true });
      return;
    }
  }
}

function failureCard(f) {
  return el('section', { class: 'card' }, el('h2', {}, 'Why it failed'),
    el('p', {}, el('strong', {}, failureInWords(f.code)), ' ', el('span', { class: 'muted' }, `(${f.code}, ${stageInWords(f.stage)})`)),
    facts([
      ['Reason', f.reason || '—'],
      ['Permanent', f.permanent ? 'yes: sending it again as it is will not help' : 'no: a later attempt may succeed'],
      f.provider ? ['Provider', f.provider] : null,
      f.provider_code ? ['Provider\'s code', el('span', { class: 'mono' }, f.provider_code)] : null,
    ]));
}

// routeCard shows the routing decision in force: every candidate the route
// table offered and why each was or was not chosen. As of a past moment
// that is the last decision the message had made by then, not the last of
// its whole history (a failover routes twice).
function routeCard(m, history) {
  const routed = [...shown(m, history)].reverse().find((e) => e.type === 'MessageRouted');
  if (!m.route && !routed) return routeSection( el('p', { class: 'muted' }, 'Not routed yet: a worker chooses a provider when it takes the message.'));
  const r = routed ? routed.data.route : m.route;
  return routeSection( el('p', {}, 'Route ', el('code', {}, r.route_id), ' chose ', el('strong', {}, r.provider), r.reason ? ': ' + r.reason : ''),
    r.candidates ? candidates(r.candidates, r.provider) : el('p', { class: 'hint' }, 'The candidates are in the timeline, which needs the events:read scope.'));
}

// shown is the part of the history the summary m was folded from: all of
// it now, the events up to m's version as of a past moment. The version,
// not the time, draws the line: it is exactly where the server stopped
// folding, whatever the precision of the times.
function shown(m, history) {
  const events = history.status === 'fulfilled' ? history.value.events : [];
  return m.as_of ? events.filter((e) => e.version <= m.version) : events;
}

function routeSection(...children) {
  return el('section', { class: 'card', id: 'route' }, el('h2', {}, 'Route'), ...children);
}

function candidates(list, chosen) {
  return el('div', { class: 'table-wrap' }, el('table', { class: 'candidates' },
    el('thead', {}, el('tr', {}, el('th', {}, 'Provider'), el('th', { class: 'num hide-narrow' }, 'Priority'), el('th', { class: 'num hide-narrow' }, 'Weight'), el('th', {}, 'Eligible'), el('th', {}, 'Why'))),
    el('tbody', {}, list.map((c) => el('tr', { class: c.provider === chosen && c.eligible ? 'chosen' : '' },
      el('td', {}, c.provider), el('td', { class: 'num hide-narrow' }, c.priority), el('td', { class: 'num hide-narrow' }, c.weight),
      el('td', {}, c.eligible ? 'yes' : 'no'), el('td', {}, c.reason))))));
}

function asOfCard(id, asOf, navigate) {
  const input = el('input', { id: 'as-of', type: 'datetime-local', step: '0.001', value: toLocalInput(asOf, { ms: true }) });
  const form = el('form', { class: 'asof' }, el('div', {}, el('label', { for: 'as-of' }, 'Show the state as of'), input),
    el('button', { type: 'submit', class: 'secondary' }, 'Show'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const at = fromLocalInput(input.value);
    navigate(query('/console/messages/' + encodeURIComponent(id), { as_of: at }));
  });
  return card('Time travel', form, el('p', { class: 'hint' }, 'Folds the message\'s history up to that moment (your local time).'));
}

// actionsCard offers cancel and re-drive where the state allows them, the
// server has them and the key holds messages:write.
function actionsCard(m, access, navigate) {
  const path = '/v1/messages/' + encodeURIComponent(m.message_id);
  const canCancel = cancelable.includes(m.state) || (m.state === 'queued');
  const canRedrive = m.state === 'failed' && !m.redriven_as;
  if (!canCancel && !canRedrive) return null;
  if (m.as_of) return null;
  const action = canCancel ? 'cancel' : 'redrive';
  const endpoint = canCancel ? 'POST /v1/messages/{id}/cancel' : 'POST /v1/messages/{id}/redrive';
  const [method, pattern] = endpoint.split(' ');
  const actions = (...children) => el('section', { class: 'card actions' }, el('h2', {}, 'Actions'), ...children);
  if (!access.can(method, pattern)) return actions(unavailable(canCancel ? 'cancelling a message' : 're-driving a message'));
  if (!access.has('messages:write')) return actions(el('p', { class: 'hint' }, `This key lacks the messages:write scope, so it may not ${canCancel ? 'cancel' : 're-drive'} this message.`));
  const reason = el('textarea', { id: 'action-reason', name: 'reason', required: action === 'redrive', placeholder: 'Why? It is recorded in the history with your key.' });
  const out = el('div', { role: 'status' });
  const button = el('button', { type: 'submit', class: canCancel ? 'danger' : '' }, canCancel ? 'Cancel this message' : 'Re-drive this message');
  const form = el('form', {}, el('label', { for: 'action-reason' }, 'Reason'), reason, el('div', {}, button), out);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    button.disabled = true;
    try {
      const res = await call(`${path}/${action}`, { method: 'POST', body: { reason: reason.value.trim() || undefined } });
      out.replaceChildren(el('div', { class: 'notice ok' }, canCancel ? 'Canceled.' : `Re-driven${res && res.order_id ? ' as order ' + res.order_id : ''}.`));
      // The message's view comes from the read model, which trails the
      // event by a moment: show the page again once it has moved (or after
      // a few seconds, when the page itself waits for the read model).
      for (let i = 0; i < 25; i++) {
        const now = await call(path).catch(() => m);
        if (now.version > m.version) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      navigate('/console/messages/' + encodeURIComponent(m.message_id), { replace: true });
    } catch (err) {
      button.disabled = false;
      let n = problemNotice(err, 'this action');
      if (err.status === 409) n = el('div', { class: 'notice warn' }, 'Too late: ' + (err.detail || 'the message is already on its way or final') + '. Reload to see its state.');
      out.replaceChildren(n);
    }
  });
  return actions(
    el('p', { class: 'hint' }, canCancel ? 'Stops the message before it is handed to a provider, and refunds it.' : 'Sends it again as a new message, priced anew; this one stays failed.'), form);
}

const good = new Set(['MessageDelivered']);
const bad = new Set(['MessageFailed', 'MessageRetried', 'MessageCanceled']);

function timelineCard(m, history) {
  if (history.status === 'rejected') {
    const err = history.reason;
    return card('Timeline', err.scope
      ? el('p', { class: 'hint' }, 'The timeline needs the events:read scope, which this key lacks.')
      : problemNotice(err, 'the message\'s history'));
  }
  const h = history.value;
  const events = h.events;
  const chain = h.hash_chain === 'valid'
    ? el('div', { class: 'notice ok', id: 'hash-chain' }, badge('valid'), ` Hash chain intact: each of the ${events.length} events is exactly as it was recorded, in order, none missing.`)
    : el('div', { class: 'notice error', id: 'hash-chain' }, badge('broken'), ' Hash chain broken: the stored history was changed after it was written. ',
      el('ul', {}, (h.problems || []).map((p) => el('li', {}, p))));
  const start = events.length ? events[0].recorded_at : null;
  const items = events.map((e, i) => {
    const prev = i > 0 ? events[i - 1].recorded_at : null;
    const later = Boolean(m.as_of) && e.version > m.version;
    return el('li', { class: [good.has(e.type) ? 'good' : '', bad.has(e.type) ? 'bad' : '', later ? 'later' : ''].join(' ').trim() || null },
      el('div', { class: 'step-head' },
        el('span', { class: 'step-title' }, eventInWords(e.type)),
        el('span', { class: 'step-time' }, time(e.recorded_at)),
        actor(e),
        prev ? el('span', { class: 'step-gap', title: 'time since the previous step' }, '+' + duration(since(prev, e.recorded_at)) + ' after the previous step') : null,
        i > 0 ? el('span', { class: 'step-gap', title: 'time since acceptance' }, duration(since(start, e.recorded_at)) + ' since accepted') : null,
        later ? el('span', { class: 'step-later' }, 'after the chosen time') : null),
      el('div', { class: 'step-body' }, stepBody(e), el('details', {}, el('summary', {}, `event #${e.version} · ${e.type}`), raw(e))));
  });
  return el('section', { class: 'card', id: 'timeline' }, el('h2', {}, 'Timeline ', el('span', { class: 'sub' }, 'every recorded event, oldest first')), chain,
    el('ol', { class: 'timeline' }, items));
}

function stepBody(e) {
  const d = e.data || {};
  switch (e.type) {
    case 'MessageAccepted': return el('div', { class: 'muted' }, `To ${d.to}${d.country ? ' (' + d.country + ')' : ''}, ${d.segments} segment(s), ${money(d.price)}`,
      d.redrive_of ? el('span', {}, '; a re-drive of ', link.message(d.redrive_of)) : null);
    case 'MessageRedriven': return el('div', { class: 'muted' }, 'Sent again as ', link.message(d.redriven_as), ' in order ', link.order(d.order_id),
      d.reason ? '. Reason: ' + d.reason : '');
    case 'MessageQueued': return el('div', { class: 'muted' }, `Attempt ${d.attempt} waits for a worker.`);
    case 'MessageRouted': return el('div', {}, `Attempt ${d.attempt}: route ${d.route.route_id} chose ${d.route.provider}${d.route.reason ? ' (' + d.route.reason + ')' : ''}.`,
      d.route.candidates ? candidates(d.route.candidates, d.route.provider) : null);
    case 'MessageSubmitted': return el('div', { class: 'muted' }, `Attempt ${d.attempt}: ${d.provider} took it as `, el('code', {}, d.provider_message_id), ` and answered in ${duration(d.latency_ms)}.`);
    case 'MessageDelivered': return el('div', {}, `${d.provider} reports it delivered${d.done_at ? ' at ' : ''}`, d.done_at ? time(d.done_at) : '', '.', receipt(d.receipt));
    case 'MessageFailed': return el('div', {}, failureLine(d.failure), receipt(d.receipt));
    case 'MessageRetried': return el('div', {}, failureLine(d.failure), ` Attempt ${d.next_attempt} not before `, time(d.not_before), '.', receipt(d.receipt));
    default: return d.reason ? el('div', { class: 'muted' }, 'Reason: ' + d.reason) : null;
  }
}

function failureLine(f) {
  if (!f) return null;
  return el('span', {}, el('strong', {}, failureInWords(f.code)), ` (${f.code}, ${stageInWords(f.stage)}${f.permanent ? ', permanent' : ''})${f.reason ? ': ' + f.reason : ''}.`);
}

function receipt(r) {
  if (!r) return null;
  return el('details', { class: 'receipt', open: true }, el('summary', {}, 'Raw receipt from the provider'), raw(r));
}
