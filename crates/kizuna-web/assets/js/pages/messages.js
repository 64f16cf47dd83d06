// Messages: the templates, the delivery log (filtered and paged by the server) and what the messages brought in
// over the last 30 days per template.
import { get } from '../api.js';
import { h, mount, table, link, errorBox } from '../dom.js';
import { t, formatNumber, formatMoney, formatDate } from '../i18n.js';
import { navigate } from '../app.js';

const STATES = ['', 'queued', 'deferred', 'sending', 'sent', 'delivered', 'bounced', 'failed', 'suppressed', 'dropped'];
const CHANNELS = ['', 'email', 'sms', 'line', 'webhook'];

export async function render(main, _params, query) {
  const filters = Object.fromEntries(['state', 'channel', 'template', 'flow', 'profile_id', 'before'].map((k) => [k, query.get(k) || '']));
  // Each part fails alone (messaging may be off): the rest of the page still shows.
  const [templatesAnswer, log, report] = await Promise.all([
    get('/api/templates').catch((error) => ({ error, templates: [] })),
    get('/api/messages', { ...filters, limit: 50 }).catch((error) => ({ error })),
    get('/api/messaging/report', { group: 'template', days: 30 }).catch(() => ({ rows: [] })),
  ]);
  const templates = templatesAnswer.templates;
  const select = (name, values) => h('select', { name, 'aria-label': t(`messages.${name}`) },
    values.map((v) => h('option', { value: v, selected: v === filters[name] }, v ? v : t('messages.any'))));
  const templateInput = h('input', { type: 'text', name: 'template', value: filters.template, placeholder: t('messages.template'), 'aria-label': t('messages.template') });
  const flowInput = h('input', { type: 'text', name: 'flow', value: filters.flow, placeholder: t('messages.flow'), 'aria-label': t('messages.flow') });
  const stateSelect = select('state', STATES);
  const channelSelect = select('channel', CHANNELS);
  const form = h('form', {
    class: 'toolbar',
    onsubmit: (event) => {
      event.preventDefault();
      const params = new URLSearchParams();
      for (const [k, el] of [['state', stateSelect], ['channel', channelSelect], ['template', templateInput], ['flow', flowInput]]) if (el.value) params.set(k, el.value);
      navigate(`/admin/messages?${params}`);
    },
  }, stateSelect, channelSelect, templateInput, flowInput, h('button', { type: 'submit' }, t('messages.filter')));
  const byTemplate = Object.fromEntries((report.rows || []).map((r) => [r.key, r]));
  const next = new URLSearchParams(query);
  if (log.next_before) next.set('before', log.next_before);
  mount(main,
    h('h1', {}, t('nav.messages')),
    h('section', { class: 'card' },
      h('h2', {}, t('messages.templates')),
      templatesAnswer.error ? errorBox(templatesAnswer.error) : null,
      table([
        { label: t('messages.template'), value: (tpl) => link(`/admin/messages/templates/${encodeURIComponent(tpl.name)}`, tpl.name) },
        { label: t('messages.channel'), value: (tpl) => tpl.definition.channel },
        { label: t('messages.purpose'), value: (tpl) => tpl.definition.purpose || '' },
        { label: t('messages.description'), value: (tpl) => tpl.definition.description || '' },
        { label: t('messages.sent_30d'), value: (tpl) => formatNumber(byTemplate[tpl.name]?.sent ?? 0), class: 'num' },
        { label: t('messages.clicked'), value: (tpl) => formatNumber(byTemplate[tpl.name]?.clicked ?? 0), class: 'num' },
        { label: t('messages.revenue'), value: (tpl) => formatMoney(byTemplate[tpl.name]?.revenue ?? 0), class: 'num' },
      ], templates)),
    h('section', { class: 'card', id: 'delivery-log' },
      h('h2', {}, t('messages.log')),
      form,
      log.error ? errorBox(log.error) : table([
        { label: t('messages.created'), value: (m) => formatDate(m.created_at, true) },
        { label: t('messages.recipient'), value: (m) => (m.profile_id != null ? link(`/admin/customers/${m.profile_id}`, m.recipient || `#${m.profile_id}`) : m.recipient || '—') },
        { label: t('messages.template'), value: (m) => m.template },
        { label: t('messages.channel'), value: (m) => m.channel },
        { label: t('messages.state'), value: (m) => h('span', { class: `badge ${m.state}` }, m.state) },
        { label: t('messages.flow'), value: (m) => m.flow || '—' },
        { label: t('messages.detail'), value: (m) => m.error || m.reason || '' },
      ], log.messages, { empty: t('messages.none') }),
      log.next_before ? link(`/admin/messages?${next}`, t('app.older')) : null));
}
