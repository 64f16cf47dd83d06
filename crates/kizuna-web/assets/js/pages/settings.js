// Settings: sources and their write keys, admin API keys, each channel's provider with a connection test, and
// the store (currency, time zone, locale) and sending policy (quiet hours, frequency caps, opt-in), editable:
// the server checks a change whole and names the field it refuses.
import { get, post, put } from '../api.js';
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
      storeAndPolicy(settings, main),
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

const CHANNELS = ['email', 'sms', 'line', 'webhook'];

function storeAndPolicy(settings, main) {
  const store = settings.store || {};
  const policy = structuredClone(settings.policy);
  const status = h('div', { class: 'form-status', role: 'status', id: 'settings-status' });
  const zones = h('datalist', { id: 'time-zones' }, (Intl.supportedValuesOf?.('timeZone') || []).map((z) => h('option', { value: z })));
  const field = (id, label, value, attrs = {}) => {
    const input = h('input', { id, name: id, type: 'text', value: value ?? '', ...attrs });
    return [h('label', { for: id }, label), input];
  };
  const [nameLabel, name] = field('store-name', t('settings.store.name'), store.name);
  const [urlLabel, url] = field('store-url', t('settings.store.url'), store.url);
  const [currencyLabel, currency] = field('store-currency', t('settings.store.currency'), store.currency, { maxlength: 3, size: 4 });
  const [localeLabel, locale] = field('store-locale', t('settings.store.locale'), store.locale);
  const [zoneLabel, zone] = field('store-timezone', t('settings.store.timezone'), store.timezone, { list: 'time-zones' });
  const [defaultZoneLabel, defaultZone] = field('policy-timezone', t('settings.default_timezone'), policy.default_timezone, { list: 'time-zones' });
  const quiet = h('input', { type: 'checkbox', id: 'quiet-on', checked: !!policy.quiet_hours });
  const hhmm = (time) => (time || '').slice(0, 5);
  const quietStart = h('input', { type: 'time', id: 'quiet-start', value: hhmm(policy.quiet_hours?.start) || '21:00', 'aria-label': t('settings.quiet_start') });
  const quietEnd = h('input', { type: 'time', id: 'quiet-end', value: hhmm(policy.quiet_hours?.end) || '08:00', 'aria-label': t('settings.quiet_end') });
  const optIn = h('input', { type: 'checkbox', id: 'opt-in', checked: policy.marketing_requires_opt_in });
  const delays = Object.fromEntries(['abandonment', 'flow', 'campaign'].map((k) => [k, h('input', { type: 'number', min: 0, id: `delay-${k}`, value: policy.max_delay_hours[k], 'aria-label': t(`settings.delay.${k}`) })]));
  const capsBody = h('tbody');
  const capRow = (cap) => {
    const channel = h('select', { 'aria-label': t('settings.channel') }, CHANNELS.map((c) => h('option', { value: c, selected: c === cap.channel }, c)));
    const max = h('input', { type: 'number', min: 1, value: cap.max, 'aria-label': t('settings.cap_max') });
    const hours = h('input', { type: 'number', min: 1, value: cap.window_hours, 'aria-label': t('settings.cap_hours') });
    const row = h('tr', { class: 'cap' }, h('td', {}, channel), h('td', {}, max), h('td', {}, hours),
      h('td', {}, h('button', { type: 'button', class: 'link danger', 'aria-label': t('builder.remove'), onclick: () => row.remove() }, '✕')));
    row.read = () => ({ channel: channel.value, max: Number(max.value), window_hours: Number(hours.value) });
    return row;
  };
  policy.caps.forEach((cap) => capsBody.append(capRow(cap)));
  const save = async (event) => {
    event.preventDefault();
    status.textContent = '';
    const time = (v) => (v.length === 5 ? `${v}:00` : v);
    const next = {
      store: { name: name.value, url: url.value || null, currency: currency.value.trim().toUpperCase(), locale: locale.value.trim(), timezone: zone.value.trim() },
      policy: {
        caps: [...capsBody.querySelectorAll('tr.cap')].map((row) => row.read()),
        quiet_hours: quiet.checked ? { start: time(quietStart.value), end: time(quietEnd.value) } : null,
        default_timezone: defaultZone.value.trim(),
        max_delay_hours: Object.fromEntries(Object.entries(delays).map(([k, input]) => [k, Number(input.value)])),
        marketing_requires_opt_in: optIn.checked,
      },
    };
    try {
      await put('/api/settings', next);
      mount(status, h('span', { class: 'ok' }, t('settings.saved')));
    } catch (error) {
      mount(status, errorBox(error));
    }
  };
  return h('form', { class: 'card', id: 'settings-form', onsubmit: save },
    zones,
    h('h2', {}, t('settings.store')),
    h('p', { class: 'muted' }, t('settings.stored_hint')),
    h('div', { class: 'fields' }, nameLabel, name, urlLabel, url, currencyLabel, currency, localeLabel, locale, zoneLabel, zone),
    h('h3', {}, t('settings.quiet_hours')),
    h('div', { class: 'toolbar' }, h('label', {}, quiet, ' ', t('settings.quiet_on')), quietStart, '–', quietEnd),
    h('div', { class: 'fields' }, defaultZoneLabel, defaultZone),
    h('h3', {}, t('settings.caps')),
    h('table', { class: 'data' },
      h('thead', {}, h('tr', {}, [t('settings.channel'), t('settings.cap_max'), t('settings.cap_hours'), ''].map((label) => h('th', { scope: 'col' }, label)))),
      capsBody),
    h('button', { type: 'button', class: 'secondary', onclick: () => capsBody.append(capRow({ channel: 'email', max: 1, window_hours: 24 })) }, t('settings.add_cap')),
    h('h3', {}, t('settings.delays')),
    h('div', { class: 'toolbar' }, Object.entries(delays).map(([k, input]) => h('label', {}, t(`settings.delay.${k}`), ' ', input))),
    h('p', {}, h('label', {}, optIn, ' ', t('settings.opt_in'))),
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'settings-save' }, t('settings.save')), status));
}
