// The segment builder. One definition, two views kept in sync: a visual tree (all/any groups, "not", condition
// rows) and the text syntax. Either one edits the definition; the server translates between them
// (/api/segments/translate) so both always agree with the parser, and the preview counts members as you edit.
import { get, post, put, del } from '../api.js';
import { h, mount, table, link, debounce, errorBox } from '../dom.js';
import { t, formatNumber, formatDate } from '../i18n.js';
import { navigate } from '../app.js';

const SIMPLE_OPS = ['equals', 'not_equals', 'gt', 'gte', 'lt', 'lte', 'contains', 'starts_with', 'exists'];
const IDENTIFIER_KINDS = ['email', 'phone', 'line_user_id', 'user_id', 'anonymous_id'];

export async function render(main, params, query) {
  const existing = params.name ? (await get(`/api/segments/${encodeURIComponent(params.name)}`)) : null;
  let definition = existing?.definition;
  let text = existing?.text || '';
  if (!existing) {
    const template = query.get('template');
    const templates = template ? (await get('/api/segments/templates')).templates : [];
    const chosen = templates.find((x) => x.name === template);
    definition = chosen ? chosen.definition : { and: [{ attribute: { path: 'computed.orders_count', op: 'gte', value: 1 } }] };
    // The default's text is written here rather than fetched: a translation landing after the person started
    // typing would be one more answer racing their edit.
    text = chosen ? chosen.text : 'computed.orders_count >= 1';
  }

  const nameInput = h('input', { type: 'text', id: 'segment-name', value: existing?.name || query.get('template') || '', disabled: !!existing, required: true });
  const descInput = h('input', { type: 'text', id: 'segment-description', value: existing?.description || '' });
  const textArea = h('textarea', { id: 'segment-text', rows: 6, spellcheck: 'false', 'aria-describedby': 'segment-text-status' });
  const textStatus = h('div', { id: 'segment-text-status', class: 'form-status', role: 'status' });
  const builder = h('div', { class: 'builder', id: 'segment-builder' });
  const preview = h('div', { class: 'preview', id: 'segment-preview', 'aria-live': 'polite' });
  const saveStatus = h('div', { class: 'form-status', role: 'status' });

  // Answers can arrive out of order; only the latest request's answer is shown.
  let previewSeq = 0;
  const refreshPreview = debounce(async () => {
    const seq = ++previewSeq;
    mount(preview, h('p', { class: 'loading' }, t('segments.counting')));
    try {
      const result = await post('/api/segments/preview', { definition, sample: 10 });
      if (seq !== previewSeq) return;
      mount(preview,
        h('p', { class: 'count' }, h('strong', { id: 'preview-count', dataset: { count: result.count, text: result.text } }, formatNumber(result.count)), ' ', t('segments.people_match'),
          h('span', { class: 'muted' }, ` (${t('segments.took', { ms: result.took_ms })})`)),
        h('ul', { class: 'sample' }, result.sample.map((id) => h('li', {}, link(`/admin/customers/${id}`, `#${id}`)))));
    } catch (error) {
      if (seq === previewSeq) mount(preview, errorBox(error));
    }
  }, 400);

  // Builder edit -> definition -> text. Translations also answer out of order: only the latest counts.
  let translateSeq = 0;
  const fromBuilder = debounce(async () => {
    const seq = ++translateSeq;
    try {
      const result = await post('/api/segments/translate', { definition });
      if (seq !== translateSeq) return;
      text = result.text;
      if (document.activeElement !== textArea) textArea.value = text;
      mount(textStatus, h('span', { class: 'ok' }, t('segments.in_sync')));
      refreshPreview();
    } catch (error) {
      if (seq === translateSeq) mount(textStatus, errorBox(error));
    }
  }, 250);
  const changed = () => fromBuilder();

  // Text edit -> definition -> builder.
  const fromText = debounce(async () => {
    const seq = ++translateSeq;
    try {
      const result = await post('/api/segments/translate', { text: textArea.value });
      if (seq !== translateSeq) return;
      definition = result.definition;
      text = result.text;
      drawBuilder();
      mount(textStatus, h('span', { class: 'ok' }, t('segments.in_sync')));
      refreshPreview();
    } catch (error) {
      if (seq === translateSeq) mount(textStatus, errorBox(error));
    }
  }, 400);
  // A keystroke makes any builder answer still in flight stale at once (not only when the debounce fires),
  // or that answer could overwrite what was just typed once the box loses focus.
  textArea.addEventListener('input', () => { translateSeq++; fromText(); });

  // The root is always shown as a group so there is somewhere to add conditions; a group of one is saved as
  // its only condition, the way the text syntax writes it.
  function drawBuilder() {
    const kind = kindOf(definition);
    const root = kind === 'and' || kind === 'or' ? definition : { and: [definition] };
    // Redrawing replaces the fields: keep keyboard focus on the field with the same place in the tree.
    const focused = document.activeElement?.dataset?.key;
    mount(builder, node(root, (next) => {
      const children = next.and || next.or;
      definition = children && children.length === 1 ? children[0] : next;
      drawBuilder();
      changed();
    }, null, 'root'));
    if (focused) builder.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
  }

  const save = async (event) => {
    event.preventDefault();
    saveStatus.textContent = '';
    try {
      if (existing) {
        await put(`/api/segments/${encodeURIComponent(existing.name)}`, { description: descInput.value, definition });
        mount(saveStatus, h('span', { class: 'ok' }, t('segments.saved')));
      } else {
        const created = await post('/api/segments', { name: nameInput.value.trim(), description: descInput.value, definition });
        navigate(`/admin/segments/${encodeURIComponent(created.name || nameInput.value.trim())}`);
      }
    } catch (error) {
      mount(saveStatus, errorBox(error));
    }
  };

  const membersBox = h('section', { class: 'card', id: 'segment-members' });
  mount(main,
    h('div', { class: 'page-head' },
      h('h1', {}, existing ? existing.name : t('segments.new')),
      existing ? h('span', { class: 'muted' }, t('segments.version', { version: existing.version })) : null),
    h('form', { class: 'card segment-form', onsubmit: save },
      h('div', { class: 'fields' },
        h('label', { for: 'segment-name' }, t('segments.name')), nameInput,
        h('label', { for: 'segment-description' }, t('segments.description')), descInput),
      h('div', { class: 'columns' },
        h('div', {}, h('h2', {}, t('segments.builder')), builder),
        h('div', {},
          h('h2', {}, h('label', { for: 'segment-text' }, t('segments.text'))), textArea, textStatus,
          h('h2', {}, t('segments.preview')), preview)),
      h('div', { class: 'actions' },
        h('button', { type: 'submit', id: 'segment-save' }, existing ? t('segments.save') : t('segments.create')),
        existing ? h('button', {
          type: 'button', class: 'danger', onclick: async () => {
            if (!confirm(t('segments.confirm_delete', { name: existing.name }))) return;
            try {
              await del(`/api/segments/${encodeURIComponent(existing.name)}`);
              navigate('/admin/segments');
            } catch (error) {
              mount(saveStatus, errorBox(error));
            }
          },
        }, t('segments.delete')) : null,
        saveStatus)),
    existing ? membersBox : null);
  textArea.value = text;
  drawBuilder();
  if (!text) fromBuilder(); else refreshPreview();
  if (existing) renderMembers(membersBox, existing.name, null);
}

async function renderMembers(box, name, after) {
  let page;
  try {
    page = await get(`/api/segments/${encodeURIComponent(name)}/members`, { limit: 25, after });
  } catch (error) {
    mount(box, h('h2', {}, t('segments.members')), errorBox(error));
    return;
  }
  mount(box,
    h('div', { class: 'page-head' },
      h('h2', {}, t('segments.members')),
      h('a', { href: `/api/segments/${encodeURIComponent(name)}/members.csv`, class: 'button secondary', download: `${name}.csv` }, t('segments.export_csv'))),
    table([
      { label: t('segments.profile'), value: (m) => link(`/admin/customers/${m.profile_id}`, `#${m.profile_id}`) },
      { label: t('segments.since'), value: (m) => formatDate(m.since, true) },
    ], page.members, { empty: t('segments.no_members') }),
    page.next_after ? h('button', { type: 'button', class: 'secondary', onclick: () => renderMembers(box, name, page.next_after) }, t('app.next_page')) : null);
}

// ---- the visual tree -------------------------------------------------------------------------------------

function kindOf(n) {
  return Object.keys(n)[0];
}

/** One node of the definition; `set(next)` replaces it (null removes it). */
/** `key` names the node's place in the tree (root.0.1…), so a redraw can find the same field again. */
function node(n, set, remove, key) {
  const kind = kindOf(n);
  if (kind === 'and' || kind === 'or') return group(n, kind, set, remove, key);
  if (kind === 'not') {
    return h('div', { class: 'node not' },
      h('div', { class: 'node-head' }, h('strong', {}, t('builder.not')), removeButton(remove)),
      node(n.not, (next) => set({ not: next }), () => set(n.not), `${key}.not`));
  }
  return h('div', { class: 'node leaf' }, leaf(n, kind, set, key), removeButton(remove),
    h('button', { type: 'button', class: 'link', title: t('builder.negate'), onclick: () => set({ not: n }) }, t('builder.negate')));
}

function removeButton(remove) {
  return remove ? h('button', { type: 'button', class: 'link danger', onclick: remove, 'aria-label': t('builder.remove') }, '✕') : null;
}

function group(n, kind, set, remove, key) {
  const children = n[kind];
  const mode = h('select', { 'aria-label': t('builder.match'), onchange: (e) => set({ [e.target.value]: children }) },
    h('option', { value: 'and', selected: kind === 'and' }, t('builder.all')),
    h('option', { value: 'or', selected: kind === 'or' }, t('builder.any')));
  const replaceChild = (i) => (next) => set({ [kind]: children.map((c, j) => (j === i ? next : c)) });
  const removeChild = (i) => () => set({ [kind]: children.filter((_, j) => j !== i) });
  return h('div', { class: `node group ${kind}` },
    h('div', { class: 'node-head' }, t('builder.match_prefix'), ' ', mode, ' ', t('builder.match_suffix'), removeButton(remove)),
    h('div', { class: 'children' }, children.map((c, i) => node(c, replaceChild(i), removeChild(i), `${key}.${i}`))),
    h('div', { class: 'node-actions' },
      h('button', { type: 'button', class: 'secondary', dataset: { add: 'condition' }, onclick: () => set({ [kind]: [...children, { attribute: { path: 'traits.email', op: 'exists' } }] }) }, t('builder.add_condition')),
      h('button', { type: 'button', class: 'secondary', onclick: () => set({ [kind]: [...children, { or: [] }] }) }, t('builder.add_group'))));
}

function leaf(n, kind, set, key) {
  if (kind === 'attribute' && SIMPLE_OPS.includes(n.attribute.op)) {
    const a = n.attribute;
    const path = h('input', { type: 'text', value: a.path, 'aria-label': t('builder.attribute'), class: 'path', dataset: { key: `${key}.path` } });
    const op = h('select', { 'aria-label': t('builder.operator'), dataset: { key: `${key}.op` } }, SIMPLE_OPS.map((o) => h('option', { value: o, selected: o === a.op }, t(`op.${o}`))));
    const value = h('input', { type: 'text', value: a.value === undefined ? '' : String(a.value), 'aria-label': t('builder.value'), hidden: a.op === 'exists', dataset: { key: `${key}.value` } });
    const commit = () => {
      const next = { path: path.value.trim(), op: op.value };
      if (op.value !== 'exists') next.value = parseValue(value.value, op.value);
      set({ attribute: next });
    };
    path.addEventListener('change', commit);
    op.addEventListener('change', commit);
    value.addEventListener('change', commit);
    return h('span', { class: 'leaf-fields' }, path, op, value);
  }
  if (kind === 'has_identifier') {
    return h('span', { class: 'leaf-fields' }, t('builder.has'), ' ',
      h('select', { 'aria-label': t('builder.identifier'), onchange: (e) => set({ has_identifier: e.target.value }) },
        IDENTIFIER_KINDS.map((k) => h('option', { value: k, selected: k === n.has_identifier }, k))));
  }
  if (kind === 'in_segment') {
    return h('span', { class: 'leaf-fields' }, t('builder.in_segment'), ' ',
      h('input', { type: 'text', value: n.in_segment, 'aria-label': t('builder.segment'), onchange: (e) => set({ in_segment: e.target.value.trim() }) }));
  }
  // Events, sequences, consent, geography and the rarer comparisons: edited as their JSON, checked by the server.
  const area = h('textarea', { rows: 3, class: 'json', spellcheck: 'false', 'aria-label': t(`builder.kind.${kind}`) }, JSON.stringify(n[kind]));
  area.addEventListener('change', () => {
    try {
      set({ [kind]: JSON.parse(area.value) });
    } catch {
      area.setCustomValidity(t('builder.bad_json'));
      area.reportValidity();
    }
  });
  return h('span', { class: 'leaf-fields wide' }, h('span', { class: 'tag' }, t(`builder.kind.${kind}`)), area);
}

function parseValue(raw, op) {
  const trimmed = raw.trim();
  if (['gt', 'gte', 'lt', 'lte'].includes(op)) return Number(trimmed);
  if (trimmed === 'true') return true;
  if (trimmed === 'false') return false;
  // Only a number written the way a number prints ("42", "1.5") becomes one: "01234" (a postal code) stays text.
  if (trimmed !== '' && String(Number(trimmed)) === trimmed && op !== 'contains' && op !== 'starts_with') return Number(trimmed);
  return trimmed;
}
