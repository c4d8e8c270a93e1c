// The console's only way to the server: the public API, with the key from
// this tab's sessionStorage as a Bearer header. The key is never put in a
// URL, never in localStorage, never in a cookie.

const KEY = 'afterok.api_key';

export const session = {
  key: () => sessionStorage.getItem(KEY),
  signIn: (key) => sessionStorage.setItem(KEY, key),
  signOut: () => sessionStorage.clear(),
};

// Problem is an API error: the RFC 9457 document the server answered, or
// one made here when the server could not be reached.
export class Problem extends Error {
  constructor(status, doc) {
    super(doc.detail || doc.title || `HTTP ${status}`);
    this.status = status;
    this.code = doc.code || (status === 0 ? 'network' : 'http_' + status);
    this.detail = doc.detail || '';
    this.requestID = doc.request_id || '';
    this.retryAfter = doc.retryAfter || 0;
  }
  // missing: the server has no such endpoint (an older afterok), which is
  // not the same as "no such message".
  get missing() {
    return this.status === 405 || (this.status === 404 && this.detail.startsWith('no endpoint at'));
  }
}

// call sends one API request and returns its JSON body, or throws a
// Problem. A 401 signs the tab out: the key is wrong or was revoked.
export async function call(path, { method = 'GET', body, signal } = {}) {
  const headers = { Accept: 'application/json' };
  const key = session.key();
  if (key) headers.Authorization = 'Bearer ' + key;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method, headers, signal, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new Problem(0, { detail: 'The server did not answer. Check that afterok is running and reachable, then try again.' });
  }
  const text = await res.text();
  let doc = null;
  try { doc = text ? JSON.parse(text) : null; } catch { doc = null; }
  if (!res.ok) {
    const p = new Problem(res.status, { ...(doc || {}), retryAfter: Number(res.headers.get('Retry-After')) || 0 });
    if (res.status === 401) window.dispatchEvent(new CustomEvent('afterok:unauthenticated', { detail: p }));
    throw p;
  }
  return doc;
}

// query builds a path with the non-empty parameters.
export function query(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? path + '?' + s : path;
}

// stream reads Server-Sent Events with fetch (EventSource cannot send an
// Authorization header, and the key must not go into the URL), calling
// onEvent for each. It reconnects after a cut, resuming with
// Last-Event-ID, until signal aborts. onState is told 'live' or 'retrying'.
export async function stream(path, { onEvent, onState, signal }) {
  let last = '';
  while (!signal.aborted) {
    try {
      const headers = { Accept: 'text/event-stream', Authorization: 'Bearer ' + session.key() };
      if (last) headers['Last-Event-ID'] = last;
      const res = await fetch(path, { headers, signal, cache: 'no-store', credentials: 'omit' });
      if (!res.ok) {
        let doc = {};
        try { doc = await res.json(); } catch { /* not a problem document */ }
        throw new Problem(res.status, doc);
      }
      onState('live');
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const record = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const ev = { id: '', type: 'message', data: '' };
          for (const line of record.split('\n')) {
            if (line.startsWith(':')) continue;
            const [field, ...rest] = line.split(':');
            const val = rest.join(':').replace(/^ /, '');
            if (field === 'id') ev.id = val;
            else if (field === 'event') ev.type = val;
            else if (field === 'data') ev.data += val;
          }
          if (ev.id) last = ev.id;
          if (ev.data) onEvent(ev);
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof Problem && err.status >= 400 && err.status < 500 && err.status !== 429) throw err;
    }
    onState('retrying');
    await new Promise((r) => setTimeout(r, 2000));
  }
}
