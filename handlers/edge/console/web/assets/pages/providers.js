// Providers' statistics (admin keys): what each provider was sent, what it
// delivered and failed, how fast, and why it failed.
import { call, query } from '../api.js';
import { el, num, fromLocalInput, toLocalInput, failureInWords } from '../format.js';
import { problemNotice, loading, card, empty } from '../ui.js';

export async function render(page, { params, signal, access, navigate }) {
  document.title = 'Providers · afterok console';
  page.append(el('h1', {}, 'Providers'));
  if (!access.has('admin')) {
    page.append(el('div', { class: 'notice warn' }, 'Providers\' statistics are for admin keys: this key lacks the admin scope.'));
    return;
  }
  const since = params.get('since') || '';
  const until = params.get('until') || '';
  const sinceInput = el('input', { id: 'p-since', type: 'datetime-local', step: 1, value: toLocalInput(since) });
  const untilInput = el('input', { id: 'p-until', type: 'datetime-local', step: 1, value: toLocalInput(until) });
  const form = el('form', { class: 'filters' }, el('div', {}, el('label', { for: 'p-since' }, 'From (default: 24 h ago)'), sinceInput),
    el('div', {}, el('label', { for: 'p-until' }, 'Until (default: now)'), untilInput), el('div', {}, el('button', { type: 'submit' }, 'Show')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    navigate(query('/console/providers', { since: fromLocalInput(sinceInput.value), until: fromLocalInput(untilInput.value) }));
  });
  const out = el('div', {}, loading());
  page.append(card(null, form), out);
  let res;
  try {
    res = await call(query('/v1/providers/stats', { since, until }), { signal });
  } catch (err) {
    out.replaceChildren(problemNotice(err, 'providers\' statistics'));
    return;
  }
  if (!res.providers.length) {
    out.replaceChildren(card(null, empty('No provider was sent anything in this period.', 'Widen the period.')));
    return;
  }
  const ms = (v) => (v === null || v === undefined ? '> 60 s' : v + ' ms');
  const lat = (l) => (l.count ? `${ms(l.p50)} / ${ms(l.p95)} / ${ms(l.p99)}` : '—');
  const rate = (p) => (p.submitted ? ((100 * p.delivered) / p.submitted).toFixed(1) + ' %' : '—');
  out.replaceChildren(card(null, el('div', { class: 'table-wrap' }, el('table', { id: 'providers' },
    el('thead', {}, el('tr', {}, ['Provider', 'Submitted', 'Delivered', 'Delivery rate', 'Failed', 'Retried', 'Submit p50/p95/p99', 'Receipt p50/p95/p99'].map((h, i) => el('th', { class: i && i < 6 ? 'num' : '' }, h)))),
    el('tbody', {}, res.providers.map((p) => el('tr', {}, el('td', {}, el('strong', {}, p.provider)), el('td', { class: 'num' }, num(p.submitted)),
      el('td', { class: 'num' }, num(p.delivered)), el('td', { class: 'num' }, rate(p)), el('td', { class: 'num' }, num(p.failed)),
      el('td', { class: 'num' }, num(p.retried)), el('td', {}, lat(p.submit_latency_ms)), el('td', {}, lat(p.delivery_latency_ms)))))))),
  ...res.providers.filter((p) => p.failures.length).map((p) => card(`Why ${p.provider} failed`, el('table', {},
    el('thead', {}, el('tr', {}, ['Failure', 'Code', 'Stage', 'Permanent', 'Count'].map((h) => el('th', {}, h)))),
    el('tbody', {}, p.failures.map((f) => el('tr', {}, el('td', {}, failureInWords(f.code)), el('td', {}, el('code', {}, f.code)),
      el('td', {}, f.stage), el('td', {}, f.permanent ? 'yes' : 'no'), el('td', { class: 'num' }, num(f.count)))))))));
}
