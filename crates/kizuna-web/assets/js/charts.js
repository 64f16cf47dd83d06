/**
 * charts.js — dependency-free SVG charts for the admin app.
 *
 * Every chart clears its container, renders one responsive <svg class="chart" role="img"> into it (plus an
 * HTML legend and a shared tooltip <div>), and returns the <svg>. Text is only ever put into the DOM through
 * text nodes and setAttribute, never innerHTML, so labels and series names may safely contain user data.
 *
 * Colours are CSS custom properties with fallbacks (--chart-1 … --chart-6, --chart-text, --chart-muted,
 * --chart-grid, --chart-axis, --chart-focus, --chart-tooltip-bg, --chart-tooltip-fg) so the app stylesheet
 * can theme them. Dates are read and labelled in UTC, because the API sends UTC days ('2026-11-01') and
 * labelling them in local time would shift them by a day west of Greenwich.
 */

const SVG_NS = 'http://www.w3.org/2000/svg';
const FALLBACK_COLORS = ['#4f46e5', '#0891b2', '#ea580c', '#16a34a', '#db2777', '#ca8a04'];
const TEXT = 'var(--chart-text, currentColor)';
const MUTED = 'var(--chart-muted, #6b7280)';
const GRID = 'var(--chart-grid, #e5e7eb)';
const AXIS = 'var(--chart-axis, #9ca3af)';
const FONT_SIZE = 12;
// Rough average glyph width at 12px. Only used to decide how many labels fit, so being approximate is fine.
const CHAR_W = 7;
const MINUTE = 6e4;
const HOUR = 36e5;
const DAY = 864e5;

// Defaults are wrapped in :where() (zero specificity) so any rule in the app stylesheet wins over them.
const CSS = `
:where(.chart) { display: block; overflow: visible; max-width: 100%; height: auto; }
:where(.chart .mark:focus) { outline: none; }
:where(.chart .mark:focus-visible, .chart .mark.is-active) { stroke: var(--chart-focus, currentColor); stroke-width: 2px; }
:where(.chart[data-dense] circle.mark) { opacity: 0; }
:where(.chart[data-dense] circle.mark.is-active, .chart[data-dense] circle.mark:focus-visible, .chart[data-dense] circle.mark.is-last) { opacity: 1; }
:where(.chart-tooltip) { z-index: 10; max-width: 280px; padding: 6px 8px; border-radius: 6px; font-size: 12px;
  line-height: 1.4; white-space: nowrap; background: var(--chart-tooltip-bg, rgba(17, 24, 39, 0.92));
  color: var(--chart-tooltip-fg, #fff); box-shadow: 0 2px 8px rgba(0, 0, 0, 0.2); }
:where(.chart-tooltip-title) { font-weight: 600; }
:where(.chart-legend) { display: flex; flex-wrap: wrap; gap: 4px 14px; margin-top: 4px; font-size: 12px; }
:where(.chart-legend-item) { display: inline-flex; align-items: center; gap: 6px; }
:where(.chart-legend-swatch) { display: inline-block; width: 10px; height: 10px; border-radius: 2px; }
`;

let stylesInjected = false;
let uid = 0;

/* ───────────────────────── small helpers ───────────────────────── */

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const r1 = (v) => Math.round(v * 10) / 10; // keeps attribute strings short
const finite = Number.isFinite;
const color = (i) => `var(--chart-${(i % 6) + 1}, ${FALLBACK_COLORS[i % 6]})`;
const trunc = (s, n) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
const str = (v) => (v === null || v === undefined ? '' : String(v));
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** A number, or NaN for anything that should be skipped (null, '', booleans, garbage). */
function num(v) {
  if (v === null || v === undefined || v === '' || typeof v === 'boolean') return NaN;
  return Number(v);
}

/** [min, max] without spreading (which overflows the stack on very long arrays). */
function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

const linear = (d0, d1, r0, r1) => (v) => (d1 === d0 ? (r0 + r1) / 2 : r0 + ((v - d0) / (d1 - d0)) * (r1 - r0));

/** Default number format: abbreviates large values (1.2k, 3.4M) so tick labels stay short. */
function formatNumber(n) {
  if (!finite(n)) return '–';
  const a = Math.abs(n);
  for (const [v, suffix] of [[1e12, 'T'], [1e9, 'B'], [1e6, 'M'], [1e3, 'k']]) {
    // 0.9995 so that 999,960 reads "1M" rather than "1000k".
    if (a >= v * 0.9995) return `${Number((n / v).toFixed(a / v < 100 ? 1 : 0))}${suffix}`;
  }
  return String(Number(n.toPrecision(4)) || 0); // `|| 0` turns -0 into 0
}

function formatPercent(p) {
  if (!finite(p)) return '–';
  const x = p * 100;
  return `${Number(x.toFixed(Math.abs(x) < 10 ? 2 : 1))}%`;
}

/** The 1/2/5×10^k step nearest (geometrically) to span/count, so the tick count stays close to `count`. */
function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const n = raw / mag;
  return (n >= Math.sqrt(50) ? 10 : n >= Math.sqrt(10) ? 5 : n >= Math.sqrt(2) ? 2 : 1) * mag;
}

/** Extends [lo, hi] to multiples of a 1/2/5×10^k step and lists the ticks. */
function niceScale(lo, hi, count) {
  if (!finite(lo) || !finite(hi)) [lo, hi] = [0, 1];
  if (lo === hi) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    if (lo !== 0) lo -= pad;
    hi += pad;
  }
  const step = niceStep(hi - lo, count);
  const first = Math.floor(lo / step);
  const last = Math.ceil(hi / step);
  const clean = (v) => Number(v.toPrecision(12)); // hide float noise like 0.30000000000000004
  const ticks = [];
  for (let i = first; i <= last; i++) ticks.push(clean(i * step));
  return { min: clean(first * step), max: clean(last * step), ticks };
}

/* ───────────────────────── dates ───────────────────────── */

const dtfCache = new Map();
function dtf(options) {
  const key = JSON.stringify(options);
  if (!dtfCache.has(key)) dtfCache.set(key, new Intl.DateTimeFormat(undefined, { timeZone: 'UTC', ...options }));
  return dtfCache.get(key);
}

function toTime(x) {
  if (x instanceof Date) return x.getTime();
  if (typeof x === 'number') return x;
  if (typeof x === 'string' && x) return Date.parse(x);
  return NaN;
}

function formatDate(ms) {
  const withTime = ms % DAY !== 0;
  return dtf(withTime
    ? { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }
    : { year: 'numeric', month: 'short', day: 'numeric' }).format(ms);
}

/**
 * Calendar-aware ticks: minutes/hours/days/weeks on fixed steps, months and years on month starts.
 * `minStep` stops daily data from getting 12:00 ticks between its days.
 */
function timeTicks(lo, hi, count, minStep = 0) {
  const span = hi - lo;
  const fixed = [MINUTE, 5 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY];
  const ms = fixed.find((s) => s >= minStep && span / s <= count);
  const ticks = [];
  if (ms) {
    const offset = ms === 7 * DAY ? 4 * DAY : 0; // weeks start on Monday; 1970-01-01 was a Thursday
    for (let t = Math.ceil((lo - offset) / ms) * ms + offset; t <= hi && ticks.length < 100; t += ms) {
      const d = new Date(t);
      const midnight = d.getUTCHours() === 0 && d.getUTCMinutes() === 0;
      const label = ms < DAY && !midnight
        ? dtf({ hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(t)
        : dtf({ month: 'short', day: 'numeric' }).format(t);
      ticks.push({ t, label });
    }
    return ticks;
  }
  const months = [1, 3, 6, 12].find((k) => span / (k * 30.44 * DAY) <= count)
    || 12 * Math.max(1, Math.round(niceStep(span / (365.25 * DAY), count)));
  const start = new Date(lo);
  let idx = Math.ceil((start.getUTCFullYear() * 12 + start.getUTCMonth()) / months) * months;
  for (let t; (t = Date.UTC(Math.floor(idx / 12), idx % 12, 1)) <= hi && ticks.length < 100; idx += months) {
    if (t < lo) continue;
    const withYear = months >= 12 || idx % 12 === 0 || ticks.length === 0;
    const label = months >= 12 ? dtf({ year: 'numeric' }).format(t)
      : dtf(withYear ? { month: 'short', year: 'numeric' } : { month: 'short' }).format(t);
    ticks.push({ t, label });
  }
  return ticks;
}

/* ───────────────────────── DOM building ───────────────────────── */

function svgEl(tag, attrs, parent) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  if (parent) parent.appendChild(el);
  return el;
}

/** SVG text; when the shown text was shortened, the full text goes into a <title> so hovering reveals it. */
function svgText(parent, x, y, content, attrs, fill = TEXT, full) {
  const t = svgEl('text', { x: r1(x), y: r1(y), ...attrs }, parent);
  t.style.fill = fill;
  t.appendChild(document.createTextNode(content));
  if (full && full !== content) svgEl('title', null, t).appendChild(document.createTextNode(full));
  return t;
}

function svgLine(parent, x1, y1, x2, y2, stroke, attrs) {
  const l = svgEl('line', { x1: r1(x1), y1: r1(y1), x2: r1(x2), y2: r1(y2), ...attrs }, parent);
  l.style.stroke = stroke;
  return l;
}

function injectStyles() {
  if (stylesInjected || typeof document === 'undefined' || !document.head) return;
  stylesInjected = true;
  const style = document.createElement('style');
  style.setAttribute('data-charts', '');
  style.appendChild(document.createTextNode(CSS));
  document.head.appendChild(style);
}

/** Clears the container and creates the <svg> root plus the tooltip. Returns the per-chart context. */
function setup(container, kind, width, height, fixedSize = false) {
  if (!container || typeof container.appendChild !== 'function') throw new TypeError(`charts: ${kind} needs a container element`);
  injectStyles();
  if (typeof container.replaceChildren === 'function') container.replaceChildren();
  else container.textContent = '';
  const position = typeof getComputedStyle === 'function' ? getComputedStyle(container).position : container.style.position;
  if (!position || position === 'static') container.style.position = 'relative'; // the tooltip is positioned against it

  const svg = svgEl('svg', {
    class: 'chart', role: 'img', 'data-chart': kind, 'data-points': 0,
    viewBox: `0 0 ${width} ${height}`, 'font-size': FONT_SIZE,
  }, container);
  if (fixedSize) {
    svg.setAttribute('width', width);
    svg.setAttribute('height', height);
  } else {
    svg.setAttribute('width', '100%'); // height follows from the viewBox aspect ratio
  }
  const tip = document.createElement('div');
  tip.setAttribute('class', 'chart-tooltip');
  tip.setAttribute('role', 'tooltip');
  tip.setAttribute('id', `chart-tip-${++uid}`);
  Object.assign(tip.style, { position: 'absolute', pointerEvents: 'none', display: 'none', left: '0px', top: '0px' });
  container.appendChild(tip);

  const ctx = { container, svg, tip, kind, W: width, H: height, marks: [], active: [], focusable: !fixedSize, onHide: null };
  svg.addEventListener('keydown', (ev) => onKey(ctx, ev));
  return ctx;
}

/** Arrow keys move between marks, so a keyboard user is not forced to Tab through every point. */
function onKey(ctx, ev) {
  const i = ctx.marks.indexOf(ev.target);
  if (i < 0) return;
  if (ev.key === 'Escape') return hideTip(ctx);
  const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[ev.key];
  const j = ev.key === 'Home' ? 0 : ev.key === 'End' ? ctx.marks.length - 1 : step ? clamp(i + step, 0, ctx.marks.length - 1) : -1;
  const next = ctx.marks[j];
  if (next && next !== ev.target && typeof next.focus === 'function') {
    if (ev.preventDefault) ev.preventDefault();
    next.focus();
  }
}

const rectOf = (el) => (el && typeof el.getBoundingClientRect === 'function' ? el.getBoundingClientRect() : null);

/** Shows the tooltip; `lines[0]` is the heading. Positioned at the pointer, or above the mark on focus. */
function showTip(ctx, lines, ev, anchor) {
  const { tip, container } = ctx;
  tip.replaceChildren();
  lines.forEach((line, i) => {
    const row = document.createElement('div');
    if (i === 0 && lines.length > 1) row.setAttribute('class', 'chart-tooltip-title');
    row.appendChild(document.createTextNode(line));
    tip.appendChild(row);
  });
  tip.style.display = 'block';
  if (anchor) anchor.setAttribute('aria-describedby', tip.getAttribute('id'));
  const box = rectOf(container);
  const pointer = ev && typeof ev.clientX === 'number' && ev.type !== 'focus';
  const at = pointer ? null : rectOf(anchor);
  if (!box || (!pointer && !at)) return;
  const px = (pointer ? ev.clientX : at.left + at.width / 2) - box.left;
  const py = (pointer ? ev.clientY : at.top) - box.top;
  const tw = tip.offsetWidth || 0;
  const th = tip.offsetHeight || 0;
  let left = px + 12;
  if (left + tw > box.width) left = Math.max(0, px - tw - 12); // flip to the left near the right edge
  let top = py - th - 10;
  if (top < 0) top = py + 16; // flip below near the top edge
  tip.style.left = `${Math.round(left)}px`;
  tip.style.top = `${Math.round(top)}px`;
}

function setActive(ctx, els) {
  for (const e of ctx.active) e.classList.remove('is-active');
  ctx.active = els;
  for (const e of els) e.classList.add('is-active');
}

function hideTip(ctx) {
  ctx.tip.style.display = 'none';
  setActive(ctx, []);
  if (ctx.onHide) ctx.onHide();
}

/**
 * Turns `el` into a data mark: class, tab stop, <title> (native tooltip and accessible name) and the
 * hover/focus tooltip. `onShow(ev)` replaces the default single-mark tooltip (line charts show a whole x).
 */
function addMark(ctx, el, title, onShow) {
  el.classList.add('mark');
  if (ctx.focusable) el.setAttribute('tabindex', '0');
  svgEl('title', null, el).appendChild(document.createTextNode(title));
  const show = onShow || ((ev) => {
    setActive(ctx, [el]);
    showTip(ctx, title.split('\n'), ev, el);
  });
  el.addEventListener('mouseenter', show);
  el.addEventListener('focus', show);
  el.addEventListener('mouseleave', () => hideTip(ctx));
  el.addEventListener('blur', () => hideTip(ctx));
  ctx.marks.push(el);
  return el;
}

function finish(ctx, count, label) {
  ctx.svg.setAttribute('data-points', String(count));
  ctx.svg.setAttribute('aria-label', label);
  return ctx.svg;
}

function renderEmpty(ctx, opts, what) {
  const message = str(opts.empty) || 'No data';
  svgText(ctx.svg, ctx.W / 2, ctx.H / 2, message,
    { 'text-anchor': 'middle', dy: '0.32em', class: 'chart-empty', 'font-size': ctx.W < 200 ? 10 : 14 }, MUTED);
  return finish(ctx, 0, `${prefix(opts)}${what}: ${message}`);
}

const prefix = (opts) => (opts.label ? `${str(opts.label)}. ` : '');

/** Series names for aria-labels, capped so a 40-series chart does not produce a paragraph. */
function nameList(series) {
  const names = series.slice(0, 5).map((s) => s.name).join(', ');
  return series.length > 5 ? `${names} and ${series.length - 5} more` : names;
}

function legend(ctx, series) {
  if (series.length < 2) return;
  const box = document.createElement('div');
  box.setAttribute('class', 'chart-legend');
  for (const s of series) {
    const item = document.createElement('span');
    item.setAttribute('class', 'chart-legend-item');
    const swatch = document.createElement('span');
    swatch.setAttribute('class', 'chart-legend-swatch');
    swatch.setAttribute('aria-hidden', 'true');
    swatch.style.background = s.color;
    item.appendChild(swatch);
    item.appendChild(document.createTextNode(s.name));
    box.appendChild(item);
  }
  ctx.container.appendChild(box);
}

/* ───────────────────────── layout and axes ───────────────────────── */

/** Plot rectangle, with the left margin sized to the widest y tick label. */
function layout(ctx, yLabels, xTitle, yTitle, top = 12) {
  const widest = yLabels.reduce((w, s) => Math.max(w, s.length), 0);
  const left = clamp(widest * CHAR_W + 12, 32, 200) + (yTitle ? 20 : 0);
  const bottom = 24 + (xTitle ? 18 : 0);
  const right = 24;
  return { x: left, y: top, w: Math.max(10, ctx.W - left - right), h: Math.max(10, ctx.H - top - bottom) };
}

const tickCount = (px, spacing) => clamp(Math.floor(px / spacing), 2, 10);

/** Band (category) ticks, skipping labels when they would overlap. `vertical` = stacked down the y axis. */
function bandTicks(labels, start, step, maxChars, vertical = false) {
  const shown = labels.map((l) => trunc(l, maxChars));
  const need = vertical ? 14 : shown.reduce((w, s) => Math.max(w, s.length), 0) * CHAR_W + 8;
  const every = Math.max(1, Math.ceil(need / step));
  const ticks = [];
  for (let i = 0; i < labels.length; i += every) ticks.push({ pos: start + (i + 0.5) * step, label: shown[i], full: labels[i] });
  return ticks;
}

function yAxis(ctx, plot, ticks, title, grid) {
  const g = svgEl('g', { class: 'chart-axis chart-axis-y' }, ctx.svg);
  for (const t of ticks) {
    if (grid) svgLine(g, plot.x, t.pos, plot.x + plot.w, t.pos, GRID, { class: 'chart-grid' });
    svgText(g, plot.x - 6, t.pos, t.label, { 'text-anchor': 'end', dy: '0.32em' }, MUTED, t.full);
  }
  svgLine(g, plot.x, plot.y, plot.x, plot.y + plot.h, AXIS);
  if (title) {
    svgText(g, 0, 0, title, {
      class: 'chart-axis-title', 'text-anchor': 'middle', transform: `translate(14 ${r1(plot.y + plot.h / 2)}) rotate(-90)`,
    });
  }
}

function xAxis(ctx, plot, ticks, title, grid) {
  const g = svgEl('g', { class: 'chart-axis chart-axis-x' }, ctx.svg);
  const y0 = plot.y + plot.h;
  for (const t of ticks) {
    if (grid) svgLine(g, t.pos, plot.y, t.pos, y0, GRID, { class: 'chart-grid' });
    svgLine(g, t.pos, y0, t.pos, y0 + 4, AXIS);
    svgText(g, t.pos, y0 + 16, t.label, { 'text-anchor': 'middle' }, MUTED, t.full);
  }
  svgLine(g, plot.x, y0, plot.x + plot.w, y0, AXIS);
  if (title) svgText(g, plot.x + plot.w / 2, ctx.H - 6, title, { class: 'chart-axis-title', 'text-anchor': 'middle' });
}

/** Maps a pointer event to viewBox x, or null when layout information is unavailable. */
function pointerX(ctx, ev) {
  const box = rectOf(ctx.svg);
  if (!box || !box.width || typeof ev.clientX !== 'number') return null;
  return ((ev.clientX - box.left) / box.width) * ctx.W;
}

/** Index of the value in sorted `positions` nearest to `x`. */
function nearest(positions, x) {
  let lo = 0;
  let hi = positions.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (positions[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo > 0 && x - positions[lo - 1] < positions[lo] - x ? lo - 1 : lo;
}

/** Path through points, starting a new segment after each gap (null/NaN y) rather than bridging it. */
function segments(points) {
  const out = [];
  let cur = [];
  for (const p of points) {
    if (p) {
      cur.push(p);
    } else if (cur.length) {
      out.push(cur);
      cur = [];
    }
  }
  if (cur.length) out.push(cur);
  return out;
}
const pathOf = (seg) => seg.map(([x, y], i) => `${i ? 'L' : 'M'}${r1(x)},${r1(y)}`).join('');

/* ───────────────────────── charts ───────────────────────── */

function guessXType(series) {
  const x = series?.[0]?.points?.[0]?.x;
  if (x instanceof Date || (typeof x === 'string' && /^\d{4}-\d{2}-\d{2}/.test(x))) return 'time';
  return typeof x === 'number' ? 'number' : 'category';
}

/**
 * Line chart. Hovering anywhere in the plot snaps to the nearest x and lists every series' value there.
 * Points with a null/NaN y leave a gap in the line; points whose x cannot be read are dropped.
 * `xFormat` receives a Date (time), number (number) or string (category). Time axes are labelled in UTC.
 *
 * @param {HTMLElement} container
 * @param {{series: {name: string, points: {x: (Date|string|number), y: number}[]}[],
 *   xType?: 'time'|'number'|'category', xLabel?: string, yLabel?: string, yFormat?: (n: number) => string,
 *   xFormat?: (x: any) => string, height?: number, width?: number, area?: boolean, empty?: string, label?: string}} opts
 * @returns {SVGSVGElement}
 */
export function lineChart(container, opts = {}) {
  const ctx = setup(container, 'line', opts.width || 640, opts.height || 260);
  const xType = ['time', 'number', 'category'].includes(opts.xType) ? opts.xType : guessXType(opts.series);
  const yFmt = (v) => str((opts.yFormat || formatNumber)(v));
  const cats = [];
  const catIndex = new Map();
  const position = (x) => {
    if (xType === 'time') return toTime(x);
    if (xType === 'number') return num(x);
    if (x === null || x === undefined) return NaN;
    const key = String(x);
    if (!catIndex.has(key)) {
      catIndex.set(key, cats.length);
      cats.push(key);
    }
    return catIndex.get(key);
  };
  const series = (opts.series || []).map((s, i) => {
    const points = (s?.points || []).map((p) => ({ xv: position(p?.x), y: num(p?.y) })).filter((p) => finite(p.xv));
    points.sort((a, b) => a.xv - b.xv); // stable, so category order is kept
    return { name: str(s?.name) || `Series ${i + 1}`, color: color(i), points };
  });
  const valid = series.flatMap((s) => s.points.filter((p) => finite(p.y)));
  if (!valid.length) return renderEmpty(ctx, opts, 'Line chart');

  const [yLo, yHi] = extent(valid.map((p) => p.y));
  const ys = niceScale(Math.min(0, yLo), Math.max(0, yHi), tickCount(ctx.H - 50, 45));
  const yTickLabels = ys.ticks.map(yFmt);
  const plot = layout(ctx, yTickLabels, opts.xLabel, opts.yLabel);
  const y = linear(ys.min, ys.max, plot.y + plot.h, plot.y);
  const xCount = tickCount(plot.w, 90);

  let x;
  let xTicks;
  let xText;
  if (xType === 'category') {
    const step = plot.w / cats.length;
    const fmt = opts.xFormat || String;
    x = (v) => plot.x + (v + 0.5) * step;
    xText = (v) => str(fmt(cats[v]));
    xTicks = bandTicks(cats.map((c) => str(fmt(c))), plot.x, step, 18);
  } else if (xType === 'time') {
    let [lo, hi] = extent(valid.map((p) => p.xv));
    if (lo === hi) [lo, hi] = [lo - DAY, hi + DAY];
    x = linear(lo, hi, plot.x, plot.x + plot.w);
    xText = (v) => (opts.xFormat ? str(opts.xFormat(new Date(v))) : formatDate(v));
    const daily = valid.every((p) => p.xv % DAY === 0);
    xTicks = timeTicks(lo, hi, xCount, daily ? DAY : 0).map((t) => ({ pos: x(t.t), label: opts.xFormat ? xText(t.t) : t.label }));
  } else {
    const xs = niceScale(...extent(valid.map((p) => p.xv)), xCount);
    x = linear(xs.min, xs.max, plot.x, plot.x + plot.w);
    xText = (v) => str((opts.xFormat || formatNumber)(v));
    xTicks = xs.ticks.map((t) => ({ pos: x(t), label: xText(t) }));
  }
  yAxis(ctx, plot, ys.ticks.map((t, i) => ({ pos: y(t), label: yTickLabels[i] })), str(opts.yLabel), true);
  xAxis(ctx, plot, xTicks, str(opts.xLabel), false);

  const guide = svgLine(ctx.svg, 0, plot.y, 0, plot.y + plot.h, AXIS, { class: 'chart-guide', 'stroke-dasharray': '3 3' });
  guide.style.display = 'none';
  const overlay = svgEl('rect', { class: 'chart-overlay', x: plot.x, y: plot.y, width: r1(plot.w), height: r1(plot.h) }, ctx.svg);
  Object.assign(overlay.style, { fill: 'transparent', pointerEvents: 'all' });
  ctx.onHide = () => { guide.style.display = 'none'; };

  // One group per distinct x, so hovering or focusing any point can report all series at that x.
  const groups = new Map();
  const dense = valid.length > plot.w / 6;
  const baseline = y(clamp(0, ys.min, ys.max));
  const segs = series.map((s) => segments(s.points.map((p) => (finite(p.y) ? [x(p.xv), y(p.y)] : null))));
  // All areas go under all lines, so a translucent fill never dims another series' line.
  if (opts.area) {
    segs.forEach((list, i) => list.forEach((seg) => {
      const area = svgEl('path', {
        class: 'chart-area', 'fill-opacity': 0.15,
        d: `${pathOf(seg)}L${r1(seg[seg.length - 1][0])},${r1(baseline)}L${r1(seg[0][0])},${r1(baseline)}Z`,
      }, ctx.svg);
      area.style.fill = series[i].color;
    }));
  }
  segs.forEach((list, i) => list.forEach((seg) => {
    const line = svgEl('path', { class: 'chart-line', d: pathOf(seg), fill: 'none', 'stroke-width': 2, 'stroke-linejoin': 'round' }, ctx.svg);
    line.style.stroke = series[i].color;
  }));
  series.forEach((s) => {
    for (const p of s.points) {
      if (!finite(p.y)) continue;
      if (!groups.has(p.xv)) groups.set(p.xv, { xv: p.xv, items: [] });
      const group = groups.get(p.xv);
      const dot = svgEl('circle', { cx: r1(x(p.xv)), cy: r1(y(p.y)), r: dense ? 3 : 3.5 }, ctx.svg);
      dot.style.fill = s.color;
      group.items.push({ name: s.name, y: p.y, el: dot });
      addMark(ctx, dot, `${s.name}\n${xText(p.xv)}: ${yFmt(p.y)}`, (ev) => showGroup(group, ev, dot));
    }
  });
  const sorted = [...groups.values()].sort((a, b) => a.xv - b.xv);
  const positions = sorted.map((g) => x(g.xv));

  function showGroup(group, ev, anchor) {
    setActive(ctx, group.items.map((it) => it.el));
    const gx = r1(x(group.xv));
    guide.setAttribute('x1', gx);
    guide.setAttribute('x2', gx);
    guide.style.display = '';
    const lines = group.items.map((it) => `${it.name}: ${yFmt(it.y)}`);
    showTip(ctx, [xText(group.xv), ...lines], ev, anchor);
  }
  overlay.addEventListener('mousemove', (ev) => {
    const px = pointerX(ctx, ev);
    if (px !== null) showGroup(sorted[nearest(positions, px)], ev, null);
  });
  overlay.addEventListener('mouseleave', () => hideTip(ctx));

  if (dense) ctx.svg.setAttribute('data-dense', '');
  legend(ctx, series);
  const xs = extent(valid.map((p) => p.xv));
  const xRange = xType === 'category' ? plural(cats.length, 'category', 'categories') : `from ${xText(xs[0])} to ${xText(xs[1])}`;
  return finish(ctx, valid.length, `${prefix(opts)}Line chart of ${str(opts.yLabel) || 'values'} by ${str(opts.xLabel) || 'x'}, `
    + `${series.length} series (${nameList(series)}), ${plural(valid.length, 'point')} ${xRange}; values range from ${yFmt(yLo)} to ${yFmt(yHi)}.`);
}

/**
 * Bar chart, grouped or stacked, vertical or horizontal. `xLabel` always names the category axis and `yLabel`
 * the value axis, whichever way the bars run, so toggling `horizontal` needs no other change.
 * Null/NaN values draw no bar.
 *
 * @param {HTMLElement} container
 * @param {{categories: string[], series: {name: string, values: number[]}[], stacked?: boolean, horizontal?: boolean,
 *   xLabel?: string, yLabel?: string, yFormat?: (n: number) => string, height?: number, width?: number,
 *   empty?: string, label?: string}} opts
 * @returns {SVGSVGElement}
 */
export function barChart(container, opts = {}) {
  const ctx = setup(container, 'bar', opts.width || 640, opts.height || 260);
  const cats = (opts.categories || []).map(str);
  const fmt = (v) => str((opts.yFormat || formatNumber)(v));
  const series = (opts.series || []).map((s, i) => ({
    name: str(s?.name) || `Series ${i + 1}`, color: color(i), values: cats.map((_, j) => num(s?.values?.[j])),
  }));
  const count = series.reduce((n, s) => n + s.values.filter(finite).length, 0);
  if (!cats.length || !count) return renderEmpty(ctx, opts, 'Bar chart');

  const horizontal = !!opts.horizontal;
  const stacked = !!opts.stacked && series.length > 1;
  // Stacks grow away from zero on each side, so negative values stack downward separately.
  let lo = 0;
  let hi = 0;
  cats.forEach((_, j) => {
    let pos = 0;
    let neg = 0;
    for (const s of series) {
      const v = s.values[j];
      if (!finite(v)) continue;
      if (!stacked) {
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      } else if (v >= 0) pos += v;
      else neg += v;
    }
    lo = Math.min(lo, neg);
    hi = Math.max(hi, pos);
  });
  const maxChars = horizontal ? 20 : 18;
  const catLabels = cats.map((c) => trunc(c, maxChars));
  const vs = niceScale(lo, hi, horizontal ? tickCount(ctx.W - 200, 90) : tickCount(ctx.H - 50, 45));
  const valueLabels = vs.ticks.map(fmt);
  const plot = layout(ctx, horizontal ? catLabels : valueLabels, opts.xLabel, opts.yLabel);
  const bandLen = horizontal ? plot.h : plot.w;
  const step = bandLen / cats.length;
  const v = horizontal ? linear(vs.min, vs.max, plot.x, plot.x + plot.w) : linear(vs.min, vs.max, plot.y + plot.h, plot.y);
  const valueTicks = vs.ticks.map((t, i) => ({ pos: v(t), label: valueLabels[i] }));
  const catTicks = bandTicks(cats, horizontal ? plot.y : plot.x, step, maxChars, horizontal);
  if (horizontal) {
    xAxis(ctx, plot, valueTicks, str(opts.yLabel), true);
    yAxis(ctx, plot, catTicks, str(opts.xLabel), false);
  } else {
    yAxis(ctx, plot, valueTicks, str(opts.yLabel), true);
    xAxis(ctx, plot, catTicks, str(opts.xLabel), false);
  }

  const bandStart = (horizontal ? plot.y : plot.x) + step * 0.1;
  const bandW = step * 0.8;
  const subW = stacked ? bandW : bandW / series.length;
  const g = svgEl('g', { class: 'chart-bars' }, ctx.svg);
  const bar = (b0, bw, v0, v1) => {
    const [a, b] = [v(v0), v(v1)];
    return horizontal
      ? { x: r1(Math.min(a, b)), y: r1(b0), width: r1(Math.abs(b - a)), height: r1(bw) }
      : { x: r1(b0), y: r1(Math.min(a, b)), width: r1(bw), height: r1(Math.abs(b - a)) };
  };
  cats.forEach((cat, j) => {
    let pos = 0;
    let neg = 0;
    const total = series.reduce((t, s) => t + (finite(s.values[j]) ? s.values[j] : 0), 0);
    series.forEach((s, i) => {
      const val = s.values[j];
      if (!finite(val)) return;
      let v0 = 0;
      if (stacked && val >= 0) {
        v0 = pos;
        pos += val;
      } else if (stacked) {
        v0 = neg;
        neg += val;
      }
      const b0 = bandStart + j * step + (stacked ? 0 : i * subW);
      const rect = svgEl('rect', bar(b0, Math.max(1, subW - (stacked ? 0 : 1)), v0, v0 + val), g);
      rect.style.fill = s.color;
      const lines = [cat, series.length > 1 ? `${s.name}: ${fmt(val)}` : `${str(opts.yLabel) || 'Value'}: ${fmt(val)}`];
      if (stacked) lines.push(`Total: ${fmt(total)}`);
      addMark(ctx, rect, lines.join('\n'));
    });
  });

  legend(ctx, series);
  const [dLo, dHi] = extent(series.flatMap((s) => s.values.filter(finite)));
  return finish(ctx, count, `${prefix(opts)}${stacked ? 'Stacked bar' : 'Bar'} chart of ${str(opts.yLabel) || 'values'} by `
    + `${str(opts.xLabel) || 'category'}, ${plural(cats.length, 'category', 'categories')}, ${series.length} series (${nameList(series)}); `
    + `values range from ${fmt(dLo)} to ${fmt(dHi)}.`);
}

/**
 * Heatmap of rows × columns. Null/NaN cells are drawn empty (outlined, not a mark). Colour intensity is the
 * value's position between `min` and `max` (default: the data's range); a gradient legend shows the scale.
 *
 * @param {HTMLElement} container
 * @param {{rows: string[], columns: string[], values: (number|null)[][], format?: (n: number) => string,
 *   xLabel?: string, yLabel?: string, min?: number, max?: number, height?: number, width?: number,
 *   empty?: string, label?: string}} opts
 * @returns {SVGSVGElement}
 */
export function heatmap(container, opts = {}) {
  const rows = (opts.rows || []).map(str);
  const cols = (opts.columns || []).map(str);
  const fmt = (v) => str((opts.format || formatNumber)(v));
  const cells = [];
  rows.forEach((_, i) => cols.forEach((__, j) => cells.push({ i, j, v: num(opts.values?.[i]?.[j]) })));
  const filled = cells.filter((c) => finite(c.v));
  const cellH = rows.length <= 20 ? 24 : Math.max(8, 480 / rows.length);
  const bottom = 24 + (opts.xLabel ? 18 : 0);
  const ctx = setup(container, 'heatmap', opts.width || 640, opts.height || Math.max(120, 30 + bottom + rows.length * cellH));
  if (!filled.length) return renderEmpty(ctx, opts, 'Heatmap');

  const [dLo, dHi] = extent(filled.map((c) => c.v));
  const lo = finite(num(opts.min)) ? num(opts.min) : dLo;
  const hi = finite(num(opts.max)) ? num(opts.max) : dHi;
  const t = (val) => (hi > lo ? clamp((val - lo) / (hi - lo), 0, 1) : 1);
  const plot = layout(ctx, rows.map((r) => trunc(r, 18)), opts.xLabel, opts.yLabel, 30);
  plot.w = ctx.W - plot.x - 16; // no trailing tick label to make room for
  const cw = plot.w / cols.length;
  const ch = plot.h / rows.length;
  yAxis(ctx, plot, bandTicks(rows, plot.y, ch, 18, true), str(opts.yLabel), false);
  xAxis(ctx, plot, bandTicks(cols, plot.x, cw, 12), str(opts.xLabel), false);

  const gap = cw > 6 && ch > 6 ? 1 : 0;
  const showValues = cw >= 36 && ch >= 16;
  const g = svgEl('g', { class: 'chart-cells' }, ctx.svg);
  for (const c of cells) {
    const box = { x: r1(plot.x + c.j * cw), y: r1(plot.y + c.i * ch), width: r1(Math.max(1, cw - gap)), height: r1(Math.max(1, ch - gap)) };
    if (!finite(c.v)) {
      const empty = svgEl('rect', { ...box, class: 'chart-empty-cell', fill: 'none', 'stroke-dasharray': '2 2' }, g);
      empty.style.stroke = GRID;
      continue;
    }
    const k = t(c.v);
    const rect = svgEl('rect', { ...box, 'fill-opacity': r1(0.08 + 0.92 * k) }, g);
    rect.style.fill = color(0);
    addMark(ctx, rect, `${rows[c.i]} × ${cols[c.j]}\n${fmt(c.v)}`);
    if (showValues) {
      const label = svgText(g, box.x + box.width / 2, box.y + box.height / 2, fmt(c.v),
        { 'text-anchor': 'middle', dy: '0.32em', 'font-size': 11 }, k > 0.55 ? '#fff' : TEXT);
      label.style.pointerEvents = 'none';
    }
  }

  // Colour legend: a gradient over the same opacity ramp as the cells, labelled with min and max.
  const id = `chart-grad-${++uid}`;
  const grad = svgEl('linearGradient', { id, x1: 0, x2: 1, y1: 0, y2: 0 }, svgEl('defs', null, ctx.svg));
  for (const [offset, opacity] of [[0, 0.08], [1, 1]]) {
    svgEl('stop', { offset, 'stop-opacity': opacity }, grad).style.stopColor = color(0);
  }
  const lg = svgEl('g', { class: 'chart-color-legend' }, ctx.svg);
  const gx = ctx.W - 16 - 120 - 44;
  svgEl('rect', { x: gx, y: 8, width: 120, height: 10, fill: `url(#${id})`, rx: 2 }, lg);
  svgText(lg, gx - 4, 13, fmt(lo), { 'text-anchor': 'end', dy: '0.32em', 'font-size': 11 }, MUTED);
  svgText(lg, gx + 124, 13, fmt(hi), { 'text-anchor': 'start', dy: '0.32em', 'font-size': 11 }, MUTED);

  return finish(ctx, filled.length, `${prefix(opts)}Heatmap of ${str(opts.yLabel) || 'rows'} by ${str(opts.xLabel) || 'columns'}, `
    + `${plural(rows.length, 'row')} × ${plural(cols.length, 'column')}, ${plural(filled.length, 'cell')} with values ranging from ${fmt(dLo)} to ${fmt(dHi)}.`);
}

/**
 * Scatter chart. With `diagonal`, both axes share one scale and the y = x reference line is drawn, which is
 * what a predicted-vs-actual plot needs to be read honestly.
 *
 * @param {HTMLElement} container
 * @param {{series: {name: string, points: {x: number, y: number, label?: string}[]}[], xLabel?: string, yLabel?: string,
 *   diagonal?: boolean, xFormat?: (n: number) => string, yFormat?: (n: number) => string, height?: number,
 *   width?: number, empty?: string, label?: string}} opts
 * @returns {SVGSVGElement}
 */
export function scatterChart(container, opts = {}) {
  const ctx = setup(container, 'scatter', opts.width || 640, opts.height || 260);
  const xFmt = (v) => str((opts.xFormat || formatNumber)(v));
  const yFmt = (v) => str((opts.yFormat || formatNumber)(v));
  const series = (opts.series || []).map((s, i) => ({
    name: str(s?.name) || `Series ${i + 1}`, color: color(i),
    points: (s?.points || []).map((p) => ({ x: num(p?.x), y: num(p?.y), label: str(p?.label) })).filter((p) => finite(p.x) && finite(p.y)),
  }));
  const all = series.flatMap((s) => s.points);
  if (!all.length) return renderEmpty(ctx, opts, 'Scatter chart');

  const [xLo, xHi] = extent(all.map((p) => p.x));
  const [yLo, yHi] = extent(all.map((p) => p.y));
  const yCount = tickCount(ctx.H - 50, 45);
  let xs;
  let ys;
  if (opts.diagonal) {
    ys = niceScale(Math.min(xLo, yLo), Math.max(xHi, yHi), yCount);
    xs = ys;
  } else {
    ys = niceScale(yLo, yHi, yCount);
  }
  const yTickLabels = ys.ticks.map(yFmt);
  const plot = layout(ctx, yTickLabels, opts.xLabel, opts.yLabel);
  if (!xs) xs = niceScale(xLo, xHi, tickCount(plot.w, 90));
  const x = linear(xs.min, xs.max, plot.x, plot.x + plot.w);
  const y = linear(ys.min, ys.max, plot.y + plot.h, plot.y);
  yAxis(ctx, plot, ys.ticks.map((t, i) => ({ pos: y(t), label: yTickLabels[i] })), str(opts.yLabel), true);
  xAxis(ctx, plot, xs.ticks.map((t) => ({ pos: x(t), label: xFmt(t) })), str(opts.xLabel), true);

  if (opts.diagonal) {
    const d = svgLine(ctx.svg, x(xs.min), y(xs.min), x(xs.max), y(xs.max), MUTED, { class: 'chart-diagonal', 'stroke-dasharray': '4 4' });
    svgEl('title', null, d).appendChild(document.createTextNode('y = x'));
  }
  const g = svgEl('g', { class: 'chart-points' }, ctx.svg);
  const xName = str(opts.xLabel) || 'x';
  const yName = str(opts.yLabel) || 'y';
  series.forEach((s) => {
    for (const p of s.points) {
      const dot = svgEl('circle', { cx: r1(x(p.x)), cy: r1(y(p.y)), r: 4, 'fill-opacity': 0.75 }, g);
      dot.style.fill = s.color;
      const head = [p.label, series.length > 1 ? s.name : ''].filter(Boolean).join(' · ');
      addMark(ctx, dot, [head, `${xName}: ${xFmt(p.x)}`, `${yName}: ${yFmt(p.y)}`].filter(Boolean).join('\n'));
    }
  });

  legend(ctx, series);
  return finish(ctx, all.length, `${prefix(opts)}Scatter chart of ${yName} against ${xName}, ${plural(all.length, 'point')}`
    + `${series.length > 1 ? ` in ${series.length} series (${nameList(series)})` : ''}; ${xName} from ${xFmt(xLo)} to ${xFmt(xHi)}, `
    + `${yName} from ${yFmt(yLo)} to ${yFmt(yHi)}${opts.diagonal ? '; dashed line marks y = x' : ''}.`);
}

/**
 * Sparkline: a 120×32 line with no axes, for tables and stat cards. Hover shows the nearest value. Marks are
 * not tab stops (a table full of sparklines would swamp the tab order); the accessible name is `label`.
 *
 * @param {HTMLElement} container
 * @param {number[]} values
 * @param {{format?: (n: number) => string, label?: string, empty?: string}} [opts]
 * @returns {SVGSVGElement}
 */
export function sparkline(container, values, opts = {}) {
  const W = 120;
  const H = 32;
  const ctx = setup(container, 'sparkline', W, H, true);
  const fmt = (v) => str((opts.format || formatNumber)(v));
  const vals = (Array.isArray(values) ? values : []).map(num);
  const valid = vals.filter(finite);
  if (!valid.length) {
    renderEmpty(ctx, opts, 'Sparkline');
    if (opts.label) ctx.svg.setAttribute('aria-label', str(opts.label));
    return ctx.svg;
  }
  const [lo, hi] = extent(valid);
  const pad = 3;
  const x = linear(0, Math.max(1, vals.length - 1), pad, W - pad);
  const y = hi === lo ? () => H / 2 : linear(lo, hi, H - pad, pad);
  const at = (i) => (vals.length === 1 ? W / 2 : x(i));
  for (const seg of segments(vals.map((v, i) => (finite(v) ? [at(i), y(v)] : null)))) {
    const line = svgEl('path', { class: 'chart-line', d: pathOf(seg), fill: 'none', 'stroke-width': 1.5, 'stroke-linejoin': 'round' }, ctx.svg);
    line.style.stroke = color(0);
  }
  const overlay = svgEl('rect', { class: 'chart-overlay', x: 0, y: 0, width: W, height: H }, ctx.svg);
  Object.assign(overlay.style, { fill: 'transparent', pointerEvents: 'all' });
  ctx.svg.setAttribute('data-dense', ''); // points stay hidden until hovered; only the last one shows
  const dots = [];
  let last = -1;
  vals.forEach((v, i) => {
    if (!finite(v)) return;
    const dot = svgEl('circle', { cx: r1(at(i)), cy: r1(y(v)), r: 2.5 }, ctx.svg);
    dot.style.fill = color(0);
    addMark(ctx, dot, fmt(v));
    dots.push({ pos: at(i), el: dot, text: fmt(v) });
    last = dots.length - 1;
  });
  dots[last].el.classList.add('is-last');
  const positions = dots.map((d) => d.pos);
  overlay.addEventListener('mousemove', (ev) => {
    const px = pointerX(ctx, ev);
    if (px === null) return;
    const d = dots[nearest(positions, px)];
    setActive(ctx, [d.el]);
    showTip(ctx, [d.text], ev, null);
  });
  overlay.addEventListener('mouseleave', () => hideTip(ctx));

  const summary = `Sparkline of ${plural(valid.length, 'value')} from ${fmt(lo)} to ${fmt(hi)}, latest ${fmt(valid[valid.length - 1])}`;
  return finish(ctx, valid.length, opts.label ? str(opts.label) : summary);
}

/**
 * Funnel: one centred bar per stage, width proportional to the value, annotated with the value, its share of
 * the first stage and of the previous stage. Stages with a null/NaN value are dropped.
 *
 * @param {HTMLElement} container
 * @param {{stages: {label: string, value: number}[], format?: (n: number) => string, height?: number,
 *   width?: number, empty?: string, label?: string}} opts
 * @returns {SVGSVGElement}
 */
export function funnelChart(container, opts = {}) {
  const fmt = (v) => str((opts.format || formatNumber)(v));
  const stages = (opts.stages || []).map((s) => ({ label: str(s?.label), value: num(s?.value) })).filter((s) => finite(s.value));
  const W = opts.width || 640;
  const ctx = setup(container, 'funnel', W, opts.height || Math.max(80, stages.length * 44 + 16));
  if (!stages.length) return renderEmpty(ctx, opts, 'Funnel');

  const rowH = (ctx.H - 16) / stages.length;
  const max = Math.max(0, ...stages.map((s) => s.value));
  const labelW = clamp(stages.reduce((w, s) => Math.max(w, trunc(s.label, 24).length), 0) * CHAR_W + 20, 60, 190);
  const statsW = 210;
  const barX = labelW;
  const barW = Math.max(40, W - labelW - statsW - 12);
  const first = stages[0].value;
  const g = svgEl('g', { class: 'chart-stages' }, ctx.svg);
  const summary = [];
  stages.forEach((s, i) => {
    const top = 8 + i * rowH;
    const mid = top + rowH / 2;
    const w = max > 0 ? (Math.max(0, s.value) / max) * barW : 0;
    const bh = Math.max(4, rowH * 0.7);
    const rect = svgEl('rect', { x: r1(barX + (barW - w) / 2), y: r1(mid - bh / 2), width: r1(Math.max(1, w)), height: r1(bh), rx: 2 }, g);
    rect.style.fill = color(0);
    const ofFirst = first > 0 ? s.value / first : NaN;
    const prev = i > 0 ? stages[i - 1].value : NaN;
    const ofPrev = prev > 0 ? s.value / prev : NaN;
    const shares = i === 0 ? `${formatPercent(ofFirst)} of first` : `${formatPercent(ofFirst)} of first · ${formatPercent(ofPrev)} of previous`;
    const title = [`${s.label}: ${fmt(s.value)}`, `${formatPercent(ofFirst)} of first stage`];
    if (i > 0) title.push(`${formatPercent(ofPrev)} of previous stage`);
    addMark(ctx, rect, title.join('\n'));
    svgText(g, labelW - 10, mid, trunc(s.label, 24), { 'text-anchor': 'end', dy: '0.32em' }, TEXT, s.label);
    const sx = barX + barW + 12;
    svgText(g, sx, mid - (rowH >= 30 ? 7 : 0), fmt(s.value), { dy: '0.32em', 'font-weight': 600 });
    if (rowH >= 30) svgText(g, sx, mid + 8, shares, { dy: '0.32em', 'font-size': 11 }, MUTED);
    summary.push(i === 0 ? `${s.label} ${fmt(s.value)}` : `${s.label} ${fmt(s.value)} (${formatPercent(ofFirst)})`);
  });
  const shown = summary.length > 8 ? [...summary.slice(0, 8), `${summary.length - 8} more`] : summary;
  return finish(ctx, stages.length, `${prefix(opts)}Funnel of ${plural(stages.length, 'stage')}: ${shown.join(' → ')}.`);
}
