// Template editor with a live preview for a chosen customer: email (HTML in a sandboxed frame, and the plain
// text), SMS and LINE. Previews render on the server with the same engine that sends; a test send goes through
// the real channel.
import { get, post, put } from '../api.js';
import { h, mount, debounce, errorBox } from '../dom.js';
import { t } from '../i18n.js';

const LONG_FIELDS = new Set(['html', 'text', 'body', 'message', 'messages', 'payload']);

export async function render(main, params) {
  const name = params.name;
  const template = await get(`/api/templates/${encodeURIComponent(name)}`);
  const definition = structuredClone(template.definition);
  const who = h('input', { type: 'text', id: 'preview-profile', placeholder: t('template.profile_placeholder'), 'aria-label': t('template.profile') });
  const preview = h('div', { class: 'template-preview', id: 'template-preview', 'aria-live': 'polite' });
  const status = h('div', { class: 'form-status', role: 'status' });
  let profileId = null;

  const resolveProfile = async () => {
    const value = who.value.trim();
    if (!value) return null;
    if (/^\d+$/.test(value)) return value;
    const kind = value.includes('@') ? 'email' : 'user_id';
    return (await get(`/api/profiles/by/${kind}/${encodeURIComponent(value)}`)).id;
  };

  // Renders answer out of order while typing: only the latest is shown.
  let renderSeq = 0;
  const refresh = debounce(async () => {
    const seq = ++renderSeq;
    try {
      profileId = await resolveProfile();
      const rendered = await post('/api/templates/preview', { definition, profile_id: profileId || undefined });
      if (seq === renderSeq) showPreview(preview, rendered);
    } catch (error) {
      if (seq === renderSeq) mount(preview, errorBox(error));
    }
  }, 300);

  const fields = Object.entries(definition).filter(([k, v]) => typeof v === 'string' && k !== 'channel').map(([key, value]) => {
    const id = `field-${key}`;
    const input = LONG_FIELDS.has(key)
      ? h('textarea', { id, rows: key === 'html' ? 14 : 6, spellcheck: 'false', class: 'code' }, value)
      : h('input', { id, type: 'text', value });
    input.addEventListener('input', () => {
      definition[key] = input.value;
      refresh();
    });
    return [h('label', { for: id }, t(`template.field.${key}`)), input];
  });
  const testTo = h('input', { type: 'text', id: 'test-to', placeholder: t('template.test_to'), 'aria-label': t('template.test_to') });
  who.addEventListener('change', refresh);
  mount(main,
    h('div', { class: 'page-head' }, h('h1', {}, name), h('span', { class: 'badge' }, definition.channel), h('span', { class: 'muted' }, t('template.version', { version: template.version }))),
    h('div', { class: 'columns' },
      h('form', {
        class: 'card template-form',
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            const saved = await put(`/api/templates/${encodeURIComponent(name)}`, definition);
            mount(status, h('span', { class: 'ok' }, t('template.saved', { version: saved.version ?? '' })));
          } catch (error) {
            mount(status, errorBox(error));
          }
        },
      },
        h('div', { class: 'fields' }, fields),
        h('div', { class: 'actions' }, h('button', { type: 'submit' }, t('template.save')), status),
        h('div', { class: 'toolbar' }, testTo, h('button', {
          type: 'button', class: 'secondary', onclick: async () => {
            try {
              const result = await post(`/api/templates/${encodeURIComponent(name)}/test`, { to: testTo.value, profile_id: profileId || undefined });
              mount(status, h('span', { class: 'ok' }, t('template.test_sent', { id: result.id })));
            } catch (error) {
              mount(status, errorBox(error));
            }
          },
        }, t('template.test_send')))),
      h('section', { class: 'card' }, h('h2', {}, t('template.preview')), h('div', { class: 'toolbar' }, h('label', { for: 'preview-profile' }, t('template.profile')), who), preview)));
  refresh();
}

function showPreview(box, rendered) {
  if (rendered.channel === 'email') {
    // The email's own HTML in a sandboxed frame: no scripts, no access to this page.
    const frame = h('iframe', { sandbox: '', title: t('template.html_preview'), class: 'email-frame', id: 'email-frame' });
    frame.srcdoc = rendered.html || '';
    mount(box,
      h('p', {}, h('strong', {}, t('template.subject')), ' ', h('span', { id: 'preview-subject' }, rendered.subject || '')),
      rendered.preheader ? h('p', { class: 'muted' }, rendered.preheader) : null,
      frame,
      h('details', {}, h('summary', {}, t('template.plain_text')), h('pre', { id: 'preview-text' }, rendered.text || '')));
    return;
  }
  const { channel, ...rest } = rendered;
  mount(box, h('p', {}, h('span', { class: 'badge' }, channel)),
    h('pre', { id: 'preview-text', class: 'bubble' }, rest.text ?? rest.body ?? JSON.stringify(rest, null, 2)));
}
