// qlaud console: overview, usage, billing and models. Each view reads the
// public API and shows what it says.
'use strict';

Q.pages.overview = async function (main) {
  const range = Q.monthRange();
  const [usage, keys] = await Promise.all([
    Q.api('GET', '/v1/usage' + Q.qs(range)),
    Q.allPages('/v1/keys', { sort: 'spend', direction: 'desc' }, 5),
  ]);
  const t = usage.totals;
  const capped = keys
    .filter((k) => k.max_spend_micros && k.status !== 'revoked' && k.spend_micros >= 0.8 * k.max_spend_micros)
    .sort((a, b) => b.spend_micros / b.max_spend_micros - a.spend_micros / a.max_spend_micros);
  const suspended = keys.filter((k) => k.status === 'suspended');
  const keyLink = (id, name) => Q.h('a', { href: '#/keys/' + encodeURIComponent(id), text: name });
  const noKeys = Q.h('p', null, 'No spend yet this month. ', Q.h('a', { href: '#/keys', text: 'Mint a key' }), ' for a user and send a request with it (the offline ', Q.h('code', { text: 'echo' }), ' model works with no provider account).');
  Q.clear(
    main,
    Q.h('div', { class: 'page-head' }, Q.h('h1', { text: 'Overview' }), Q.h('span', { class: 'muted', text: range.from + ' to ' + range.to + ' (UTC)' })),
    Q.h(
      'div',
      { class: 'cards' },
      Q.card('Spend this month', Q.money(t.cost_micros)),
      Q.card('Requests', Q.num(t.requests)),
      Q.card('Input tokens', Q.num(t.input_tokens + t.cache_read_tokens + t.cache_write_tokens)),
      Q.card('Output tokens', Q.num(t.output_tokens))
    ),
    Q.section('Spend per day, by model', Q.spendChart(usage, 'Spend per day this month, stacked by model')),
    Q.h(
      'div',
      { class: 'two' },
      Q.section(
        'Top spenders',
        Q.table(
          [
            { label: 'Key', render: (r) => keyLink(r.key_id, r.key_name) },
            { label: 'Spend', num: true, render: (r) => Q.money(r.cost_micros) },
            { label: 'Requests', num: true, render: (r) => Q.num(r.requests) },
          ],
          usage.by_key.slice(0, 10),
          noKeys,
          null,
          'Top 10 keys by spend this month'
        )
      ),
      Q.section(
        'Near or at their cap',
        Q.table(
          [
            { label: 'Key', render: (k) => keyLink(k.id, k.name) },
            { label: 'Spend / cap', render: (k) => Q.capBar(k.spend_micros, k.max_spend_micros) },
          ],
          capped,
          Q.h('p', { text: 'No key has spent 80% of its cap. Caps are set per key on the Keys page.' }),
          null,
          'Keys at 80% of their cap or more'
        )
      )
    ),
    Q.section(
      'Suspended keys',
      Q.table(
        [
          { label: 'Key', render: (k) => keyLink(k.id, k.name) },
          { label: 'Customer', render: (k) => k.metadata.stripe_customer_id || '—' },
          { label: 'Since', render: (k) => Q.time(k.suspended_at) },
        ],
        suspended,
        Q.h('p', { text: 'No suspended keys. A failed Stripe payment suspends its customer’s keys until the invoice is paid.' }),
        null,
        'Suspended keys'
      )
    )
  );
};

// Usage over a chosen range, grouped by key, model or day, with CSV export.
Q.pages.usage = async function (main) {
  const st = Q.usageState || (Q.usageState = Object.assign({ group: 'key' }, Q.monthRange()));
  const from = Q.h('input', { type: 'date', value: st.from, required: true });
  const to = Q.h('input', { type: 'date', value: st.to, required: true });
  const group = Q.h('select', null, [['key', 'Key'], ['model', 'Model'], ['day', 'Day']].map(([v, l]) => Q.h('option', { value: v, selected: v === st.group, text: l })));
  const out = Q.h('div');
  const form = Q.h(
    'form',
    { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); Q.guard(load); } },
    Q.h('label', { class: 'field inline' }, Q.h('span', { text: 'From' }), from),
    Q.h('label', { class: 'field inline' }, Q.h('span', { text: 'To (exclusive)' }), to),
    Q.h('label', { class: 'field inline' }, Q.h('span', { text: 'Group by' }), group),
    Q.h('button', { type: 'submit', class: 'primary', text: 'Show' })
  );
  group.addEventListener('change', () => Q.guard(load));
  Q.clear(main, Q.h('div', { class: 'page-head' }, Q.h('h1', { text: 'Usage' })), form, out);
  async function load() {
    Object.assign(st, { from: from.value, to: to.value, group: group.value });
    const report = await Q.api('GET', '/v1/usage' + Q.qs({ from: st.from, to: st.to }));
    const label = { key: (r) => r.key_name, model: (r) => r.model, day: (r) => r.date }[st.group];
    const rows = { key: report.by_key, model: report.by_model, day: report.by_day }[st.group];
    const sums = [
      { label: 'Spend', num: true, render: (r) => Q.money(r.cost_micros) },
      { label: 'Requests', num: true, render: (r) => Q.num(r.requests) },
      { label: 'Input', num: true, hide: true, render: (r) => Q.num(r.input_tokens) },
      { label: 'Output', num: true, hide: true, render: (r) => Q.num(r.output_tokens) },
      { label: 'Cache read', num: true, hide: true, render: (r) => Q.num(r.cache_read_tokens) },
      { label: 'Cache write', num: true, hide: true, render: (r) => Q.num(r.cache_write_tokens) },
    ];
    const first = st.group === 'key'
      ? { label: 'Key', render: (r) => Q.h('a', { href: '#/keys/' + encodeURIComponent(r.key_id), text: r.key_name }) }
      : { label: st.group === 'model' ? 'Model' : 'Day (UTC)', render: label };
    const csv = () => {
      const head = [st.group === 'key' ? 'key_id' : null, st.group, 'cost_micros', 'cost_usd', 'requests', 'input_tokens', 'output_tokens', 'cache_read_tokens', 'cache_write_tokens'].filter(Boolean);
      const body = rows.map((r) => [st.group === 'key' ? r.key_id : null, label(r), r.cost_micros, (r.cost_micros / 1e6).toFixed(6), r.requests, r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens].filter((v) => v !== null));
      Q.downloadCsv(`qlaud-usage-${st.group}-${st.from}-${st.to}.csv`, head, body);
    };
    Q.clear(
      out,
      Q.h('div', { class: 'cards' }, Q.card('Spend', Q.money(report.totals.cost_micros)), Q.card('Requests', Q.num(report.totals.requests))),
      Q.section('Spend per day, by model', Q.spendChart(report, 'Spend per day from ' + st.from + ' to ' + st.to)),
      Q.h(
        'section',
        { class: 'panel' },
        Q.h('div', { class: 'page-head' }, Q.h('h2', { text: 'By ' + st.group }), Q.h('button', { type: 'button', class: 'secondary', text: 'Export CSV', disabled: !rows.length, onclick: csv })),
        Q.table([first, ...sums], rows, Q.h('p', { text: 'No requests in this range. Pick another range, or send a request with one of your keys.' }), null, 'Usage by ' + st.group)
      )
    );
  }
  await load();
};

// Stripe settings (secrets write-only), the webhook URL, meter events and
// where the push stands.
Q.pages.billing = async function (main) {
  const s = await Q.api('GET', '/v1/billing/settings');
  const setChip = (on) => Q.h('span', { class: 'badge ' + (on ? 'active' : 'disabled'), text: on ? 'set' : 'not set' });
  const sk = Q.h('input', { type: 'password', autocomplete: 'off', placeholder: s.stripe_secret_key_set ? 'set — type to replace' : 'sk_live_… or rk_…' });
  const wh = Q.h('input', { type: 'password', autocomplete: 'off', placeholder: s.webhook_secret_set ? 'set — type to replace' : 'whsec_…' });
  const meter = Q.h('input', { value: s.meter_event_name, required: true });
  const alert = Q.h('input', { type: 'url', value: s.alert_webhook_url || '', placeholder: 'https://app.example.com/qlaud-alerts' });
  const error = Q.h('p', { class: 'form-error', role: 'alert' });
  const form = Q.h(
    'form',
    {
      onsubmit: async (e) => {
        e.preventDefault();
        error.textContent = '';
        const body = { meter_event_name: meter.value.trim(), alert_webhook_url: alert.value.trim() };
        if (sk.value) body.stripe_secret_key = sk.value.trim();
        if (wh.value) body.webhook_secret = wh.value.trim();
        try {
          const saved = await Q.api('PATCH', '/v1/billing/settings', body);
          sk.value = '';
          wh.value = '';
          if (saved.alert_signing_secret) await Q.showSecret('Alert signing secret', saved.alert_signing_secret, 'Spend alerts are signed with this secret. Store it now: it is shown only once.');
          Q.notice('Billing settings saved');
          Q.route();
        } catch (err) {
          error.textContent = err.message;
        }
      },
    },
    Q.h('label', { class: 'field' }, Q.h('span', null, 'Stripe secret key ', setChip(s.stripe_secret_key_set)), sk),
    Q.h('label', { class: 'field' }, Q.h('span', null, 'Webhook signing secret ', setChip(s.webhook_secret_set)), wh),
    Q.h('label', { class: 'field' }, Q.h('span', { text: 'Meter event name' }), meter),
    Q.h('label', { class: 'field' }, Q.h('span', { text: 'Spend alert URL' }), alert),
    Q.h('small', { class: 'muted', text: 'Secrets are write-only: qlaud never shows them again, only whether they are set.' }),
    error,
    Q.h('div', { class: 'actions left' }, Q.h('button', { type: 'submit', class: 'primary', text: 'Save settings' }))
  );
  const url = location.origin + s.webhook_path;
  const urlField = Q.h('input', { readonly: true, value: url, 'aria-label': 'Webhook URL', onfocus: (e) => e.target.select() });
  const copyBtn = Q.h('button', { type: 'button', class: 'secondary', text: 'Copy', onclick: () => Q.copy(url, copyBtn) });
  const p = s.stripe_push;
  const run = p.last_run;
  const push = Q.h(
    'dl',
    { class: 'facts' },
    [
      ['Events accepted by Stripe', Q.num(p.events_pushed)],
      ['Amount pushed', Q.money(p.micros_pushed)],
      ['Last accepted', Q.time(p.last_pushed_at)],
      ['Last run', run ? Q.h('span', null, Q.time(run.at), ` · ${run.period}: ${run.sent} sent, ${run.already_sent} already sent, ${run.still_open} still open, ${run.failed} failed`) : Q.h('span', { class: 'muted', text: 'never: run qlaud billing push-stripe, or serve with --stripe-push-every-secs' })],
    ].map(([k, v]) => [Q.h('dt', { text: k }), Q.h('dd', null, v)])
  );
  const month = Q.h('input', { type: 'month', value: new Date().toISOString().slice(0, 7), 'aria-label': 'Month' });
  const preview = Q.h('div');
  const loadPreview = async () => {
    const ex = await Q.api('GET', '/v1/billing/meter_events' + Q.qs({ period: month.value }));
    Q.clear(
      preview,
      Q.table(
        [
          { label: 'Customer', render: (e) => e.payload.stripe_customer_id },
          { label: 'Key', render: (e) => Q.h('a', { href: '#/keys/' + encodeURIComponent(e.key_id), text: e.key_id }) },
          { label: 'Value (µ$)', num: true, render: (e) => Q.num(Number(e.payload.value)) + ' = ' + Q.money(Number(e.payload.value)) },
          { label: 'Identifier', hide: true, render: (e) => Q.h('code', { text: e.identifier }) },
        ],
        ex.events,
        Q.h('p', { text: 'No meter events for ' + ex.period + '. Keys need metadata stripe_customer_id and spend in the month.' }),
        null,
        'Meter events'
      )
    );
  };
  month.addEventListener('change', () => Q.guard(loadPreview));
  Q.clear(
    main,
    Q.h('div', { class: 'page-head' }, Q.h('h1', { text: 'Billing' })),
    Q.section('Stripe settings', form),
    Q.section('Webhook endpoint', Q.h('p', { text: 'Add this URL in Stripe as a webhook endpoint for invoice.payment_failed, invoice.paid, customer.subscription.updated and customer.subscription.deleted:' }), Q.h('div', { class: 'secret-row' }, urlField, copyBtn)),
    Q.section('Push to Stripe', push),
    Q.section('Meter events preview', Q.h('div', { class: 'toolbar' }, month), preview)
  );
  await loadPreview();
};

// The catalog with prices per unit, whatever units the server reports.
Q.pages.models = async function (main) {
  const list = await Q.api('GET', '/v1/models');
  const unit = (k) => k.replace(/_usd$/, '').replace(/_per_mtok$/, ' / 1M tokens').replace(/_per_/, ' / ').replace(/_/g, ' ');
  const price = (v) => new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', maximumFractionDigits: 6 }).format(Number(v));
  Q.clear(
    main,
    Q.h('div', { class: 'page-head' }, Q.h('h1', { text: 'Models' })),
    Q.h('p', { class: 'muted', text: 'Every model qlaud serves. Any key calls any of them through /v1/messages or /v1/chat/completions; a model without a price is never served.' }),
    Q.table(
      [
        { label: 'Model', render: (m) => Q.h('div', null, Q.h('code', { text: m.id }), Q.h('div', { class: 'muted', text: m.display_name })) },
        { label: 'Provider', hide: true, render: (m) => m.owned_by },
        { label: 'Prices', render: (m) => Q.h('ul', { class: 'prices' }, Object.entries(m.pricing || {}).map(([k, v]) => Q.h('li', null, Q.h('span', { text: unit(k) }), ' ', Q.h('strong', { text: price(v) })))) },
        { label: 'Context', num: true, hide: true, render: (m) => Q.num(m.context_window) },
        { label: 'Max output', num: true, hide: true, render: (m) => Q.num(m.max_output_tokens) },
      ],
      list.data,
      Q.h('p', { text: 'No models configured. Add providers and models in qlaud.toml.' }),
      null,
      'Models and prices'
    )
  );
};
