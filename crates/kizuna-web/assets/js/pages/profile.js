// The 360° profile: identities and how they were merged, traits with where each came from, consent, computed
// attributes and predictions, segments, flows, messages, and the event timeline (filtered and paged by the
// server, newest first).
import { get } from '../api.js';
import { h, mount, table, link, errorBox } from '../dom.js';
import { t, formatMoney, formatDate, formatPercent, formatNumber } from '../i18n.js';
import { displayName } from './customers.js';

const PREDICTIONS = ['p_alive', 'churn_risk', 'predicted_clv', 'expected_orders_90d', 'next_order_expected_at', 'rfm_segment', 'rfm_score', 'journey_stage'];

export async function render(main, params) {
  // An id merged into another profile resolves to the survivor: everything else is asked of the survivor.
  const profile = await get(`/api/profiles/${encodeURIComponent(params.id)}`);
  const id = profile.id;
  const [identities, segments, flows, messages] = await Promise.all([
    get(`/api/profiles/${encodeURIComponent(id)}/identities`),
    get(`/api/profiles/${encodeURIComponent(id)}/segments`).catch(() => ({ segments: [], history: [] })),
    get(`/api/profiles/${encodeURIComponent(id)}/flows`).catch(() => ({ runs: [] })),
    get('/api/messages', { profile_id: id, limit: 20 }).catch(() => ({ messages: [] })),
  ]);
  const c = profile.computed || {};
  const timeline = h('section', { class: 'card', id: 'timeline', 'aria-label': t('profile.timeline') });
  mount(main,
    h('div', { class: 'page-head' },
      h('h1', {}, displayName(profile)),
      h('span', { class: 'muted' }, t('profile.id', { id: profile.id }))),
    h('div', { class: 'kpis small' },
      stat(t('customers.orders'), formatNumber(c.orders_count ?? 0)),
      stat(t('customers.revenue'), formatMoney(c.revenue ?? 0)),
      stat(t('profile.clv'), formatMoney(c.predicted_clv)),
      stat(t('profile.churn_risk'), formatPercent(c.churn_risk)),
      stat(t('customers.stage'), c.journey_stage ? t(`stage.${c.journey_stage}`) : '—')),
    h('div', { class: 'columns' },
      h('div', {},
        section(t('profile.identities'), table([
          { label: t('profile.kind'), value: (i) => i.type },
          { label: t('profile.value'), value: (i) => i.value },
        ], identities.identities)),
        section(t('profile.merges'), table([
          { label: t('profile.when'), value: (m) => formatDate(m.at_ms, true) },
          { label: t('profile.merged_from'), value: (m) => `#${m.from}` },
          { label: t('profile.because'), value: (m) => `${m.identifier.type}: ${m.identifier.value}` },
          { label: t('profile.event'), value: (m) => m.message_id || '—' },
        ], identities.merges, { empty: t('profile.no_merges') }),
        identities.conflicts?.length ? h('p', { class: 'warning' }, t('profile.conflicts', { count: identities.conflicts.length })) : null),
        section(t('profile.traits'), table([
          { label: t('profile.trait'), value: ([k]) => k },
          { label: t('profile.value'), value: ([, v]) => showValue(v) },
          { label: t('profile.source'), value: ([k]) => profile.trait_meta?.[k]?.source || '—' },
          { label: t('profile.data_kind'), value: ([k]) => profile.trait_meta?.[k]?.data_kind || '—' },
          { label: t('profile.set_at'), value: ([k]) => formatDate(profile.trait_meta?.[k]?.set_at, true) },
        ], Object.entries(profile.traits || {}))),
        section(t('profile.consent'), table([
          { label: t('profile.channel'), value: ([k]) => k },
          { label: t('profile.status'), value: ([, v]) => showValue(v) },
        ], Object.entries(profile.consent || {}), { empty: t('profile.no_consent') }))),
      h('div', {},
        section(t('profile.predictions'), table([
          { label: t('profile.attribute'), value: (k) => k },
          { label: t('profile.value'), value: (k) => showValue(c[k]) },
        ], PREDICTIONS.filter((k) => k in c))),
        section(t('profile.segments'), table([
          { label: t('profile.segment'), value: (s) => link(`/admin/segments/${encodeURIComponent(s.name)}`, s.name) },
          { label: t('profile.since'), value: (s) => formatDate(s.since, true) },
        ], segments.segments || [], { empty: t('profile.no_segments') })),
        section(t('profile.flows'), table([
          { label: t('profile.flow'), value: (r) => link(`/admin/flows/${encodeURIComponent(r.flow)}`, r.flow) },
          { label: t('profile.status'), value: (r) => r.status },
          { label: t('profile.step'), value: (r) => r.step || '—' },
          { label: t('profile.entered'), value: (r) => formatDate(r.entered_at, true) },
        ], flows.runs || [], { empty: t('profile.no_flows') })),
        section(t('profile.messages'), table([
          { label: t('messages.template'), value: (m) => m.template },
          { label: t('messages.channel'), value: (m) => m.channel },
          { label: t('messages.state'), value: (m) => m.state },
          { label: t('messages.created'), value: (m) => formatDate(m.created_at, true) },
        ], messages.messages || [], { empty: t('profile.no_messages') })),
        section(t('profile.computed'), h('details', {}, h('summary', {}, t('profile.all_computed')),
          table([
            { label: t('profile.attribute'), value: ([k]) => k },
            { label: t('profile.value'), value: ([, v]) => showValue(v) },
          ], Object.entries(c).filter(([k]) => !PREDICTIONS.includes(k))))))),
    timeline);
  renderTimeline(timeline, id, { type: '', before: null });
}

function stat(label, value) {
  return h('div', { class: 'kpi card' }, h('h2', {}, label), h('p', { class: 'value' }, value));
}

function section(title, ...content) {
  return h('section', { class: 'card' }, h('h2', {}, title), ...content);
}

function showValue(v) {
  if (v === null || v === undefined) return '—';
  if (Array.isArray(v)) return v.map(showValue).join(', ');
  if (typeof v === 'object') return Object.entries(v).map(([k, x]) => `${k}: ${typeof x === 'object' ? JSON.stringify(x) : x}`).join(' · ');
  return String(v);
}

async function renderTimeline(container, id, filter) {
  const typeInput = h('input', { type: 'text', name: 'type', value: filter.type, placeholder: t('profile.filter_placeholder'), 'aria-label': t('profile.filter') });
  const form = h('form', {
    class: 'toolbar',
    onsubmit: (event) => {
      event.preventDefault();
      renderTimeline(container, id, { type: typeInput.value.trim(), before: null });
    },
  }, typeInput, h('button', { type: 'submit' }, t('profile.apply')));
  mount(container, h('h2', {}, t('profile.timeline')), form, h('p', { class: 'loading' }, t('app.loading')));
  let page;
  try {
    page = await get(`/api/profiles/${encodeURIComponent(id)}/events`, { limit: 25, type: filter.type, before: filter.before });
  } catch (error) {
    mount(container, h('h2', {}, t('profile.timeline')), form, errorBox(error));
    return;
  }
  const list = h('ol', { class: 'timeline' }, page.events.map((e) => {
    const m = e.message;
    const name = m.type === 'track' ? m.event : m.type;
    const details = m.properties || m.traits || {};
    return h('li', { dataset: { seq: e.seq } },
      h('time', { datetime: m.timestamp }, formatDate(m.timestamp, true)),
      h('strong', {}, name),
      h('span', { class: 'ids muted' }, [m.userId, m.anonymousId].filter(Boolean).join(' · ')),
      Object.keys(details).length ? h('details', {}, h('summary', {}, t('profile.properties')), h('pre', {}, JSON.stringify(details, null, 2))) : null);
  }));
  mount(container,
    h('h2', {}, t('profile.timeline')),
    form,
    page.events.length ? list : h('p', { class: 'muted' }, t('profile.no_events')),
    h('div', { class: 'pager' },
      filter.before ? h('button', { type: 'button', class: 'secondary', onclick: () => renderTimeline(container, id, { ...filter, before: null }) }, t('app.first_page')) : null,
      page.next_before ? h('button', { type: 'button', class: 'secondary', onclick: () => renderTimeline(container, id, { ...filter, before: page.next_before }) }, t('app.older')) : null));
}
