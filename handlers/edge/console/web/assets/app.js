// The console's entry: sign-in, the navigation and a small router that
// maps the path (a deep link support can paste into a ticket) to a page.
// Each page is a module whose render(params, ctx) fills the page element;
// ctx.signal aborts its requests when the viewer moves on.
import { session, call, Problem } from './api.js';
import { access, forget } from './access.js';
import { el } from './format.js';
import * as messages from './pages/messages.js';
import * as message from './pages/message.js';
import * as orders from './pages/orders.js';
import * as order from './pages/order.js';
import * as account from './pages/account.js';
import * as webhooks from './pages/webhooks.js';
import * as providers from './pages/providers.js';

const routes = [
  [/^\/console\/?$/, () => ({ redirect: '/console/messages' })],
  [/^\/console\/messages\/?$/, () => ({ page: messages, nav: 'messages' })],
  [/^\/console\/messages\/([^/]+)$/, (m) => ({ page: message, nav: 'messages', id: m[1] })],
  [/^\/console\/orders\/?$/, () => ({ page: orders, nav: 'orders' })],
  [/^\/console\/orders\/([^/]+)$/, (m) => ({ page: order, nav: 'orders', id: m[1] })],
  [/^\/console\/account\/?$/, () => ({ page: account, nav: 'account' })],
  [/^\/console\/accounts\/([^/]+)$/, (m) => ({ page: account, nav: 'account', id: m[1] })],
  [/^\/console\/webhooks\/?$/, () => ({ page: webhooks, nav: 'webhooks' })],
  [/^\/console\/webhooks\/([^/]+)$/, (m) => ({ page: webhooks, nav: 'webhooks', id: m[1] })],
  [/^\/console\/providers\/?$/, () => ({ page: providers, nav: 'providers' })],
];

const $ = (id) => document.getElementById(id);
let current; // the AbortController of the page shown

function match(path) {
  for (const [re, make] of routes) {
    const m = path.match(re);
    if (m) return make(m.map((s) => (s === undefined ? s : decodeURIComponent(s))));
  }
  return null;
}

async function show() {
  if (current) current.abort();
  current = new AbortController();
  const signal = current.signal;
  const page = $('page');
  if (!session.key()) {
    signedOut();
    return;
  }
  $('sign-in').hidden = true;
  const route = match(location.pathname);
  if (route && route.redirect) {
    history.replaceState(null, '', route.redirect);
    return show();
  }
  document.querySelectorAll('#nav a').forEach((a) => a.toggleAttribute('aria-current', false));
  page.replaceChildren();
  if (!route) {
    page.append(el('h1', {}, 'No such page'), el('p', {}, 'The console has no page at this address. ', el('a', { href: '/console/messages' }, 'Search messages')));
    return;
  }
  const nav = document.querySelector(`#nav a[data-nav="${route.nav}"]`);
  if (nav) nav.setAttribute('aria-current', 'page');
  const params = new URLSearchParams(location.search);
  try {
    await route.page.render(page, { id: route.id, params, signal, access: await access(), navigate });
    // Marks the moment a page has everything it asked for on screen (the
    // scale test reads it: the time since navigation began).
    if (!signal.aborted) performance.mark('afterok:page-shown');
  } catch (err) {
    if (err.name === 'AbortError') return;
    console.error(err);
    page.append(el('div', { class: 'notice error' }, 'This page failed to show: ' + err.message + '. Reload to try again.'));
  }
}

// navigate moves to another console address without reloading.
export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', url); else history.pushState(null, '', url);
  show();
  $('main').focus({ preventScroll: true });
  if (!replace) window.scrollTo(0, 0);
}

function signedOut(message) {
  if (current) current.abort();
  $('nav').hidden = true;
  $('who').hidden = true;
  $('page').replaceChildren();
  $('sign-in').hidden = false;
  const err = $('sign-in-error');
  err.hidden = !message;
  err.textContent = message || '';
  document.title = 'Sign in · afterok console';
  $('api_key').focus();
}

async function signIn(e) {
  e.preventDefault();
  const input = $('api_key');
  const key = input.value.trim();
  if (!key) return;
  session.signIn(key);
  forget();
  try {
    const acct = await call('/v1/account');
    input.value = '';
    sessionStorage.setItem('afterok.account', JSON.stringify({ name: acct.name, account_id: acct.account_id }));
    await signedIn(acct);
    show();
  } catch (err) {
    session.signOut();
    let text = 'Sign-in failed: ' + err.message;
    if (err instanceof Problem && err.status === 401) text = 'This API key is unknown or was revoked. Check that you pasted all of it (it starts with aok_).';
    if (err instanceof Problem && err.status === 403) text = 'This key is valid but lacks the messages:read scope, which the console needs to show anything. Ask for a key with messages:read.';
    if (err instanceof Problem && err.status === 0) text = err.detail;
    signedOut(text);
    input.select(); // a paste replaces the refused key
  }
}

async function signedIn(acct) {
  $('nav').hidden = false;
  $('who').hidden = false;
  $('who-name').textContent = acct ? acct.name : '';
  $('who-name').title = acct ? 'account ' + acct.account_id : '';
  const a = await access();
  document.querySelector('#nav a[data-nav="providers"]').hidden = !a.has('admin');
}

function signOut() {
  session.signOut();
  forget();
  history.pushState(null, '', '/console/messages');
  signedOut();
}

document.addEventListener('click', (e) => {
  const a = e.target.closest('a');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey || a.target) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith('/console/') || a.hasAttribute('download')) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});

document.addEventListener('keydown', (e) => {
  // "/" jumps to the search box, as in most consoles.
  if (e.key === '/' && !['INPUT', 'TEXTAREA', 'SELECT'].includes(document.activeElement.tagName) && session.key()) {
    e.preventDefault();
    if (!location.pathname.match(/^\/console\/messages\/?$/)) navigate('/console/messages');
    setTimeout(() => { const to = document.querySelector('input[name="to"]'); if (to) to.focus(); }, 0);
  }
});

window.addEventListener('popstate', show);
window.addEventListener('afterok:unauthenticated', () => {
  session.signOut();
  forget();
  signedOut('The API key was refused (unknown or revoked). Sign in again.');
});
$('sign-in-form').addEventListener('submit', signIn);
$('sign-out').addEventListener('click', signOut);

// A tab that is signed in already (a reload, a pasted deep link) shows the
// page at once; a key revoked since is refused by the page's first call.
if (session.key()) signedIn(JSON.parse(sessionStorage.getItem('afterok.account') || 'null'));
show();
