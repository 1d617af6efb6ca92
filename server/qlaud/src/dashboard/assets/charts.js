// qlaud console: charts as inline SVG (no library). The SVG scales with its
// box (viewBox), so it fits a 375 px screen without scrolling the page.
'use strict';

// Every UTC day from `from` (inclusive) to `to` (exclusive), YYYY-MM-DD.
Q.days = function (from, to) {
  const out = [];
  const end = new Date(to + 'T00:00:00Z');
  for (let d = new Date(from + 'T00:00:00Z'); d < end && out.length < 400; d.setUTCDate(d.getUTCDate() + 1)) {
    out.push(d.toISOString().slice(0, 10));
  }
  return out;
};

// Spend per day stacked by model, from a usage report's by_day_and_model.
// Returns a figure with the chart, a legend, and a caption.
Q.spendChart = function (report, title) {
  const from = report.period.from.slice(0, 10);
  const to = report.period.to.slice(0, 10);
  const days = Q.days(from, to);
  const models = [...new Set(report.by_day_and_model.map((r) => r.model))];
  const value = {};
  for (const r of report.by_day_and_model) value[r.date + '\t' + r.model] = r.cost_micros;
  const totals = days.map((d) => models.reduce((s, m) => s + (value[d + '\t' + m] || 0), 0));
  const max = Math.max(...totals, 0);
  // One SVG unit per CSS pixel at the width the chart will get, so labels
  // stay readable from a phone to a desktop.
  const W = Math.round(Math.min(Math.max(window.innerWidth - 90, 280), 1060));
  const H = W < 500 ? 180 : 240;
  const left = 64;
  const bottom = 22;
  const top = 10;
  const plotH = H - bottom - top;
  const slot = (W - left - 4) / Math.max(days.length, 1);
  const barW = Math.max(1, slot * 0.72);
  const svg = Q.svg('svg', {
    class: 'chart',
    viewBox: `0 0 ${W} ${H}`,
    role: 'img',
    'aria-label': `${title}: ${Q.money(totals.reduce((a, b) => a + b, 0))} over ${days.length} days`,
  });
  // Axis: zero and the top value.
  svg.append(
    Q.svg('line', { class: 'axis', x1: left, y1: top + plotH, x2: W, y2: top + plotH }),
    Q.svg('line', { class: 'grid', x1: left, y1: top, x2: W, y2: top }),
    Q.svg('text', { class: 'tick', x: left - 6, y: top + plotH, 'text-anchor': 'end', 'dominant-baseline': 'middle', text: Q.money(0) }),
    Q.svg('text', { class: 'tick', x: left - 6, y: top + 4, 'text-anchor': 'end', 'dominant-baseline': 'middle', text: Q.money(max) })
  );
  // About one date label per 60 px, so labels never overlap.
  const labelEvery = Math.max(1, Math.ceil(days.length / Math.max(2, Math.floor((W - left) / 60))));
  days.forEach((d, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    let y = top + plotH;
    models.forEach((m, mi) => {
      const v = value[d + '\t' + m] || 0;
      if (!v || !max) return;
      const h = Math.max(1, (v / max) * plotH);
      y -= h;
      svg.append(
        Q.svg(
          'rect',
          { class: 'series s' + (mi % 8), x: x.toFixed(1), y: y.toFixed(1), width: barW.toFixed(1), height: h.toFixed(1), 'data-day': d, 'data-model': m },
          Q.svg('title', { text: `${d} · ${m}: ${Q.money(v)}` })
        )
      );
    });
    if (i % labelEvery === 0) {
      svg.append(Q.svg('text', { class: 'tick', x: (x + barW / 2).toFixed(1), y: H - 6, 'text-anchor': 'middle', text: d.slice(5) }));
    }
  });
  const legend = Q.h(
    'ul',
    { class: 'legend' },
    models.map((m, mi) =>
      Q.h('li', null, Q.svg('svg', { class: 'swatch', viewBox: '0 0 10 10', 'aria-hidden': 'true' }, Q.svg('rect', { class: 's' + (mi % 8), width: 10, height: 10, rx: 2 })), m)
    )
  );
  const empty = max === 0 ? Q.h('p', { class: 'muted', text: 'No spend in this window yet.' }) : null;
  return Q.h('figure', { class: 'chart-box' }, svg, legend, empty, Q.h('figcaption', { class: 'sr-only', text: title }));
};
