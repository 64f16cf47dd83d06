// Home: store KPIs over a chosen period with sparklines and the change against the period before, messages
// sent and the revenue they brought, and the journey-stage funnel. One request (/api/dashboard) — the figures
// are aggregated by the analytics run, not here.
import { get } from '../api.js';
import { h, mount, errorBox } from '../dom.js';
import { t, formatMoney, formatNumber, formatPercent, formatDate } from '../i18n.js';
import { sparkline, funnelChart } from '../charts.js';

const PERIODS = [7, 30, 90, 365];

export async function render(main, _params, query) {
  const days = PERIODS.includes(Number(query.get('days'))) ? Number(query.get('days')) : 30;
  const picker = h('div', { class: 'segmented', role: 'group', 'aria-label': t('home.period') },
    PERIODS.map((d) => h('a', {
      href: `/admin/?days=${d}`, 'data-link': true, class: d === days ? 'active' : '', 'aria-current': d === days ? 'true' : false,
    }, t('home.last_days', { days: d }))));
  const body = h('div', {}, h('p', { class: 'loading' }, t('app.loading')));
  mount(main, h('div', { class: 'page-head' }, h('h1', {}, t('nav.home')), picker), body);
  let data;
  try {
    data = await get('/api/dashboard', { days });
  } catch (error) {
    mount(body, errorBox(error), h('p', {}, t('home.no_run')));
    return;
  }
  const k = data.kpis?.current || {};
  const prev = data.kpis?.previous || {};
  const daily = data.kpis?.daily || [];
  const cards = [
    ['revenue', formatMoney(k.revenue), k.revenue, prev.revenue, daily.map((d) => d.revenue), formatMoney],
    ['orders', formatNumber(k.orders), k.orders, prev.orders, daily.map((d) => d.orders), formatNumber],
    ['aov', formatMoney(k.aov), k.aov, prev.aov, daily.map((d) => (d.orders ? d.revenue / d.orders : null)), formatMoney],
    ['active_customers', formatNumber(k.active_customers), k.active_customers, prev.active_customers, daily.map((d) => d.customers), formatNumber],
    ['repeat_rate', formatPercent(k.repeat_purchase_rate), k.repeat_purchase_rate, prev.repeat_purchase_rate, null, formatPercent],
    ['new_customers', formatNumber(k.new_customers), k.new_customers, prev.new_customers, null, formatNumber],
    ['messages_sent', formatNumber(data.messaging.sent), null, null, null, formatNumber],
    ['attributed_revenue', formatMoney(data.messaging.revenue), null, null, null, formatMoney],
  ];
  const grid = h('div', { class: 'kpis' });
  for (const [key, shown, now, before, series, format] of cards) {
    const spark = h('div', { class: 'spark' });
    const card = h('section', { class: 'kpi card', 'aria-label': t(`home.kpi.${key}`), dataset: { kpi: key } },
      h('h2', {}, t(`home.kpi.${key}`)),
      h('p', { class: 'value' }, shown),
      change(now, before),
      spark);
    grid.append(card);
    if (series && series.length > 1) sparkline(spark, series.map((v) => v ?? 0), { format, label: t(`home.kpi.${key}`) });
  }
  const funnel = h('div', { class: 'chart-box' });
  const stages = data.journey?.stages || [];
  mount(body,
    h('p', { class: 'muted' }, t('home.as_of', { date: formatDate(data.as_of, true), days })),
    data.kpis ? null : h('p', { class: 'warning' }, t('home.no_kpis')),
    grid,
    h('section', { class: 'card' }, h('h2', {}, t('home.funnel')), h('p', { class: 'muted' }, t('home.funnel_hint')), funnel));
  funnelChart(funnel, { stages: stages.map((s) => ({ label: t(`stage.${s.stage}`), value: s.reached })), format: formatNumber, label: t('home.funnel'), width: 1100 });
}

function change(now, before) {
  if (now === null || now === undefined || !before) return h('p', { class: 'change muted' }, '\u00a0');
  const ratio = (now - before) / Math.abs(before);
  const up = ratio >= 0;
  return h('p', { class: `change ${up ? 'up' : 'down'}` },
    `${up ? '▲' : '▼'} ${formatPercent(Math.abs(ratio))} `, h('span', { class: 'muted' }, t('home.vs_previous')));
}
