// qlaud console: sign-in, sign-out and the router. Views are chosen by the
// URL fragment (#/keys, #/keys/key_…), which never carries a secret.
'use strict';

const ROUTES = [
  [/^#\/overview$/, (m) => Q.pages.overview(m)],
  [/^#\/keys$/, (m) => Q.pages.keys(m)],
  [/^#\/keys\/([A-Za-z0-9_-]+)$/, (m, id) => Q.pages.key(m, id)],
  [/^#\/usage$/, (m) => Q.pages.usage(m)],
  [/^#\/jobs$/, (m) => Q.pages.jobs(m)],
  [/^#\/jobs\/([A-Za-z0-9_-]+)$/, (m, id) => Q.pages.job(m, id)],
  [/^#\/billing$/, (m) => Q.pages.billing(m)],
  [/^#\/models$/, (m) => Q.pages.models(m)],
];

let routeSeq = 0;

Q.route = async function () {
  if (!Q.state.csrf) return;
  const hash = location.hash || '#/overview';
  const main = document.getElementById('main');
  for (const a of document.querySelectorAll('nav a')) {
    const on = hash === a.getAttribute('href') || hash.startsWith(a.getAttribute('href') + '/');
    if (on) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const found = ROUTES.map(([re, view]) => [hash.match(re), view]).find(([m]) => m);
  if (!found) {
    location.replace('#/overview');
    return;
  }
  const [match, view] = found;
  const seq = ++routeSeq;
  const target = Q.h('div', { class: 'view' }, Q.h('p', { class: 'muted', text: 'Loading…' }));
  Q.clear(main, target);
  try {
    await view(target, ...match.slice(1).map(decodeURIComponent));
  } catch (e) {
    if (seq !== routeSeq) return;
    Q.clear(target, Q.h('div', { class: 'panel' }, Q.h('h1', { text: 'Could not load this page' }), Q.h('p', { class: 'form-error', text: e.message }), Q.h('p', null, Q.h('a', { href: '#/overview', text: 'Back to the overview' }))));
    Q.showError(e);
  }
};

function signedIn(session) {
  Q.state.csrf = session.csrf_token;
  Q.state.session = session;
  document.getElementById('top').hidden = false;
  Q.clear(document.getElementById('who'), session.key_name, ' · ', Q.h('code', { text: session.tenant_id }));
  Q.route();
}

// The sign-in form; `message` says why it is shown (an error, or a plain
// note such as "Signed out.").
function signInView(message, note) {
  Q.state.csrf = null;
  Q.state.session = null;
  document.getElementById('top').hidden = true;
  const key = Q.h('input', { type: 'password', name: 'admin_key', autocomplete: 'off', required: true, autofocus: true, placeholder: 'qlk_live_…', 'aria-describedby': 'signin-help' });
  const error = Q.h('p', { class: note ? 'muted' : 'form-error', role: 'alert', text: message || '' });
  const button = Q.h('button', { type: 'submit', class: 'primary', text: 'Sign in' });
  const form = Q.h(
    'form',
    {
      class: 'signin panel',
      onsubmit: async (e) => {
        e.preventDefault();
        error.textContent = '';
        error.className = 'form-error';
        button.disabled = true;
        try {
          // The key goes in the body of one request and is forgotten: from
          // here on the browser holds only the HttpOnly session cookie.
          const session = await Q.api('POST', '/dashboard/session', { admin_key: key.value.trim() });
          key.value = '';
          signedIn(session);
        } catch (err) {
          error.textContent = err.message;
          button.disabled = false;
        }
      },
    },
    Q.h('img', { src: '/dashboard/assets/logo.svg', alt: '', width: 40, height: 40 }),
    Q.h('h1', { text: 'qlaud console' }),
    Q.h('label', { class: 'field' }, Q.h('span', { text: 'Admin key' }), key),
    Q.h('small', { id: 'signin-help', class: 'muted', text: 'Your tenant’s master key or another admin key; qlaud serve printed the master key on first start. End-user (standard) keys cannot sign in.' }),
    error,
    button
  );
  Q.clear(document.getElementById('main'), form);
  key.focus();
}

Q.onSessionEnded = (message) => signInView(message);

async function signOut() {
  await Q.guard(async () => {
    await Q.api('DELETE', '/dashboard/session');
    signInView('Signed out.', true);
  });
}

async function boot() {
  document.getElementById('signout').addEventListener('click', signOut);
  window.addEventListener('hashchange', () => Q.route());
  try {
    signedIn(await Q.api('GET', '/dashboard/session'));
  } catch (e) {
    if (e.status === 401) signInView();
    else {
      signInView();
      Q.showError(e);
    }
  }
}

boot();
