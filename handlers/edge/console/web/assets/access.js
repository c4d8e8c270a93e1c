// What the signed-in key may do, so that a page offers only the actions
// the API would allow. The API itself decides every request; this only
// spares people a button that can only answer 403.
import { call, endpoints, Problem } from './api.js';

let cached;

// access returns {has(scope), can(method, path)}: scopes the key holds and
// endpoints this server has. Scopes come from the key list when the server
// has one (the key is found by its prefix), else from harmless probes.
export function access() {
  if (!cached) cached = load();
  return cached;
}

export function forget() { cached = undefined; }

async function load() {
  const can = await endpoints();
  const scopes = new Set();
  const key = sessionStorage.getItem('afterok.api_key') || '';
  let listed = false;
  if (can('GET', '/v1/account/keys')) {
    try {
      const { keys } = await call('/v1/account/keys');
      const mine = (keys || []).find((k) => k.prefix && key.startsWith(k.prefix));
      if (mine) { (mine.scopes || []).forEach((s) => scopes.add(s)); listed = true; }
    } catch { /* probe instead */ }
  }
  if (!listed) {
    const probe = async (scope, path, method = 'GET') => {
      try { await call(path, { method }); scopes.add(scope); } catch (err) {
        // 403 is the answer "not this scope"; a 404 for the probe's
        // made-up id means the scope check passed.
        if (err instanceof Problem && err.status !== 403 && err.status !== 401 && !err.missing) scopes.add(scope);
      }
    };
    const probes = [probe('messages:read', '/v1/account'), probe('events:read', '/v1/events?limit=1'),
      probe('admin', '/v1/providers/stats')];
    // A cancel of an id that cannot exist: authorised or not, nothing changes.
    if (can('POST', '/v1/messages/{id}/cancel')) probes.push(probe('messages:write', '/v1/messages/0/cancel', 'POST'));
    if (can('GET', '/v1/webhooks')) probes.push(probe('webhooks:manage', '/v1/webhooks?limit=1'));
    await Promise.all(probes);
  }
  return { has: (s) => scopes.has(s), can, scopes };
}
