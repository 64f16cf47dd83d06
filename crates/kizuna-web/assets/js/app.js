// The app shell: sign-in gate, navigation, and a small router over history URLs under /admin/. Each page is a
// module exporting `render(main, params)`; pages fetch what they show from the JSON API (server-side
// pagination and aggregation — no page asks for all rows).
import { api, setCsrfToken, whenSignedOut, ApiError } from './api.js';
import { h, mount, errorBox } from './dom.js';
import { t, LOCALES, currentLocale, setLocale, setCurrency } from './i18n.js';

const ROUTES = [
  ['/admin/', 'home', () => import('./pages/home.js')],
  ['/admin/customers', 'customers', () => import('./pages/customers.js')],
  ['/admin/customers/:id', 'customers', () => import('./pages/profile.js')],
  ['/admin/segments', 'segments', () => import('./pages/segments.js')],
  ['/admin/segments/new', 'segments', () => import('./pages/segment-edit.js')],
  ['/admin/segments/:name', 'segments', () => import('./pages/segment-edit.js')],
  ['/admin/flows', 'flows', () => import('./pages/flows.js')],
  ['/admin/flows/:name', 'flows', () => import('./pages/flow.js')],
  ['/admin/messages', 'messages', () => import('./pages/messages.js')],
  ['/admin/messages/templates/:name', 'messages', () => import('./pages/template.js')],
  ['/admin/recommendations', 'recommendations', () => import('./pages/recommendations.js')],
  ['/admin/analytics', 'analytics', () => import('./pages/analytics.js')],
  ['/admin/settings', 'settings', () => import('./pages/settings.js')],
];

const NAV = ['home', 'customers', 'segments', 'flows', 'messages', 'recommendations', 'analytics', 'settings'];
const NAV_PATH = { home: '/admin/' };

const root = document.getElementById('app');
let session = null;

function match(pathname) {
  const path = pathname.length > 7 && pathname.endsWith('/') ? pathname.slice(0, -1) : pathname;
  for (const [pattern, section, load] of ROUTES) {
    const names = [];
    const regex = new RegExp('^' + pattern.replace(/:(\w+)/g, (_, name) => (names.push(name), '([^/]+)')) + '$');
    const found = path.match(regex);
    if (found) {
      try {
        const params = Object.fromEntries(names.map((name, i) => [name, decodeURIComponent(found[i + 1])]));
        return { section, load, params };
      } catch {
        return null; // a malformed escape in the address: "not found", not a blank page
      }
    }
  }
  return null;
}

export function navigate(href, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', href);
  else history.pushState(null, '', href);
  route();
}

// Counts route() calls: a page that finishes loading after the person has gone elsewhere must not act any more.
let generation = 0;

async function route() {
  const mine = ++generation;
  if (!session) return renderSignIn();
  const url = new URL(location.href);
  const found = match(url.pathname);
  const main = renderShell(found ? found.section : null);
  if (!found) {
    mount(main, h('h1', {}, t('app.not_found')));
    return;
  }
  mount(main, h('p', { class: 'loading' }, t('app.loading')));
  try {
    const page = await found.load();
    await page.render(main, found.params, url.searchParams);
  } catch (error) {
    if (mine !== generation) return;
    if (error instanceof ApiError && error.status === 401) return;
    console.error(error);
    mount(main, h('h1', {}, t('app.error')), errorBox(error));
  }
  if (mine !== generation) return;
  // The new page gets the focus (keyboard and screen-reader users start there) — unless the person already
  // put it on the page while it loaded: moving it then sent the rest of what they typed in its search box
  // nowhere.
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
}

function renderShell(section) {
  const nav = h('nav', { class: 'sidebar', 'aria-label': t('app.navigation') },
    h('a', { href: '/admin/', class: 'brand', 'data-link': true }, h('span', { 'aria-hidden': 'true' }, '絆'), ' Kizuna'),
    h('ul', {}, NAV.map((name) => h('li', {},
      h('a', {
        href: NAV_PATH[name] || `/admin/${name}`,
        'data-link': true,
        'aria-current': name === section ? 'page' : false,
      }, t(`nav.${name}`))))));
  const localeSelect = h('select', {
    'aria-label': t('app.language'),
    onchange: (e) => { setLocale(e.target.value); route(); },
  }, LOCALES.map(([code, label]) => h('option', { value: code, selected: code === currentLocale() }, label)));
  const header = h('header', { class: 'topbar' },
    h('span', { class: 'who' }, session.email),
    localeSelect,
    h('button', { type: 'button', class: 'secondary', onclick: signOut }, t('app.sign_out')));
  const main = h('main', { id: 'main', tabindex: '-1' });
  mount(root, h('a', { href: '#main', class: 'skip' }, t('app.skip')), nav, h('div', { class: 'content' }, header, main));
  return main;
}

function renderSignIn(message) {
  const email = h('input', { type: 'email', id: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', id: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const status = h('div', { role: 'alert', class: 'form-status' }, message || '');
  const form = h('form', {
    class: 'signin card',
    onsubmit: async (event) => {
      event.preventDefault();
      status.textContent = '';
      try {
        const result = await api('/api/session', { method: 'POST', body: { email: email.value, password: password.value } });
        await startSession(result);
        const target = new URL(location.href);
        if (target.pathname === '/admin/login') history.replaceState(null, '', '/admin/');
        route();
      } catch (error) {
        mount(status, errorBox(error));
      }
    },
  },
    h('h1', {}, h('span', { 'aria-hidden': 'true' }, '絆 '), t('signin.title')),
    h('label', { for: 'email' }, t('signin.email')), email,
    h('label', { for: 'password' }, t('signin.password')), password,
    h('button', { type: 'submit' }, t('signin.submit')),
    status,
    h('p', { class: 'hint' }, t('signin.hint')));
  mount(root, h('main', { class: 'signin-page' }, form));
  email.focus();
}

async function startSession(result) {
  session = result;
  setCsrfToken(result.csrf_token);
  try {
    const settings = await api('/api/settings');
    setCurrency(settings.store?.currency);
  } catch {
    // Settings are optional for rendering; the default currency stays.
  }
}

async function signOut() {
  try {
    await api('/api/session', { method: 'DELETE' });
  } finally {
    session = null;
    setCsrfToken(null);
    renderSignIn(t('signin.signed_out'));
  }
}

// Links marked data-link navigate inside the app; modifier clicks still open new tabs.
document.addEventListener('click', (event) => {
  const anchor = event.target.closest?.('a[data-link]');
  if (!anchor || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  navigate(anchor.getAttribute('href'));
});
window.addEventListener('popstate', route);
whenSignedOut(() => {
  session = null;
  renderSignIn(t('signin.expired'));
});

(async function boot() {
  document.documentElement.lang = currentLocale();
  try {
    await startSession(await api('/api/session'));
  } catch {
    session = null;
  }
  route();
})();
