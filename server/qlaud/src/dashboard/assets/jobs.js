// qlaud console: the jobs list (filtered by status, paged) and a job's
// page (its request's endpoint, outcome, cost, result or error), with
// cancel. Every view and action is one public API call.
'use strict';

const JOB_STATUSES = ['queued', 'in_progress', 'completed', 'failed', 'cancelled'];
const JOB_OPEN = ['queued', 'in_progress'];

Q.cancelJob = async function (job) {
  const what = job.status === 'queued'
    ? 'It has not started: it will never run, and what it held of the key’s budget is given back.'
    : 'It is running: its provider call is stopped and what it produced so far is billed.';
  const ok = await Q.confirm('Cancel job ' + job.id + '?', what, 'Cancel job');
  if (!ok) return null;
  const done = await Q.api('POST', '/v1/jobs/' + encodeURIComponent(job.id) + '/cancel');
  Q.notice('Job ' + job.id + (done.status === 'cancelled' ? ' cancelled' : ': cancel requested'));
  return done;
};

function cancelButton(job, after) {
  if (!JOB_OPEN.includes(job.status) || job.cancel_requested) return null;
  return Q.h('button', {
    type: 'button',
    class: 'secondary',
    text: 'Cancel',
    'aria-label': 'Cancel job ' + job.id,
    onclick: () => Q.guard(async () => { if (await Q.cancelJob(job)) after(); }),
  });
}

Q.pages.jobs = async function (main) {
  const st = Q.jobsState || (Q.jobsState = { status: '', tokens: [null], page: 0 });
  const status = Q.h(
    'select',
    { 'aria-label': 'Status' },
    Q.h('option', { value: '', text: 'All statuses', selected: st.status === '' }),
    JOB_STATUSES.map((s) => Q.h('option', { value: s, text: s.replace('_', ' '), selected: st.status === s }))
  );
  status.addEventListener('change', () => { st.status = status.value; Q.guard(() => load(true)); });
  const listBox = Q.h('div', { class: 'list' }, Q.h('p', { class: 'muted', text: 'Loading…' }));
  Q.clear(
    main,
    Q.h('div', { class: 'page-head' }, Q.h('h1', { text: 'Jobs' })),
    Q.h('div', { class: 'toolbar' }, Q.h('label', { class: 'field inline' }, Q.h('span', { text: 'Status' }), status)),
    listBox
  );
  async function load(reset) {
    if (reset) { st.tokens = [null]; st.page = 0; }
    const token = st.tokens[st.page];
    const q = token ? { page_token: token, limit: 25 } : { limit: 25, status: st.status };
    const page = await Q.api('GET', '/v1/jobs' + Q.qs(q));
    st.tokens[st.page + 1] = page.next_page;
    const empty = st.status
      ? Q.h('p', { text: 'No ' + st.status.replace('_', ' ') + ' jobs.' })
      : Q.h('p', null, 'No jobs yet. Submit one with ', Q.h('code', { text: 'POST /v1/jobs' }), ': the same body as a synchronous call, polled for its result.');
    const table = Q.table(
      [
        { label: 'Job', render: (j) => Q.h('a', { href: '#/jobs/' + encodeURIComponent(j.id), text: j.id }) },
        { label: 'Endpoint', render: (j) => Q.h('code', { text: j.endpoint }) },
        { label: 'Status', render: (j) => Q.badge(j.status) },
        { label: 'Key', hide: true, render: (j) => Q.h('a', { href: '#/keys/' + encodeURIComponent(j.key_id), text: j.key_id }) },
        { label: 'Cost', num: true, render: (j) => (j.cost_micros === null || j.cost_micros === undefined ? '—' : Q.money(j.cost_micros)) },
        { label: 'Submitted', hide: true, render: (j) => Q.time(j.created_at) },
        { label: '', render: (j) => cancelButton(j, () => Q.guard(() => load(false))) },
      ],
      page.items,
      empty,
      null,
      'Jobs, newest first'
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

// One job: what it ran, how it ended, what it cost, and its answer.
Q.pages.job = async function (main, id) {
  const job = await Q.api('GET', '/v1/jobs/' + encodeURIComponent(id));
  const reload = () => Q.guard(() => Q.pages.job(main, id));
  const facts = [
    ['Endpoint', Q.h('code', { text: job.endpoint })],
    ['Status', Q.badge(job.status)],
    ['Key', Q.h('a', { href: '#/keys/' + encodeURIComponent(job.key_id), text: job.key_id })],
    ['Cost', job.cost_micros === null || job.cost_micros === undefined ? '—' : Q.money(job.cost_micros)],
    ['Attempts', String(job.attempts)],
    ['Submitted', Q.time(job.created_at)],
    ['Started', Q.time(job.started_at, '—')],
    ['Finished', Q.time(job.completed_at, '—')],
  ];
  if (job.cancel_requested && JOB_OPEN.includes(job.status)) facts.push(['Cancel', 'requested']);
  if (job.webhook_url) facts.push(['Webhook', Q.h('code', { text: job.webhook_url })]);
  for (const [k, v] of Object.entries(job.metadata || {})) facts.push(['metadata.' + k, v]);
  const answer = job.error
    ? Q.section('Error', Q.h('p', { class: 'form-error', text: (job.error.code ? job.error.code + ': ' : '') + job.error.message }))
    : job.result
      ? Q.section('Result (HTTP ' + job.result.status_code + ')', Q.h('pre', { class: 'json', text: JSON.stringify(job.result.body, null, 2) }))
      : Q.section('Result', Q.h('p', { class: 'muted', text: 'Not finished yet.' }), Q.h('button', { type: 'button', class: 'secondary', text: 'Refresh', onclick: reload }));
  Q.clear(
    main,
    Q.h('p', null, Q.h('a', { href: '#/jobs', text: '← Jobs' })),
    Q.h('div', { class: 'page-head' }, Q.h('h1', { text: 'Job ' + job.id }), cancelButton(job, reload)),
    Q.section('Facts', Q.h('dl', { class: 'facts' }, facts.map(([k, v]) => [Q.h('dt', { text: k }), Q.h('dd', null, v)]))),
    answer
  );
};
