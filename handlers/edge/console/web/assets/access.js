// What the signed-in key may do, so that a page offers only the actions
// the API would allow. The API itself decides every request; this only
// spares people a button that can only answer 403.
//
// It is worked out once per sign-in and kept in the tab's sessionStorage
// beside the key (scope names and endpoint paths, nothing secret), so
// that opening a deep link costs only the page's own API calls.
import { call, Problem } from './api.js';

const STORE = 'afterok.access';
let cached;

// access returns {has(scope), can(method, path)}: scopes the key holds and
// endpoints this server has.
export function access() {
  if (!cached) {
    const kept = sessionStorage.getItem(STORE);
    cached = kept ? Promise.resolve(JSON.parse(kept)) : load().then((a) => {
      if (sessionStorage.getItem('afterok.api_key')) sessionStorage.setItem(STORE, JSON.stringify(a));
      return a;
    });
  }
  return cached.then(({ scopes, ops }) => ({
    has: (s) => scopes.includes(s),
    can: (method, path) => ops.includes(method.toUpperCase() + ' ' + path),
  }));
}

export function forget() {
  cached = undefined;
  sessionStorage.removeItem(STORE);
}

// load reads the server's OpenAPI document for the endpoints it has, and
// the key's scopes from the key list when the server has one (the key is
// found by its prefix), else from harmless probes.
async function load() {
  let doc = { paths: {} };
  try { doc = await (await fetch('/openapi.json', { credentials: 'omit' })).json(); } catch { /* no endpoints known */ }
  const ops = [];
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of Object.keys(item)) if (method !== 'parameters') ops.push(method.toUpperCase() + ' ' + path);
  }
  const can = (op) => ops.includes(op);
  const scopes = new Set();
  const key = sessionStorage.getItem('afterok.api_key') || '';
  let listed = false;
  if (can('GET /v1/account/keys')) {
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
    if (can('POST /v1/messages/{id}/cancel')) probes.push(probe('messages:write', '/v1/messages/0/cancel', 'POST'));
    if (can('GET /v1/webhooks')) probes.push(probe('webhooks:manage', '/v1/webhooks'));
    await Promise.all(probes);
  }
  return { scopes: [...scopes], ops };
}
