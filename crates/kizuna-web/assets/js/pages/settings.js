// Settings: sources and their write keys, admin API keys, each channel's provider with a connection test, and
// the store and sending policy the server runs with (set in the config file; shown here read-only).
import { get, post } from '../api.js';
import { h, mount, table, errorBox } from '../dom.js';
import { t, formatDate } from '../i18n.js';

export async function render(main, _params, _query, newKey) {
  const [{ sources }, { keys }, settings] = await Promise.all([
    get('/api/sources'),
    get('/api/keys'),
    get('/api/settings').catch((error) => ({ error })),
  ]);
  const sourceStatus = h('div', { class: 'form-status', role: 'status' });
  const keyStatus = h('div', { class: 'form-status', role: 'status' });
  const sourceName = h('input', { type: 'text', id: 'source-name', 'aria-label': t('settings.source_name'), placeholder: t('settings.source_name') });
  const trusted = h('input', { type: 'checkbox', id: 'source-trusted' });
  const keyName = h('input', { type: 'text', id: 'key-name', 'aria-label': t('settings.key_name'), placeholder: t('settings.key_name') });
  const rerender = () => render(main);

  mount(main,
    h('h1', {}, t('nav.settings')),
    h('section', { class: 'card' },
      h('h2', {}, t('settings.sources')),
      h('p', { class: 'muted' }, t('settings.sources_hint')),
      table([
        { label: t('settings.name'), value: (s) => s.name },
        { label: t('settings.write_key'), value: (s) => h('code', {}, s.write_key) },
        { label: t('settings.trusted'), value: (s) => (s.trusted ? t('app.yes') : t('app.no')) },
        { label: t('settings.data_kind'), value: (s) => s.data_kind || '' },
        { label: t('settings.state'), value: (s) => (s.revoked ? t('settings.revoked') : t('settings.active')) },
      ], sources),
      h('form', {
        class: 'toolbar', onsubmit: async (event) => {
          event.preventDefault();
          try {
            await post('/api/sources', { name: sourceName.value, trusted: trusted.checked });
            rerender();
          } catch (error) {
            mount(sourceStatus, errorBox(error));
          }
        },
      }, sourceName, h('label', {}, trusted, ' ', t('settings.trusted')), h('button', { type: 'submit' }, t('settings.create_source'))),
      sourceStatus),
    h('section', { class: 'card' },
      h('h2', {}, t('settings.keys')),
      table([
        { label: t('settings.name'), value: (k) => k.name },
        { label: t('settings.created'), value: (k) => formatDate(k.created_at, true) },
        { label: t('settings.state'), value: (k) => (k.revoked ? t('settings.revoked') : t('settings.active')) },
      ], keys),
      h('form', {
        class: 'toolbar', onsubmit: async (event) => {
          event.preventDefault();
          try {
            const created = await post('/api/keys', { name: keyName.value });
            render(main, null, null, created.secret);
          } catch (error) {
            mount(keyStatus, errorBox(error));
          }
        },
      }, keyName, h('button', { type: 'submit' }, t('settings.create_key'))),
      keyStatus,
      newKey ? h('div', { id: 'new-key' }, h('p', { class: 'ok' }, t('settings.key_shown_once')), h('code', { class: 'secret' }, newKey)) : null),
    settings.error ? errorBox(settings.error) : [
      h('section', { class: 'card' },
        h('h2', {}, t('settings.channels')),
        table([
          { label: t('settings.channel'), value: ([name]) => name },
          { label: t('settings.configured'), value: ([, c]) => (c.configured ? t('app.yes') : t('app.no')) },
          { label: t('settings.provider'), value: ([, c]) => (c.settings ? summary(c.settings) : '—') },
          { label: '', value: ([name, c]) => (c.configured ? testButton(name) : '') },
        ], Object.entries(settings.channels))),
      h('section', { class: 'card' },
        h('h2', {}, t('settings.store')),
        h('p', { class: 'muted' }, t('settings.from_config')),
        h('dl', { class: 'facts' }, Object.entries(settings.store || {}).map(([k, v]) => [h('dt', {}, t(`settings.store.${k}`)), h('dd', {}, String(v))])),
        h('h3', {}, t('settings.quiet_hours')),
        h('p', {}, settings.policy?.quiet_hours ? `${settings.policy.quiet_hours.start} – ${settings.policy.quiet_hours.end}` : t('settings.none')),
        h('h3', {}, t('settings.caps')),
        table([
          { label: t('settings.channel'), value: (c) => c.channel || t('messages.any') },
          { label: t('settings.cap'), value: (c) => JSON.stringify(c) },
        ], settings.policy?.caps || [], { empty: t('settings.none') }),
        h('p', {}, t('settings.opt_in'), ' ', settings.policy?.marketing_requires_opt_in ? t('app.yes') : t('app.no'))),
    ]);
}

function summary(settings) {
  return Object.entries(settings).filter(([, v]) => typeof v !== 'object').map(([k, v]) => `${k}: ${v}`).join(', ');
}

function testButton(channel) {
  const out = h('span', { class: 'form-status', role: 'status' });
  return h('span', {}, h('button', {
    type: 'button', class: 'secondary', dataset: { test: channel }, onclick: async () => {
      mount(out, t('settings.testing'));
      try {
        const result = await post(`/api/settings/channels/${channel}/test`, {});
        mount(out, h('span', { class: result.ok ? 'ok' : 'error' }, result.message));
      } catch (error) {
        mount(out, errorBox(error));
      }
    },
  }, t('settings.test_connection')), ' ', out);
}
