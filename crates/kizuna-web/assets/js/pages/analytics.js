// Analytics: cohort retention heat map, RFM grid, CLV and churn-risk distributions, the hold-out check of the
// models (predicted vs actual repeat orders) and revenue attributed to each flow per day. Every figure comes
// aggregated from the latest analytics run or the messaging report.
import { get, post } from '../api.js';
import { h, mount, errorBox } from '../dom.js';
import { t, formatPercent, formatMoney, formatNumber, formatDate } from '../i18n.js';
import { heatmap, barChart, lineChart } from '../charts.js';

export async function render(main) {
  const box = (id, title, hint) => {
    const chart = h('div', { class: 'chart-box', id });
    return [h('section', { class: 'card' }, h('h2', {}, title), hint ? h('p', { class: 'muted' }, hint) : null, chart), chart];
  };
  const [cohortCard, cohortBox] = box('chart-cohorts', t('analytics.cohorts'), t('analytics.cohorts_hint'));
  const [rfmCard, rfmBox] = box('chart-rfm', t('analytics.rfm'), t('analytics.rfm_hint'));
  const [clvCard, clvBox] = box('chart-clv', t('analytics.clv'));
  const [churnCard, churnBox] = box('chart-churn', t('analytics.churn'));
  const [holdoutCard, holdoutBox] = box('chart-holdout', t('analytics.holdout'), t('analytics.holdout_hint'));
  const [flowCard, flowBox] = box('chart-flow-revenue', t('analytics.flow_revenue'));
  const runStatus = h('div', { class: 'form-status', role: 'status' });
  const runs = await get('/api/analytics/runs', { limit: 1 });
  const last = runs.runs[0];
  mount(main,
    h('div', { class: 'page-head' },
      h('h1', {}, t('nav.analytics')),
      h('span', { class: 'muted' }, last ? t('analytics.last_run', { date: formatDate(last.finished_at || last.started_at, true), status: last.status }) : t('home.no_run')),
      h('button', {
        type: 'button', class: 'secondary', onclick: async () => {
          try {
            await post('/api/analytics/runs', {});
            mount(runStatus, h('span', { class: 'ok' }, t('analytics.run_started')));
          } catch (error) {
            mount(runStatus, errorBox(error));
          }
        },
      }, t('analytics.run_now')), runStatus),
    h('div', { class: 'grid-2' }, cohortCard, rfmCard, clvCard, churnCard, holdoutCard, flowCard));

  const guard = async (container, fn) => {
    try {
      await fn();
    } catch (error) {
      mount(container, errorBox(error));
    }
  };
  await Promise.all([
    guard(cohortBox, async () => {
      const { cohorts } = await get('/api/analytics/cohorts');
      const list = cohorts.cohorts || [];
      const months = Math.max(0, ...list.map((c) => c.retention.length));
      heatmap(cohortBox, {
        rows: list.map((c) => `${c.month} (${formatNumber(c.size)})`),
        columns: Array.from({ length: months }, (_, i) => `M${i}`),
        values: list.map((c) => Array.from({ length: months }, (_, i) => c.retention[i] ?? null)),
        format: (v) => formatPercent(v, 0), xLabel: t('analytics.months_since_first'), yLabel: t('analytics.cohort'), min: 0, max: 1,
        label: t('analytics.cohorts'), empty: t('charts.no_data'),
      });
    }),
    guard(rfmBox, async () => {
      const { rfm } = await get('/api/analytics/rfm');
      const grid = rfm.grid_recency_by_frequency || [];
      heatmap(rfmBox, {
        rows: grid.map((_, i) => `R${grid.length - i}`),
        columns: (grid[0] || []).map((_, i) => `F${i + 1}`),
        values: [...grid].reverse(),
        format: formatNumber, xLabel: t('analytics.frequency_score'), yLabel: t('analytics.recency_score'),
        label: t('analytics.rfm'), empty: t('charts.no_data'),
      });
    }),
    guard(clvBox, async () => {
      const { distributions } = await get('/api/analytics/distributions');
      histogram(clvBox, distributions.predicted_clv, (v) => formatMoney(v), t('analytics.clv'), t('analytics.customers'));
      histogram(churnBox, distributions.churn_risk, (v) => formatPercent(v, 0), t('analytics.churn'), t('analytics.customers'));
    }),
    guard(holdoutBox, async () => {
      const { holdout } = await get('/api/analytics/holdout');
      const report = holdout?.report;
      const groups = report?.groups || [];
      barChart(holdoutBox, {
        categories: groups.map((g) => g.label),
        series: [
          { name: t('analytics.actual'), values: groups.map((g) => g.actual) },
          ...(report?.models || []).map((m, i) => ({ name: t('analytics.predicted_by', { model: m }), values: groups.map((g) => g.predicted[i]) })),
        ],
        xLabel: t('analytics.orders_in_calibration'), yLabel: t('analytics.repeat_orders_in_holdout'),
        label: t('analytics.holdout'), empty: t('charts.no_data'),
      });
    }),
    guard(flowBox, async () => {
      const report = await get('/api/messaging/report', { group: 'flow', days: 90, interval: 'day' });
      const byFlow = new Map();
      for (const row of report.rows) {
        if (!row.key) continue;
        if (!byFlow.has(row.key)) byFlow.set(row.key, []);
        byFlow.get(row.key).push({ x: row.date, y: row.revenue });
      }
      lineChart(flowBox, {
        series: [...byFlow].map(([name, points]) => ({ name, points })),
        xType: 'time', xLabel: t('analytics.day'), yLabel: t('analytics.attributed_revenue'), yFormat: (v) => formatMoney(v),
        label: t('analytics.flow_revenue'), empty: t('analytics.no_flow_revenue'),
      });
    }),
  ]);
}

function histogram(container, distribution, format, label, yLabel) {
  if (!distribution?.histogram) {
    barChart(container, { categories: [], series: [], label, empty: t('charts.no_data') });
    return;
  }
  const { counts, edges } = distribution.histogram;
  const bounds = [null, ...edges, null];
  const categories = counts.map((_, i) => (bounds[i] === null ? `< ${format(bounds[i + 1])}` : bounds[i + 1] === null ? `≥ ${format(bounds[i])}` : `${format(bounds[i])}–${format(bounds[i + 1])}`));
  barChart(container, { categories, series: [{ name: yLabel, values: counts }], xLabel: label, yLabel, label });
}
