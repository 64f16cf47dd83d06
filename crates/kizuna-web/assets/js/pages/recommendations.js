// Recommendations: the placements and a preview of what one shows for a chosen customer or product, with the
// model's state.
import { get, post } from '../api.js';
import { h, mount, table, errorBox } from '../dom.js';
import { t, formatNumber, formatDate, formatMoney } from '../i18n.js';
import { barChart } from '../charts.js';

export async function render(main, _params, query) {
  const [{ placements }, status, last] = await Promise.all([
    get('/api/recommendations/placements'),
    get('/api/recommendations/status').catch((error) => ({ error })),
    get('/api/recommendations/evaluation').catch(() => ({ evaluation: null })),
  ]);
  const evaluationBox = h('div', { id: 'recs-evaluation' });
  const evaluateStatus = h('div', { class: 'form-status', role: 'status' });
  const placementSelect = h('select', { id: 'placement', 'aria-label': t('recs.placement') },
    placements.map((p) => h('option', { value: p.name, selected: p.name === query.get('placement') }, p.name)));
  const profile = h('input', { type: 'text', id: 'recs-profile', placeholder: t('recs.profile_placeholder'), 'aria-label': t('recs.profile') });
  const product = h('input', { type: 'text', id: 'recs-product', placeholder: t('recs.product_placeholder'), 'aria-label': t('recs.product') });
  const results = h('div', { id: 'recs-results', 'aria-live': 'polite' });
  const trainStatus = h('div', { class: 'form-status', role: 'status' });
  const show = async (event) => {
    event?.preventDefault();
    const params = { limit: 10 };
    const who = profile.value.trim();
    if (who) params[/^\d+$/.test(who) ? 'profile_id' : who.includes('@') ? 'email' : 'user_id'] = who;
    const item = product.value.trim();
    if (item) params[placementSelect.value.startsWith('cart') ? 'cart' : 'product'] = item;
    try {
      const result = await get(`/api/recommendations/${encodeURIComponent(placementSelect.value)}`, params);
      mount(results, table([
        { label: t('recs.product'), value: (r) => productName(r.product) },
        { label: t('recs.category'), value: (r) => (r.product?.categories || []).join(' › ') },
        { label: t('recs.price'), value: (r) => (r.product?.price !== undefined ? formatMoney(r.product.price, r.product.currency || undefined) : ''), class: 'num' },
        { label: t('recs.score'), value: (r) => formatNumber(r.score, { maximumFractionDigits: 3 }), class: 'num' },
        { label: t('recs.why'), value: (r) => [r.strategy, r.reason].filter(Boolean).join(' · ') },
      ], result.items, { empty: t('recs.none') }));
    } catch (error) {
      mount(results, errorBox(error));
    }
  };
  const model = status.model || {};
  mount(main,
    h('h1', {}, t('nav.recommendations')),
    h('section', { class: 'card' },
      h('h2', {}, t('recs.model')),
      status.error ? errorBox(status.error) : h('dl', { class: 'facts' },
        fact(t('recs.kind'), model.kind || '—'),
        fact(t('recs.trained_at'), formatDate(model.trained_at, true)),
        fact(t('recs.users'), formatNumber(model.users)),
        fact(t('recs.items'), formatNumber(model.items)),
        fact(t('recs.interactions'), formatNumber(model.interactions)),
        fact(t('recs.baskets'), formatNumber(status.baskets)),
        fact(t('recs.products'), formatNumber(status.products))),
      h('button', {
        type: 'button', class: 'secondary', onclick: async () => {
          try {
            await post('/api/recommendations/train', {});
            mount(trainStatus, h('span', { class: 'ok' }, t('recs.trained')));
          } catch (error) {
            mount(trainStatus, errorBox(error));
          }
        },
      }, t('recs.train')), trainStatus),
    h('section', { class: 'card' },
      h('h2', {}, t('recs.evaluation')),
      h('p', { class: 'muted' }, t('recs.evaluation_hint')),
      h('button', {
        type: 'button', class: 'secondary', id: 'recs-evaluate', onclick: async () => {
          mount(evaluateStatus, t('recs.evaluating'));
          try {
            const result = await post('/api/recommendations/evaluation', {});
            evaluateStatus.textContent = '';
            showEvaluation(evaluationBox, result.evaluation);
          } catch (error) {
            mount(evaluateStatus, errorBox(error));
          }
        },
      }, t('recs.evaluate')), evaluateStatus,
      evaluationBox),
    h('section', { class: 'card' },
      h('h2', {}, t('recs.preview')),
      h('form', { class: 'toolbar', onsubmit: show }, placementSelect, profile, product, h('button', { type: 'submit', id: 'recs-show' }, t('recs.show'))),
      results),
    h('section', { class: 'card' },
      h('h2', {}, t('recs.placements')),
      table([
        { label: t('recs.placement'), value: (p) => p.name },
        { label: t('recs.description'), value: (p) => p.description || '' },
        { label: t('recs.strategy'), value: (p) => p.strategy?.type || '' },
        { label: t('recs.fallback'), value: (p) => (p.fallback || []).map((f) => f.type).join(' → ') },
        { label: t('recs.limit'), value: (p) => p.limit, class: 'num' },
        { label: t('recs.builtin'), value: (p) => (p.builtin ? t('app.yes') : t('app.no')) },
      ], placements)));
  showEvaluation(evaluationBox, last.evaluation);
}

function showEvaluation(box, evaluation) {
  if (!evaluation) {
    mount(box, h('p', { class: 'muted' }, t('recs.no_evaluation')));
    return;
  }
  const chart = h('div', { class: 'chart-box', id: 'chart-recs-evaluation' });
  mount(box,
    h('p', { class: 'muted' }, t('recs.evaluated', {
      date: formatDate(evaluation.evaluated_at, true), users: formatNumber(evaluation.users),
      items: formatNumber(evaluation.items), interactions: formatNumber(evaluation.interactions),
    })),
    table([
      { label: t('recs.strategy'), value: (r) => r.strategy },
      { label: 'recall@20', value: (r) => formatNumber(r['recall@20'], { maximumFractionDigits: 4 }), class: 'num' },
      { label: 'NDCG@10', value: (r) => formatNumber(r['ndcg@10'], { maximumFractionDigits: 4 }), class: 'num' },
      { label: 'NDCG@100', value: (r) => formatNumber(r['ndcg@100'], { maximumFractionDigits: 4 }), class: 'num' },
      { label: t('recs.coverage'), value: (r) => formatNumber(r.coverage, { maximumFractionDigits: 3 }), class: 'num' },
      { label: t('recs.people_scored'), value: (r) => formatNumber(r.users), class: 'num' },
      { label: t('recs.train_seconds'), value: (r) => formatNumber(r.train_seconds, { maximumFractionDigits: 3 }), class: 'num' },
    ], evaluation.results),
    chart);
  barChart(chart, {
    categories: ['recall@20', 'NDCG@10', 'NDCG@100'],
    series: evaluation.results.map((r) => ({ name: r.strategy, values: [r['recall@20'], r['ndcg@10'], r['ndcg@100']] })),
    xLabel: t('recs.metric'), yLabel: t('recs.score'), yFormat: (v) => formatNumber(v, { maximumFractionDigits: 3 }),
    label: t('recs.evaluation'), height: 220, width: 1100,
  });
}

function fact(label, value) {
  return [h('dt', {}, label), h('dd', {}, value)];
}

function productName(product) {
  if (!product) return '';
  if (typeof product === 'string') return product;
  return product.title ? `${product.title} (${product.id})` : product.id;
}
