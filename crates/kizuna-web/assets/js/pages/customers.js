// Customers: find a person by any identifier (email, phone, user id, anonymous id, LINE id, profile id) or by a
// trait value, or page through everyone (keyset pages from the server, 50 at a time).
import { get, ApiError } from '../api.js';
import { h, mount, table, link, errorBox } from '../dom.js';
import { t, formatMoney, formatDate } from '../i18n.js';
import { navigate } from '../app.js';

const IDENTIFIERS = ['email', 'phone', 'user_id', 'anonymous_id', 'line_user_id'];

export async function render(main, _params, query) {
  const q = query.get('q') || '';
  const by = query.get('by') || 'identifier';
  const traitName = query.get('trait') || '';
  const input = h('input', { type: 'search', id: 'customer-search', name: 'q', value: q, placeholder: t('customers.search_placeholder'), 'aria-label': t('customers.search') });
  const bySelect = h('select', { name: 'by', 'aria-label': t('customers.search_by') },
    h('option', { value: 'identifier', selected: by === 'identifier' }, t('customers.by_identifier')),
    h('option', { value: 'trait', selected: by === 'trait' }, t('customers.by_trait')));
  const traitInput = h('input', { type: 'text', name: 'trait', value: traitName, placeholder: t('customers.trait_name'), 'aria-label': t('customers.trait_name') });
  const form = h('form', {
    class: 'toolbar',
    role: 'search',
    onsubmit: (event) => {
      event.preventDefault();
      const params = new URLSearchParams({ q: input.value.trim(), by: bySelect.value });
      if (bySelect.value === 'trait') params.set('trait', traitInput.value.trim());
      navigate(`/admin/customers?${params}`);
    },
  }, input, bySelect, traitInput, h('button', { type: 'submit' }, t('customers.search')));
  const results = h('div', { id: 'customer-results' });
  mount(main, h('h1', {}, t('nav.customers')), form, results);

  let profiles = [];
  let next = null;
  try {
    if (!q) {
      const page = await get('/api/profiles', { limit: 50, after: query.get('after') });
      profiles = page.profiles;
      next = page.next_after;
    } else if (by === 'trait') {
      if (!traitName) {
        mount(results, h('p', { class: 'warning', role: 'alert' }, t('customers.trait_needed')));
        return;
      }
      profiles = (await get('/api/profiles', { trait: traitName, value: q, limit: 50 })).profiles;
    } else {
      profiles = await findByIdentifier(q);
      if (profiles.length === 1) {
        navigate(`/admin/customers/${profiles[0].id}`, { replace: true });
        return;
      }
    }
  } catch (error) {
    mount(results, errorBox(error));
    return;
  }
  mount(results,
    q ? h('p', { class: 'muted' }, t('customers.found', { count: profiles.length })) : null,
    table([
      { label: t('customers.name'), value: (p) => link(`/admin/customers/${p.id}`, displayName(p)) },
      { label: t('customers.email'), value: (p) => identifier(p, 'email') },
      { label: t('customers.orders'), value: (p) => p.computed?.orders_count ?? 0, class: 'num' },
      { label: t('customers.revenue'), value: (p) => formatMoney(p.computed?.revenue ?? 0), class: 'num' },
      { label: t('customers.stage'), value: (p) => (p.computed?.journey_stage ? t(`stage.${p.computed.journey_stage}`) : '—') },
      { label: t('customers.last_seen'), value: (p) => formatDate(p.computed?.last_seen) },
    ], profiles, { empty: t('customers.none') }),
    h('p', { class: 'pager' },
      query.get('after') ? link('/admin/customers', t('app.first_page')) : null,
      next ? link(`/admin/customers?after=${encodeURIComponent(next)}`, t('app.next_page')) : null));
}

async function findByIdentifier(q) {
  const kinds = q.includes('@') ? ['email'] : IDENTIFIERS;
  const lookups = kinds.map((kind) => get(`/api/profiles/by/${kind}/${encodeURIComponent(q)}`));
  if (/^\d+$/.test(q)) lookups.push(get(`/api/profiles/${q}`));
  const found = await Promise.allSettled(lookups);
  const byId = new Map();
  for (const result of found) {
    if (result.status === 'fulfilled') byId.set(result.value.id, result.value);
    else if (!(result.reason instanceof ApiError) || result.reason.status >= 500) throw result.reason;
  }
  return [...byId.values()];
}

export function displayName(p) {
  const name = [p.traits?.first_name, p.traits?.last_name].filter(Boolean).join(' ');
  return name || identifier(p, 'email') || identifier(p, 'user_id') || `#${p.id}`;
}

function identifier(p, kind) {
  return (p.identities || []).find((i) => i.type === kind)?.value || '';
}
