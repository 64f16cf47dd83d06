// Segments: every segment with its live member count, and the starter templates to begin from.
import { get } from '../api.js';
import { h, mount, table, link } from '../dom.js';
import { t, formatNumber, formatDate } from '../i18n.js';

export async function render(main) {
  const [{ segments }, { templates }] = await Promise.all([get('/api/segments'), get('/api/segments/templates')]);
  mount(main,
    h('div', { class: 'page-head' },
      h('h1', {}, t('nav.segments')),
      h('a', { href: '/admin/segments/new', 'data-link': true, class: 'button' }, t('segments.new'))),
    h('section', { class: 'card' }, table([
      { label: t('segments.name'), value: (s) => link(`/admin/segments/${encodeURIComponent(s.name)}`, s.name) },
      { label: t('segments.description'), value: (s) => s.description || '' },
      { label: t('segments.members'), value: (s) => h('span', { dataset: { segmentCount: s.name } }, formatNumber(s.members)), class: 'num' },
      { label: t('segments.definition'), value: (s) => h('code', {}, s.text) },
      { label: t('segments.updated'), value: (s) => formatDate(s.updated_at, true) },
    ], segments, { empty: t('segments.none') })),
    h('section', { class: 'card' },
      h('h2', {}, t('segments.templates')),
      table([
        { label: t('segments.name'), value: (s) => link(`/admin/segments/new?template=${encodeURIComponent(s.name)}`, s.name) },
        { label: t('segments.description'), value: (s) => s.description },
        { label: t('segments.definition'), value: (s) => h('code', {}, s.text) },
      ], templates)));
}
