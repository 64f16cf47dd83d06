// Flows: every flow with its status and headline numbers, and the starter flows to install.
import { get, post } from '../api.js';
import { h, mount, table, link, errorBox } from '../dom.js';
import { t, formatNumber, formatMoney } from '../i18n.js';
import { navigate } from '../app.js';

export async function render(main) {
  const [{ flows }, { starters }] = await Promise.all([get('/api/flows'), get('/api/flows/starters')]);
  const installed = new Set(flows.map((f) => f.name));
  const status = h('div', { class: 'form-status', role: 'status' });
  mount(main,
    h('h1', {}, t('nav.flows')),
    h('section', { class: 'card' }, table([
      { label: t('flows.name'), value: (f) => link(`/admin/flows/${encodeURIComponent(f.name)}`, f.name) },
      { label: t('flows.status'), value: (f) => h('span', { class: `badge ${f.status}`, dataset: { flowStatus: f.name } }, t(`flows.status.${f.status}`)) },
      { label: t('flows.description'), value: (f) => f.definition?.description || '' },
      { label: t('flows.entered'), value: (f) => formatNumber(f.entered), class: 'num' },
      { label: t('flows.in_progress'), value: (f) => formatNumber(f.in_progress), class: 'num' },
      { label: t('flows.messages'), value: (f) => formatNumber(f.messages_queued), class: 'num' },
      { label: t('flows.conversions'), value: (f) => formatNumber(f.conversions), class: 'num' },
      { label: t('flows.version'), value: (f) => `v${f.version}${f.live_version ? ` (${t('flows.live', { version: f.live_version })})` : ''}` },
    ], flows, { empty: t('flows.none') })),
    h('section', { class: 'card' },
      h('h2', {}, t('flows.starters')),
      status,
      table([
        { label: t('flows.name'), value: (s) => s.name },
        { label: t('flows.description'), value: (s) => s.definition?.description || '' },
        { label: t('flows.templates'), value: (s) => (s.templates || []).join(', ') },
        {
          label: '', value: (s) => (installed.has(s.name)
            ? link(`/admin/flows/${encodeURIComponent(s.name)}`, t('flows.open'))
            : h('button', {
              type: 'button', class: 'secondary', onclick: async () => {
                try {
                  await post(`/api/flows/starters/${encodeURIComponent(s.name)}`, {});
                  navigate(`/admin/flows/${encodeURIComponent(s.name)}`);
                } catch (error) {
                  mount(status, errorBox(error));
                }
              },
            }, t('flows.install'))),
        },
      ], starters)));
}
