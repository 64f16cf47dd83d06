// One flow: its steps drawn as a graph with per-step counts, the headline report with the arms' lift against
// the hold-out, the definition editor (JSON; checked by the server), replay over recent history, and
// activate / pause.
import { get, post, put } from '../api.js';
import { h, mount, table, errorBox } from '../dom.js';
import { t, formatNumber, formatMoney, formatPercent, formatDate } from '../i18n.js';

const SVG = 'http://www.w3.org/2000/svg';

export async function render(main, params) {
  const name = params.name;
  const base = `/api/flows/${encodeURIComponent(name)}`;
  const [flow, report] = await Promise.all([get(base), get(`${base}/report`)]);
  const status = h('div', { class: 'form-status', role: 'status', id: 'flow-status' });
  const editor = h('textarea', { id: 'flow-definition', rows: 18, spellcheck: 'false', class: 'code' }, JSON.stringify(flow.definition, null, 2));
  const replayBox = h('div', { id: 'flow-replay' });
  const days = h('input', { type: 'number', min: 1, max: 365, value: 30, id: 'replay-days', 'aria-label': t('flows.replay_days') });

  const act = (fn) => async () => {
    status.textContent = '';
    try {
      await fn();
    } catch (error) {
      mount(status, errorBox(error));
    }
  };
  const definitionFromEditor = () => {
    try {
      return JSON.parse(editor.value);
    } catch (error) {
      throw Object.assign(new Error(t('flows.bad_json', { message: error.message })), { code: 'malformed_json' });
    }
  };
  const activate = act(async () => {
    await post(`${base}/activate`, {});
    render(main, params);
  });
  const pause = act(async () => {
    await post(`${base}/pause`, {});
    render(main, params);
  });
  const check = act(async () => {
    await post('/api/flows/check', definitionFromEditor());
    mount(status, h('span', { class: 'ok' }, t('flows.valid')));
  });
  const save = act(async () => {
    const definition = definitionFromEditor();
    // On a live flow the new version is what new entrants get at once; people inside finish on theirs.
    if (flow.status === 'active' && !confirm(t('flows.confirm_save_live'))) return;
    const saved = await put(base, definition);
    mount(status, h('span', { class: 'ok' }, t('flows.saved', { version: saved.version })));
  });
  const replay = act(async () => {
    mount(replayBox, h('p', { class: 'loading' }, t('flows.replaying')));
    const result = await post(`${base}/simulate`, { days: Number(days.value), sample: 20, definition: definitionFromEditor() });
    renderReplay(replayBox, result);
  });

  const graph = h('div', { class: 'flow-graph', id: 'flow-graph' });
  mount(main,
    h('div', { class: 'page-head' },
      h('h1', {}, name),
      h('span', { class: `badge ${flow.status}`, id: 'flow-badge' }, t(`flows.status.${flow.status}`)),
      h('span', { class: 'muted' }, t('flows.versions', { version: flow.version, live: flow.live_version ?? '—' })),
      h('div', { class: 'actions' },
        flow.status === 'active'
          ? h('button', { type: 'button', class: 'danger', id: 'flow-pause', onclick: pause }, t('flows.pause'))
          : h('button', { type: 'button', id: 'flow-activate', onclick: activate }, t('flows.activate')))),
    status,
    h('p', { class: 'muted' }, flow.definition?.description || ''),
    h('div', { class: 'kpis small' },
      stat(t('flows.entered'), formatNumber(report.entered)),
      stat(t('flows.in_progress'), formatNumber(report.in_progress)),
      stat(t('flows.messages'), formatNumber(report.messages_queued)),
      stat(t('flows.conversions'), formatNumber(report.conversions)),
      stat(t('flows.revenue'), formatMoney(report.revenue))),
    h('section', { class: 'card' }, h('h2', {}, t('flows.graph')), graph),
    report.arms?.length ? h('section', { class: 'card' }, h('h2', {}, t('flows.arms')), table([
      { label: t('flows.arm'), value: (a) => a.arm || t('flows.main_path') },
      { label: t('flows.entered'), value: (a) => formatNumber(a.entered), class: 'num' },
      { label: t('flows.conversion_rate'), value: (a) => formatPercent(a.conversion_rate), class: 'num' },
      { label: t('flows.revenue'), value: (a) => formatMoney(a.revenue), class: 'num' },
      // Lift arrives in percentage points already.
      { label: t('flows.lift'), value: (a) => (a.lift ? t('flows.lift_value', { lift: formatNumber(a.lift.lift_points, { maximumFractionDigits: 1 }), low: formatNumber(a.lift.ci95_low, { maximumFractionDigits: 1 }), high: formatNumber(a.lift.ci95_high, { maximumFractionDigits: 1 }) }) : '—') },
    ], [...report.arms, ...(report.holdout ? [{ ...report.holdout, arm: t('flows.holdout') }] : [])])) : null,
    h('section', { class: 'card' },
      h('h2', {}, h('label', { for: 'flow-definition' }, t('flows.definition'))),
      editor,
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'secondary', id: 'flow-check', onclick: check }, t('flows.check')),
        h('button', { type: 'button', id: 'flow-save', onclick: save }, t('flows.save')))),
    h('section', { class: 'card' },
      h('h2', {}, t('flows.replay')),
      h('p', { class: 'muted' }, t('flows.replay_hint')),
      h('div', { class: 'toolbar' }, h('label', { for: 'replay-days' }, t('flows.replay_days')), days,
        h('button', { type: 'button', id: 'flow-replay-run', onclick: replay }, t('flows.replay_run'))),
      replayBox));
  drawGraph(graph, flow.definition, report);
}

function stat(label, value) {
  return h('div', { class: 'kpi card' }, h('h2', {}, label), h('p', { class: 'value' }, value));
}

/** Edges of a step: every field (but its id and template) that names another step. */
function edges(step, ids) {
  const out = [];
  const walk = (value, key) => {
    if (typeof value === 'string' && ids.has(value) && key !== 'id' && key !== 'template') out.push([value, key]);
    else if (Array.isArray(value)) value.forEach((v) => walk(v, key));
    else if (value && typeof value === 'object') for (const [k, v] of Object.entries(value)) walk(v, k === 'next' && key ? key : k);
  };
  for (const [key, value] of Object.entries(step)) walk(value, key);
  return out;
}

function drawGraph(container, definition, report) {
  const steps = definition.steps || [];
  const ids = new Set(steps.map((s) => s.id));
  const counts = Object.fromEntries((report.steps || []).map((s) => [s.step, s]));
  // Columns by distance from the first step (breadth first), so the graph reads left to right.
  const depth = new Map();
  const queue = steps.length ? [[steps[0].id, 0]] : [];
  const byId = Object.fromEntries(steps.map((s) => [s.id, s]));
  while (queue.length) {
    const [id, d] = queue.shift();
    if (depth.has(id)) continue;
    depth.set(id, d);
    for (const [next] of edges(byId[id], ids)) if (!depth.has(next)) queue.push([next, d + 1]);
  }
  steps.forEach((s) => depth.has(s.id) || depth.set(s.id, 0));
  const columns = [];
  for (const s of steps) (columns[depth.get(s.id)] ||= []).push(s.id);
  const W = 170, H = 62, GX = 60, GY = 24;
  const pos = {};
  columns.forEach((col, x) => col.forEach((id, y) => { pos[id] = { x: 20 + x * (W + GX), y: 20 + y * (H + GY) }; }));
  const width = 40 + columns.length * (W + GX);
  const height = 40 + Math.max(1, ...columns.map((c) => c.length)) * (H + GY);
  const svg = el('svg', { viewBox: `0 0 ${width} ${height}`, width: '100%', role: 'img', class: 'chart', 'data-chart': 'flow', 'aria-label': t('flows.graph') });
  const defs = el('defs');
  const marker = el('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto-start-reverse' });
  marker.append(el('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: 'currentColor' }));
  defs.append(marker);
  svg.append(defs);
  for (const s of steps) {
    for (const [next, label] of edges(s, ids)) {
      const a = pos[s.id], b = pos[next];
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
      const back = x2 <= x1;
      const d = back
        ? `M ${a.x + W / 2} ${a.y + H} C ${a.x + W / 2} ${a.y + H + 40}, ${b.x + W / 2} ${b.y + H + 40}, ${b.x + W / 2} ${b.y + H}`
        : `M ${x1} ${y1} C ${x1 + GX / 2} ${y1}, ${x2 - GX / 2} ${y2}, ${x2} ${y2}`;
      svg.append(el('path', { d, class: 'edge', fill: 'none', 'marker-end': 'url(#arrow)' }));
      if (label !== 'next') {
        const tx = el('text', { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 4, class: 'edge-label', 'text-anchor': 'middle' });
        tx.textContent = label.replace(/^on_/, '');
        svg.append(tx);
      }
    }
  }
  for (const s of steps) {
    const p = pos[s.id];
    const c = counts[s.id];
    const g = el('g', { class: `step mark ${s.type}`, tabindex: 0, 'data-step': s.id, 'data-executions': c?.executions ?? 0 });
    const title = el('title');
    title.textContent = `${s.id} (${s.type}) — ${t('flows.executions')}: ${c?.executions ?? 0}, ${t('flows.in_progress')}: ${c?.in_progress ?? 0}${c ? ', ' + Object.entries(c.outcomes).map(([k, v]) => `${k}: ${v}`).join(', ') : ''}`;
    g.append(title, el('rect', { x: p.x, y: p.y, width: W, height: H, rx: 8 }));
    const line = (y, text, cls) => {
      const tx = el('text', { x: p.x + 10, y: p.y + y, class: cls });
      tx.textContent = text;
      g.append(tx);
    };
    line(18, s.id, 'step-id');
    line(35, t(`step.${s.type}`) + (s.template ? ` · ${s.template}` : ''), 'step-type');
    line(53, `${formatNumber(c?.executions ?? 0)} ${t('flows.executions_short')} · ${formatNumber(c?.in_progress ?? 0)} ${t('flows.waiting_short')}`, 'step-count');
    svg.append(g);
  }
  container.replaceChildren(svg);
}

function el(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function renderReplay(box, result) {
  const s = result.summary;
  mount(box,
    h('p', {}, t('flows.replay_window', { from: formatDate(result.from, true), to: formatDate(result.to, true), ms: Math.round(result.took_ms) })),
    h('div', { class: 'kpis small', id: 'replay-summary' },
      stat(t('flows.people'), formatNumber(s.people)),
      stat(t('flows.entered'), formatNumber(s.entered)),
      stat(t('flows.conversions'), formatNumber(s.converted)),
      stat(t('flows.revenue'), formatMoney(s.revenue))),
    h('div', { class: 'columns' },
      table([{ label: t('flows.step'), value: ([k]) => k }, { label: t('flows.executions'), value: ([, v]) => formatNumber(v), class: 'num' }], Object.entries(s.by_step || {}), { caption: t('flows.by_step') }),
      table([{ label: t('flows.decision'), value: ([k]) => k }, { label: t('flows.count'), value: ([, v]) => formatNumber(v), class: 'num' }], Object.entries(s.sends || {}), { caption: t('flows.sends'), empty: t('flows.no_sends') }),
      table([{ label: t('flows.status'), value: ([k]) => k }, { label: t('flows.count'), value: ([, v]) => formatNumber(v), class: 'num' }], Object.entries({ ...s.by_status, ...Object.fromEntries(Object.entries(s.refused || {}).map(([k, v]) => [t('flows.refused', { reason: k }), v])) }), { caption: t('flows.outcomes') })),
    h('h3', {}, t('flows.sample_paths')),
    table([
      { label: t('flows.person'), value: (r) => h('a', { href: `/admin/customers/${r.profile}`, 'data-link': true }, `#${r.profile}`) },
      { label: t('flows.entered'), value: (r) => formatDate(r.entered_at, true) },
      { label: t('flows.path'), value: (r) => r.path.map((p) => `${p.step}${p.outcome ? ` (${p.outcome})` : ''}`).join(' → ') },
      { label: t('flows.sends'), value: (r) => r.sends.map((x) => `${x.template}: ${x.decision}${x.reason ? ` — ${x.reason}` : ''}`).join('; ') || '—' },
      { label: t('flows.status'), value: (r) => r.exit_reason ? `${r.status} (${r.exit_reason})` : r.status },
    ], result.runs));
}
