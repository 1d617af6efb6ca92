// qlaud console: shared helpers. Plain scripts (no build step); everything
// hangs off one global, Q. DOM is built with Q.h, never from HTML strings,
// so names and metadata typed by tenants can never become markup.
'use strict';
const Q = (window.Q = {});

// The session's CSRF token, from /dashboard/session. Kept in memory only:
// the session itself lives in an HttpOnly cookie the page cannot read.
Q.state = { csrf: null, session: null };
// Views by route name, filled in by keys.js and pages.js.
Q.pages = {};

Q.h = function (tag, attrs, ...children) {
  const el = document.createElement(tag);
  Q.setAttrs(el, attrs);
  Q.append(el, children);
  return el;
};

Q.svg = function (tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  Q.setAttrs(el, attrs);
  Q.append(el, children);
  return el;
};

Q.setAttrs = function (el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
};

Q.append = function (el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
};

Q.clear = function (el, ...children) {
  el.replaceChildren();
  Q.append(el, children);
  return el;
};

// API errors carry the server's own message, shown to the user as is.
Q.ApiError = class extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
};

// Calls qlaud's public API (or the console's session routes) with the
// session cookie and the CSRF header.
Q.api = async function (method, path, body) {
  const headers = { Accept: 'application/json' };
  if (Q.state.csrf) headers['X-Qlaud-Csrf'] = Q.state.csrf;
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new Q.ApiError(0, 'qlaud did not answer: ' + e.message, 'network');
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!resp.ok) {
    const message =
      (data && (data.message || (data.error && data.error.message))) ||
      resp.status + ' ' + resp.statusText;
    const code = data && (data.error_code || (data.error && (data.error.code || data.error.type)));
    if (resp.status === 401 && Q.state.csrf && Q.onSessionEnded) Q.onSessionEnded(message);
    throw new Q.ApiError(resp.status, message, code);
  }
  return data;
};

// `?a=1&b=2`, leaving out empty values.
Q.qs = function (params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== '') p.set(k, v);
  }
  const s = p.toString();
  return s ? '?' + s : '';
};

// Every page of a list endpoint (bounded, for overview figures).
Q.allPages = async function (path, params, maxPages) {
  let items = [];
  let token = null;
  for (let i = 0; i < (maxPages || 10); i++) {
    const q = token ? { page_token: token, limit: 200 } : Object.assign({ limit: 200 }, params);
    const page = await Q.api('GET', path + Q.qs(q));
    items = items.concat(page.items);
    token = page.next_page;
    if (!token || page.items.length === 0) break;
  }
  return items;
};

// Money: micro-dollars as US dollars. Sub-cent amounts keep their digits
// (a single echo call costs $0.000063) instead of showing as $0.00.
Q.money = function (micros) {
  if (micros === null || micros === undefined) return '—';
  const usd = micros / 1e6;
  const small = micros !== 0 && Math.abs(usd) < 0.01;
  return new Intl.NumberFormat('en-US', {
    style: 'currency',
    currency: 'USD',
    minimumFractionDigits: 2,
    maximumFractionDigits: small ? 6 : 2,
  }).format(usd);
};

Q.num = (n) => (n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US'));

// A time in the browser's zone, with UTC on hover.
Q.time = function (iso, empty) {
  if (!iso) return Q.h('span', { class: 'muted', text: empty || 'never' });
  const d = new Date(iso);
  const utc = d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  return Q.h('time', { datetime: iso, title: utc, text: d.toLocaleString() });
};

// The first of this month and of the next, as YYYY-MM-DD (UTC), the
// default window of usage reports.
Q.monthRange = function () {
  const now = new Date();
  const from = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  const to = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
  return { from: from.toISOString().slice(0, 10), to: to.toISOString().slice(0, 10) };
};

Q.badge = function (status) {
  return Q.h('span', { class: 'badge ' + status, text: status });
};

// Spend against a cap, as a bar with the figures beside it.
Q.capBar = function (spend, cap) {
  const pct = cap ? Math.min(100, (spend / cap) * 100) : 0;
  const level = !cap ? 'none' : pct >= 100 ? 'full' : pct >= 80 ? 'high' : 'ok';
  const label = cap ? Q.money(spend) + ' of ' + Q.money(cap) : Q.money(spend) + ' (no cap)';
  return Q.h(
    'div',
    { class: 'capbar', title: cap ? Math.round(pct) + '% of the cap' : 'no cap' },
    Q.svg(
      'svg',
      { class: 'bar ' + level, viewBox: '0 0 100 6', preserveAspectRatio: 'none', 'aria-hidden': 'true' },
      Q.svg('rect', { class: 'track', x: 0, y: 0, width: 100, height: 6, rx: 3 }),
      Q.svg('rect', { class: 'fill', x: 0, y: 0, width: pct.toFixed(2), height: 6, rx: 3 })
    ),
    Q.h('span', { class: 'capfig', text: label })
  );
};

// Errors are always shown, never swallowed: a banner the user dismisses.
Q.showError = function (err) {
  const box = document.getElementById('errors');
  const msg = err && err.message ? err.message : String(err);
  const banner = Q.h(
    'div',
    { class: 'error' },
    Q.h('span', { text: msg }),
    Q.h('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss', text: '×', onclick: () => banner.remove() })
  );
  box.append(banner);
  if (typeof console !== 'undefined') console.warn('qlaud console:', msg);
};

Q.notice = function (text) {
  const box = document.getElementById('errors');
  const n = Q.h('div', { class: 'notice', role: 'status', text });
  box.append(n);
  setTimeout(() => n.remove(), 4000);
};

// Runs an async action, showing its error if it fails.
Q.guard = async function (fn) {
  try {
    return await fn();
  } catch (e) {
    Q.showError(e);
    return undefined;
  }
};

// A modal dialog (native <dialog>: focus stays inside, Escape closes).
// `build(close)` returns its content; resolves with what close() was given.
Q.dialog = function (title, build) {
  return new Promise((resolve) => {
    const dlg = Q.h('dialog', { 'aria-labelledby': 'dlg-title' });
    let result;
    const close = (value) => {
      result = value;
      dlg.close();
    };
    dlg.addEventListener('close', () => {
      dlg.remove();
      resolve(result);
    });
    Q.append(dlg, [Q.h('h2', { id: 'dlg-title', text: title }), build(close)]);
    document.body.append(dlg);
    dlg.showModal();
    // The button a dialog marks (its confirmation) gets focus, else its
    // first field, so Enter does what the dialog is for.
    const first = dlg.querySelector('[autofocus]') || dlg.querySelector('input, select, textarea, button');
    if (first) first.focus();
  });
};

Q.confirm = function (title, message, confirmLabel) {
  return Q.dialog(title, (close) =>
    Q.h(
      'div',
      null,
      Q.h('p', { text: message }),
      Q.h(
        'div',
        { class: 'actions' },
        Q.h('button', { type: 'button', class: 'secondary', text: 'Cancel', onclick: () => close(false) }),
        Q.h('button', { type: 'button', class: 'danger', autofocus: true, text: confirmLabel, onclick: () => close(true) })
      )
    )
  );
};

Q.copy = async function (text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = 'Copied';
  } catch (_) {
    button.textContent = 'Select and copy (Ctrl+C)';
  }
};

// A secret, shown once: the only place it ever appears.
Q.showSecret = function (title, secret, note) {
  return Q.dialog(title, (close) => {
    const field = Q.h('input', { class: 'secret', readonly: true, value: secret, 'aria-label': 'Secret', onfocus: (e) => e.target.select() });
    const copyBtn = Q.h('button', { type: 'button', class: 'secondary', text: 'Copy', onclick: () => Q.copy(secret, copyBtn) });
    return Q.h(
      'div',
      null,
      Q.h('p', { class: 'warn', text: note || 'Copy this secret now: qlaud keeps only a hash and will not show it again.' }),
      Q.h('div', { class: 'secret-row' }, field, copyBtn),
      Q.h('div', { class: 'actions' }, Q.h('button', { type: 'button', class: 'primary', text: 'Done', onclick: () => close(true) }))
    );
  });
};

// A table. columns: {label, render(row) → node/text, sort?: key, num?}.
// `sorting` = {sort, dir, onSort(key)} makes headers buttons.
Q.table = function (columns, rows, empty, sorting, caption) {
  if (!rows.length) return Q.h('div', { class: 'empty' }, empty);
  const head = columns.map((c) => {
    const cls = (c.num ? 'num ' : '') + (c.hide ? 'hide-narrow' : '');
    if (!sorting || !c.sort) return Q.h('th', { scope: 'col', class: cls, text: c.label });
    const active = sorting.sort === c.sort;
    const aria = active ? (sorting.dir === 'desc' ? 'descending' : 'ascending') : null;
    return Q.h(
      'th',
      { scope: 'col', class: cls, 'aria-sort': aria },
      Q.h('button', { type: 'button', class: 'sort', onclick: () => sorting.onSort(c.sort) }, c.label, active ? (sorting.dir === 'desc' ? ' ↓' : ' ↑') : '')
    );
  });
  const body = rows.map((r) =>
    Q.h('tr', null, columns.map((c) => Q.h('td', { class: (c.num ? 'num ' : '') + (c.hide ? 'hide-narrow' : ''), 'data-label': c.label }, c.render(r))))
  );
  return Q.h(
    'div',
    { class: 'table-wrap' },
    Q.h('table', null, caption ? Q.h('caption', { class: 'sr-only', text: caption }) : null, Q.h('thead', null, Q.h('tr', null, head)), Q.h('tbody', null, body))
  );
};

// Saves rows as a CSV file.
Q.downloadCsv = function (filename, header, rows) {
  const cell = (v) => {
    const s = v === null || v === undefined ? '' : String(v);
    return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  };
  const text = [header, ...rows].map((r) => r.map(cell).join(',')).join('\r\n') + '\r\n';
  const url = URL.createObjectURL(new Blob([text], { type: 'text/csv' }));
  const a = Q.h('a', { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
};

Q.card = (label, value, sub) =>
  Q.h('div', { class: 'card' }, Q.h('div', { class: 'card-label', text: label }), Q.h('div', { class: 'card-value', text: value }), sub ? Q.h('div', { class: 'card-sub', text: sub }) : null);

Q.section = (title, ...children) => Q.h('section', { class: 'panel' }, Q.h('h2', { text: title }), children);
