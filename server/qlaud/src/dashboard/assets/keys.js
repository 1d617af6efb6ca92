// qlaud console: the keys list, a key's page, and the dialogs that mint,
// edit, rotate and revoke keys. Every action is one public API call.
'use strict';

const PERIODS = ['monthly', 'weekly', 'daily', 'total'];
const WINDOW = { monthly: 'this month', weekly: 'this week', daily: 'today', total: 'in total' };

// "a=b" lines ⇄ a metadata object.
function metadataText(meta) {
  return Object.entries(meta || {}).map(([k, v]) => k + '=' + v).join('\n');
}
function parseMetadata(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const i = line.indexOf('=');
    if (i < 1) throw new Error('metadata lines look like key=value: ' + JSON.stringify(line));
    out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

function field(label, input, hint) {
  return Q.h('label', { class: 'field' }, Q.h('span', { text: label }), input, hint ? Q.h('small', { class: 'muted', text: hint }) : null);
}

function periodSelect(value) {
  return Q.h('select', { name: 'period' }, PERIODS.map((p) => Q.h('option', { value: p, selected: p === value, text: p })));
}

// The form shared by mint and edit; `submit(values)` makes the call.
function keyForm(close, key, submit) {
  const name = Q.h('input', { name: 'name', required: true, maxlength: 200, value: key ? key.name : '', autofocus: true, autocomplete: 'off' });
  const cap = Q.h('input', { name: 'cap', type: 'number', min: 0, step: 'any', inputmode: 'decimal', value: key && key.max_spend_usd !== null ? key.max_spend_usd : '', placeholder: 'no cap' });
  const period = periodSelect(key ? key.period : 'monthly');
  const meta = Q.h('textarea', { name: 'metadata', rows: 3, placeholder: 'stripe_customer_id=cus_…' });
  meta.value = metadataText(key && key.metadata);
  const scope = key ? null : Q.h('select', { name: 'scope' }, Q.h('option', { value: 'standard', text: 'standard (an end user)' }), Q.h('option', { value: 'admin', text: 'admin (full access)' }));
  const error = Q.h('p', { class: 'form-error', role: 'alert' });
  const form = Q.h(
    'form',
    {
      onsubmit: async (e) => {
        e.preventDefault();
        error.textContent = '';
        try {
          const values = {
            name: name.value.trim(),
            cap: cap.value === '' ? null : Number(cap.value),
            period: period.value,
            metadata: parseMetadata(meta.value),
            scope: scope ? scope.value : undefined,
          };
          close(await submit(values));
        } catch (err) {
          error.textContent = err.message;
        }
      },
    },
    field('Name', name, 'Your id for the end user, e.g. user_42'),
    field('Spend cap (USD)', cap, 'Leave empty for no cap'),
    field('Cap period', period, 'Windows follow UTC calendar boundaries'),
    field('Metadata', meta, 'One key=value per line; stripe_customer_id links Stripe'),
    scope ? field('Scope', scope) : null,
    error,
    Q.h(
      'div',
      { class: 'actions' },
      Q.h('button', { type: 'button', class: 'secondary', text: 'Cancel', onclick: () => close(null) }),
      Q.h('button', { type: 'submit', class: 'primary', text: key ? 'Save' : 'Mint key' })
    )
  );
  return form;
}

Q.mintKey = async function () {
  const minted = await Q.dialog('Mint a key', (close) =>
    keyForm(close, null, (v) => {
      const body = { name: v.name, period: v.period, metadata: v.metadata, scope: v.scope };
      if (v.cap !== null) body.max_spend_usd = v.cap;
      return Q.api('POST', '/v1/keys', body);
    })
  );
  if (!minted) return null;
  await Q.showSecret('Key “' + minted.name + '” minted', minted.secret);
  return minted;
};

Q.editKey = function (key) {
  return Q.dialog('Edit ' + key.name, (close) =>
    keyForm(close, key, (v) => {
      const body = { name: v.name, period: v.period, metadata: v.metadata };
      if (v.cap === null) {
        if (key.max_spend_usd !== null) body.remove_max_spend = true;
      } else body.max_spend_usd = v.cap;
      return Q.api('PATCH', '/v1/keys/' + encodeURIComponent(key.id), body);
    })
  );
};

Q.rotateKey = async function (key) {
  const ok = await Q.confirm('Rotate ' + key.name + '?', 'A new secret is issued and the current one stops working at once. Cap, spend and history stay.', 'Rotate secret');
  if (!ok) return null;
  const rotated = await Q.api('POST', '/v1/keys/' + encodeURIComponent(key.id) + '/rotate');
  await Q.showSecret('New secret for ' + key.name, rotated.secret);
  return rotated;
};

Q.revokeKey = async function (key) {
  const ok = await Q.confirm('Revoke ' + key.name + '?', 'The key stops working at once and for good. Its usage history stays. This cannot be undone.', 'Revoke key');
  if (!ok) return false;
  await Q.api('DELETE', '/v1/keys/' + encodeURIComponent(key.id));
  Q.notice('Key ' + key.name + ' revoked');
  return true;
};

Q.setDisabled = function (key, disabled) {
  return Q.api('PATCH', '/v1/keys/' + encodeURIComponent(key.id), { disabled });
};

// The keys list: search, sort, pages (cursor tokens kept for going back).
Q.pages.keys = async function (main) {
  const st = Q.keysState || (Q.keysState = { search: '', sort: 'created_at', dir: 'desc', revoked: false, tokens: [null], page: 0 });
  const search = Q.h('input', { type: 'search', placeholder: 'Search by name or id', value: st.search, 'aria-label': 'Search keys' });
  const revoked = Q.h('input', { type: 'checkbox', checked: st.revoked });
  const mint = Q.h('button', { type: 'button', class: 'primary', text: 'Mint key', onclick: () => Q.guard(async () => { if (await Q.mintKey()) load(true); }) });
  const listBox = Q.h('div', { class: 'list' }, Q.h('p', { class: 'muted', text: 'Loading…' }));
  let timer = null;
  search.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => { st.search = search.value.trim(); load(true); }, 250);
  });
  revoked.addEventListener('change', () => { st.revoked = revoked.checked; load(true); });
  Q.clear(
    main,
    Q.h('div', { class: 'page-head' }, Q.h('h1', { text: 'Keys' }), mint),
    Q.h('div', { class: 'toolbar' }, search, Q.h('label', { class: 'check' }, revoked, ' Show revoked')),
    listBox
  );
  const onSort = (key) => {
    if (st.sort === key) st.dir = st.dir === 'asc' ? 'desc' : 'asc';
    else { st.sort = key; st.dir = key === 'name' ? 'asc' : 'desc'; }
    load(true);
  };
  async function load(reset) {
    if (reset) { st.tokens = [null]; st.page = 0; }
    const token = st.tokens[st.page];
    const q = token ? { page_token: token, limit: 25 } : { limit: 25, search: st.search, sort: st.sort, direction: st.dir, include_revoked: st.revoked ? 'true' : '' };
    let page;
    try {
      page = await Q.api('GET', '/v1/keys' + Q.qs(q));
    } catch (e) {
      Q.clear(listBox, Q.h('p', { class: 'form-error', text: e.message }));
      throw e;
    }
    st.tokens[st.page + 1] = page.next_page;
    const empty = st.search
      ? Q.h('p', { text: 'No key matches “' + st.search + '”.' })
      : Q.h('p', null, 'No keys yet. ', Q.h('button', { type: 'button', class: 'link', text: 'Mint the first one', onclick: () => mint.click() }), ' for one of your users, then point their traffic at qlaud.');
    const table = Q.table(
      [
        { label: 'Name', sort: 'name', render: (k) => Q.h('a', { href: '#/keys/' + encodeURIComponent(k.id), text: k.name }) },
        { label: 'Spend / cap', sort: 'spend', render: (k) => Q.capBar(k.spend_micros, k.max_spend_micros) },
        { label: 'Period', hide: true, render: (k) => k.period },
        { label: 'Status', render: (k) => Q.badge(k.status) },
        { label: 'Last used', sort: 'last_used_at', hide: true, render: (k) => Q.time(k.last_used_at) },
        { label: 'Created', sort: 'created_at', hide: true, render: (k) => Q.time(k.created_at) },
      ],
      page.items,
      empty,
      { sort: st.sort, dir: st.dir, onSort },
      'Keys'
    );
    const more = page.items.length === 25 && page.next_page;
    const nav = Q.h(
      'div',
      { class: 'pager' },
      Q.h('button', { type: 'button', class: 'secondary', disabled: st.page === 0, text: '← Previous', onclick: () => { st.page--; Q.guard(() => load(false)); } }),
      Q.h('span', { class: 'muted', text: 'Page ' + (st.page + 1) }),
      Q.h('button', { type: 'button', class: 'secondary', disabled: !more, text: 'Next →', onclick: () => { st.page++; Q.guard(() => load(false)); } })
    );
    Q.clear(listBox, table, more || st.page ? nav : null);
  }
  await load(false);
};

// One key: facts, actions, spend chart, requests, status history.
Q.pages.key = async function (main, id) {
  const path = '/v1/keys/' + encodeURIComponent(id);
  const key = await Q.api('GET', path);
  const range = Q.monthRange();
  const [usage, events] = await Promise.all([
    Q.api('GET', '/v1/usage' + Q.qs({ key_id: id, from: range.from, to: range.to })),
    Q.api('GET', path + '/billing_events'),
  ]);
  const reload = () => Q.route();
  const live = key.status !== 'revoked';
  const act = (label, cls, fn) => Q.h('button', { type: 'button', class: cls, text: label, onclick: () => Q.guard(async () => { if (await fn()) reload(); }) });
  const actions = live
    ? Q.h(
        'div',
        { class: 'actions left' },
        act('Edit', 'secondary', () => Q.editKey(key)),
        act(key.disabled ? 'Enable' : 'Disable', 'secondary', () => Q.setDisabled(key, !key.disabled)),
        act('Rotate secret', 'secondary', () => Q.rotateKey(key)),
        act('Revoke', 'danger', () => Q.revokeKey(key))
      )
    : null;
  const facts = Q.h(
    'dl',
    { class: 'facts' },
    [
      ['Id', Q.h('code', { text: key.id })],
      ['Scope', key.scope],
      ['Secret', Q.h('code', { text: key.secret_hint })],
      ['Spend ' + WINDOW[key.period], Q.capBar(key.spend_micros, key.max_spend_micros)],
      ['Period', key.period],
      ['Last used', Q.time(key.last_used_at)],
      ['Created', Q.time(key.created_at)],
      ['Rotated', Q.time(key.rotated_at)],
      ['Revoked', Q.time(key.revoked_at, '—')],
      ['Suspended', Q.time(key.suspended_at, '—')],
      ['Metadata', Object.keys(key.metadata).length ? Q.h('code', { text: metadataText(key.metadata) }) : Q.h('span', { class: 'muted', text: 'none' })],
    ].map(([k, v]) => [Q.h('dt', { text: k }), Q.h('dd', null, v)])
  );
  const requestsBox = Q.h('div');
  const history = Q.table(
    [
      { label: 'When', render: (e) => Q.time(e.at) },
      { label: 'Change', render: (e) => e.old_status + ' → ' + e.new_status },
      { label: 'Stripe event', render: (e) => Q.h('span', null, e.stripe_event_type, ' ', Q.h('code', { text: e.stripe_event_id })) },
    ],
    events,
    Q.h('p', { text: 'No suspensions or reinstatements. Stripe webhooks about this key’s customer appear here.' }),
    null,
    'Status history'
  );
  Q.clear(
    main,
    Q.h('p', { class: 'crumbs' }, Q.h('a', { href: '#/keys', text: '← Keys' })),
    Q.h('div', { class: 'page-head' }, Q.h('h1', null, key.name, ' ', Q.badge(key.status))),
    actions,
    Q.section('Details', facts),
    Q.section('Spend this month', Q.spendChart(usage, 'Spend per day for ' + key.name)),
    Q.section('Requests', requestsBox),
    Q.section('Status history', history)
  );
  await Q.requestsTable(requestsBox, { key_id: id });
};

// A paged request log with a status filter.
Q.requestsTable = async function (box, filter) {
  const status = Q.h('select', { 'aria-label': 'Status' }, ['', '2xx', '4xx', '5xx'].map((s) => Q.h('option', { value: s, text: s || 'any status' })));
  const list = Q.h('div');
  const tokens = [null];
  let pageNo = 0;
  async function load() {
    const token = tokens[pageNo];
    const q = token ? { page_token: token, limit: 20 } : Object.assign({ limit: 20, status: status.value }, filter);
    const page = await Q.api('GET', '/v1/requests' + Q.qs(q));
    tokens[pageNo + 1] = page.next_page;
    const table = Q.table(
      [
        { label: 'Time', render: (r) => Q.time(r.created_at) },
        { label: 'Model', render: (r) => r.model },
        { label: 'Tokens in/out', num: true, hide: true, render: (r) => Q.num(r.input_tokens) + ' / ' + Q.num(r.output_tokens) },
        { label: 'Cost', num: true, render: (r) => Q.money(r.cost_micros) },
        { label: 'Status', num: true, render: (r) => Q.h('span', { class: r.status >= 400 ? 'bad' : 'good', text: r.status }) },
        { label: 'Latency', num: true, hide: true, render: (r) => Q.num(r.latency_ms) + ' ms' },
      ],
      page.items,
      Q.h('p', { text: 'No requests yet. Calls made with this key (any model, either API shape) appear here.' }),
      null,
      'Requests'
    );
    const more = page.items.length === 20 && page.next_page;
    Q.clear(
      list,
      table,
      !more && pageNo === 0 ? null : Q.h(
        'div',
        { class: 'pager' },
        Q.h('button', { type: 'button', class: 'secondary', disabled: pageNo === 0, text: '← Newer', onclick: () => { pageNo--; Q.guard(load); } }),
        Q.h('button', { type: 'button', class: 'secondary', disabled: !more, text: 'Older →', onclick: () => { pageNo++; Q.guard(load); } })
      )
    );
  }
  status.addEventListener('change', () => { tokens.length = 1; pageNo = 0; Q.guard(load); });
  Q.clear(box, Q.h('div', { class: 'toolbar' }, status), list);
  await load();
};
