// Self-check for charts.js: `node charts.test.mjs`. Uses a tiny DOM shim (below) with just the APIs charts.js
// is allowed to use; innerHTML deliberately throws so any attempt to render markup from strings fails loudly.
import assert from 'node:assert/strict';

/* ───────────── minimal DOM shim ───────────── */

class Node {
  constructor() { this.childNodes = []; this.parentNode = null; }
  appendChild(child) {
    if (child.parentNode) child.parentNode.removeChild(child);
    child.parentNode = this;
    this.childNodes.push(child);
    return child;
  }
  removeChild(child) {
    const i = this.childNodes.indexOf(child);
    if (i < 0) throw new Error('removeChild: not a child');
    this.childNodes.splice(i, 1);
    child.parentNode = null;
    return child;
  }
  replaceChildren(...nodes) {
    for (const c of this.childNodes) c.parentNode = null;
    this.childNodes = [];
    for (const n of nodes) this.appendChild(typeof n === 'string' ? new Text(n) : n);
  }
  get textContent() { return this.childNodes.map((c) => c.textContent).join(''); }
  set textContent(v) { this.replaceChildren(...(v === '' || v == null ? [] : [new Text(String(v))])); }
}

class Text extends Node {
  constructor(data) { super(); this.data = data; this.nodeType = 3; }
  get textContent() { return this.data; }
  set textContent(v) { this.data = String(v); }
}

class Element extends Node {
  constructor(tagName, namespaceURI) {
    super();
    this.tagName = tagName;
    this.namespaceURI = namespaceURI;
    this.nodeType = 1;
    this.attributes = new Map();
    this.listeners = {};
    this.style = {};
    const self = this;
    this.classList = {
      list: () => (self.getAttribute('class') || '').split(/\s+/).filter(Boolean),
      add(...c) { self.setAttribute('class', [...new Set([...this.list(), ...c])].join(' ')); },
      remove(...c) { self.setAttribute('class', this.list().filter((x) => !c.includes(x)).join(' ')); },
      contains(c) { return this.list().includes(c); },
    };
  }
  setAttribute(k, v) { this.attributes.set(k, String(v)); }
  getAttribute(k) { return this.attributes.has(k) ? this.attributes.get(k) : null; }
  hasAttribute(k) { return this.attributes.has(k); }
  removeAttribute(k) { this.attributes.delete(k); }
  set innerHTML(_) { throw new Error('innerHTML must not be used'); }
  get innerHTML() { throw new Error('innerHTML must not be used'); }
  addEventListener(type, fn) { (this.listeners[type] ||= []).push(fn); }
  dispatch(type, init = {}) {
    const ev = { type, target: this, preventDefault() { this.defaultPrevented = true; }, ...init };
    // Bubble like real keydown/mousemove; mouseenter/leave and focus/blur do not bubble.
    const bubbles = !['mouseenter', 'mouseleave', 'focus', 'blur'].includes(type);
    for (let n = this; n; n = bubbles ? n.parentNode : null) for (const fn of n.listeners?.[type] || []) fn(ev);
    return ev;
  }
  focus() {
    if (document.activeElement === this) return;
    const prev = document.activeElement;
    document.activeElement = this;
    if (prev) prev.dispatch('blur');
    this.dispatch('focus');
  }
  getBoundingClientRect() { return rect; }
}

let rect = { left: 0, top: 0, width: 640, height: 260 };
const document = {
  activeElement: null,
  createElementNS: (ns, tag) => new Element(tag, ns),
  createElement: (tag) => new Element(tag.toUpperCase(), 'http://www.w3.org/1999/xhtml'),
  createTextNode: (data) => new Text(String(data)),
  head: new Element('HEAD'),
};
globalThis.document = document;

const charts = await import('./charts.js');
const { lineChart, barChart, heatmap, scatterChart, sparkline, funnelChart } = charts;

/* ───────────── helpers ───────────── */

const all = (root) => root.childNodes.flatMap((c) => (c.nodeType === 1 ? [c, ...all(c)] : []));
const marks = (svg) => all(svg).filter((e) => e.classList.contains('mark'));
const byClass = (root, c) => all(root).filter((e) => e.classList.contains(c));
const texts = (root) => all(root).filter((e) => e.tagName === 'text').map((t) => t.textContent);
const title = (el) => el.childNodes.find((c) => c.tagName === 'title')?.textContent;
const tooltip = (container) => byClass(container, 'chart-tooltip')[0];
const newContainer = () => new Element('DIV');

let passed = 0;
function test(name, fn) {
  try {
    fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    console.log(`FAIL ${name}`);
    throw e;
  }
}

function checkRoot(svg, kind, points) {
  assert.equal(svg.tagName, 'svg');
  assert.equal(svg.getAttribute('class'), 'chart');
  assert.equal(svg.getAttribute('role'), 'img');
  assert.equal(svg.getAttribute('data-chart'), kind);
  assert.equal(svg.getAttribute('data-points'), String(points));
  assert.ok(svg.getAttribute('aria-label')?.length > 5, 'aria-label present');
  for (const m of marks(svg)) {
    assert.ok(title(m), 'every mark has a <title>');
    assert.equal(m.getAttribute('tabindex'), kind === 'sparkline' ? null : '0');
  }
}

/* ───────────── tests ───────────── */

test('exports exactly the six chart functions', () => {
  assert.deepEqual(Object.keys(charts).sort(), ['barChart', 'funnelChart', 'heatmap', 'lineChart', 'scatterChart', 'sparkline']);
});

test('line chart: time axis, two series, gaps, legend, nice ticks, snapping tooltip', () => {
  const c = newContainer();
  const svg = lineChart(c, {
    xType: 'time', xLabel: 'Day', yLabel: 'Orders',
    series: [
      { name: 'Web', points: [{ x: '2026-11-01', y: 10 }, { x: '2026-11-02', y: 87 }, { x: '2026-11-03', y: null }, { x: '2026-11-04', y: 40 }] },
      { name: 'App', points: [{ x: new Date(Date.UTC(2026, 10, 1)), y: 5 }, { x: '2026-11-02', y: NaN }, { x: 'garbage', y: 3 }] },
    ],
  });
  checkRoot(svg, 'line', 4);
  assert.equal(marks(svg).length, 4);
  assert.equal(c.style.position, 'relative');
  assert.equal(byClass(svg, 'chart-line').length, 3, 'the null y splits Web into two segments');
  const t = texts(svg);
  for (const v of ['0', '20', '40', '60', '80', '100']) assert.ok(t.includes(v), `nice y tick ${v} in ${t}`);
  assert.ok(t.some((s) => /Nov/.test(s)), 'date tick labels');
  assert.ok(t.includes('Day') && t.includes('Orders'), 'axis titles');
  const legend = byClass(c, 'chart-legend')[0];
  assert.equal(byClass(legend, 'chart-legend-item').length, 2);

  const tip = tooltip(c);
  assert.equal(tip.getAttribute('role'), 'tooltip');
  assert.equal(tip.style.display, 'none');
  const overlay = byClass(svg, 'chart-overlay')[0];
  overlay.dispatch('mousemove', { clientX: 50, clientY: 100 }); // near the left edge → 1 Nov
  assert.equal(tip.style.display, 'block');
  assert.match(tip.textContent, /Web: 10/);
  assert.match(tip.textContent, /App: 5/);
  assert.equal(marks(svg).filter((m) => m.classList.contains('is-active')).length, 2);
  overlay.dispatch('mouseleave');
  assert.equal(tip.style.display, 'none');
});

test('line chart: focus shows tooltip, blur hides it, arrow keys move focus', () => {
  const c = newContainer();
  const svg = lineChart(c, { xType: 'number', series: [{ name: 'A', points: [{ x: 1, y: 2 }, { x: 2, y: 3 }, { x: 3, y: 1 }] }] });
  const [m0, m1] = marks(svg);
  m0.focus();
  assert.equal(tooltip(c).style.display, 'block');
  assert.match(tooltip(c).textContent, /A: 2/);
  m0.dispatch('keydown', { key: 'ArrowRight' });
  assert.equal(document.activeElement, m1);
  assert.match(tooltip(c).textContent, /A: 3/);
  m1.dispatch('blur');
  assert.equal(tooltip(c).style.display, 'none');
  assert.equal(byClass(c, 'chart-legend').length, 0, 'no legend for a single series');
});

test('line chart: category axis thins crowded labels; single point; all zero', () => {
  const c = newContainer();
  const points = Array.from({ length: 60 }, (_, i) => ({ x: `Segment number ${i}`, y: i }));
  const svg = lineChart(c, { xType: 'category', series: [{ name: 'S', points }] });
  checkRoot(svg, 'line', 60);
  const xLabels = texts(byClass(svg, 'chart-axis-x')[0]);
  assert.ok(xLabels.length > 1 && xLabels.length < 20, `thinned to ${xLabels.length}`);
  checkRoot(lineChart(c, { xType: 'time', series: [{ name: 'S', points: [{ x: '2026-11-01', y: 7 }] }] }), 'line', 1);
  const zero = lineChart(c, { xType: 'number', series: [{ name: 'S', points: [{ x: 1, y: 0 }, { x: 2, y: 0 }] }] });
  checkRoot(zero, 'line', 2);
  assert.equal(c.childNodes.filter((n) => n.tagName === 'svg').length, 1, 're-render clears the container');
});

test('bar chart: grouped with a NaN, huge numbers abbreviated', () => {
  const c = newContainer();
  const svg = barChart(c, {
    categories: ['A', 'B', 'C'], xLabel: 'Segment', yLabel: 'Revenue',
    series: [{ name: 'This year', values: [1.2e6, 3.4e6, null] }, { name: 'Last year', values: [2e6, NaN, 5e6] }],
  });
  checkRoot(svg, 'bar', 4);
  assert.equal(marks(svg).length, 4);
  assert.ok(marks(svg).every((m) => m.tagName === 'rect'));
  assert.ok(texts(svg).some((s) => /^\dM$/.test(s)), `abbreviated ticks: ${texts(svg)}`);
  assert.equal(title(marks(svg)[0]), 'A\nThis year: 1.2M');
  assert.equal(byClass(c, 'chart-legend-item').length, 2);
});

test('bar chart: stacked horizontal with negatives, all zero', () => {
  const c = newContainer();
  const svg = barChart(c, {
    categories: ['x', 'y'], stacked: true, horizontal: true,
    series: [{ name: 'up', values: [3, 4] }, { name: 'down', values: [-2, 1] }],
  });
  checkRoot(svg, 'bar', 4);
  assert.match(title(marks(svg)[1]), /Total: 1/);
  assert.ok(texts(svg).includes('-2') || texts(svg).includes('-4'), 'value axis extends below zero');
  checkRoot(barChart(c, { categories: ['a', 'b'], series: [{ name: 's', values: [0, 0] }] }), 'bar', 2);
});

test('heatmap: null cells empty, colour legend, min/max', () => {
  const c = newContainer();
  const svg = heatmap(c, {
    rows: ['Mon', 'Tue'], columns: ['00', '01', '02'], xLabel: 'Hour', yLabel: 'Weekday',
    values: [[1, 2, null], [4, undefined, 6]], min: 0, max: 10,
  });
  checkRoot(svg, 'heatmap', 4);
  assert.equal(marks(svg).length, 4);
  assert.equal(byClass(svg, 'chart-empty-cell').length, 2);
  assert.equal(all(svg).filter((e) => e.tagName === 'linearGradient').length, 1);
  const legendTexts = texts(byClass(svg, 'chart-color-legend')[0]);
  assert.deepEqual(legendTexts, ['0', '10']);
  assert.equal(title(marks(svg)[0]), 'Mon × 00\n1');
});

test('scatter chart: diagonal, labels, skipped points', () => {
  const c = newContainer();
  const svg = scatterChart(c, {
    xLabel: 'Predicted', yLabel: 'Actual', diagonal: true,
    series: [{ name: 'Model', points: [{ x: 1, y: 1.5, label: 'Alice' }, { x: 2, y: 1.8 }, { x: null, y: 3 }, { x: 4, y: 'x' }] }],
  });
  checkRoot(svg, 'scatter', 2);
  assert.equal(byClass(svg, 'chart-diagonal').length, 1);
  assert.equal(title(marks(svg)[0]), 'Alice\nPredicted: 1\nActual: 1.5');
  const single = scatterChart(c, { series: [{ name: 'a', points: [{ x: 5, y: 5 }] }, { name: 'b', points: [{ x: 6, y: 7 }] }] });
  checkRoot(single, 'scatter', 2);
  assert.equal(byClass(c, 'chart-legend-item').length, 2);
});

test('sparkline: fixed size, no tab stops, label is the accessible name, hover tooltip', () => {
  const c = newContainer();
  const svg = sparkline(c, [3, 5, null, 2, 8], { label: 'Orders, last 5 days' });
  checkRoot(svg, 'sparkline', 4);
  assert.equal(svg.getAttribute('width'), '120');
  assert.equal(svg.getAttribute('height'), '32');
  assert.equal(svg.getAttribute('aria-label'), 'Orders, last 5 days');
  assert.equal(marks(svg).length, 4);
  rect = { left: 0, top: 0, width: 120, height: 32 };
  byClass(svg, 'chart-overlay')[0].dispatch('mousemove', { clientX: 117, clientY: 10 });
  rect = { left: 0, top: 0, width: 640, height: 260 };
  assert.equal(tooltip(c).textContent, '8');
  checkRoot(sparkline(c, [4]), 'sparkline', 1);
  checkRoot(sparkline(c, [0, 0, 0]), 'sparkline', 3);
});

test('funnel: stages with shares of first and previous', () => {
  const c = newContainer();
  const svg = funnelChart(c, { stages: [{ label: 'Visited', value: 1000 }, { label: 'Carted', value: 400 }, { label: 'Bought', value: 100 }] });
  checkRoot(svg, 'funnel', 3);
  assert.equal(marks(svg).length, 3);
  assert.equal(title(marks(svg)[2]), 'Bought: 100\n10% of first stage\n25% of previous stage');
  assert.ok(texts(svg).includes('40% of first · 40% of previous'));
  const zeroFirst = funnelChart(c, { stages: [{ label: 'a', value: 0 }, { label: 'b', value: 0 }] });
  checkRoot(zeroFirst, 'funnel', 2);
});

test('user text is escaped: never parsed as markup', () => {
  const evil = '<img src=x onerror="alert(1)">&amp;';
  const c = newContainer();
  const renders = [
    () => lineChart(c, { xType: 'category', xLabel: evil, yLabel: evil, series: [{ name: evil, points: [{ x: evil, y: 1 }] }, { name: 'b', points: [] }] }),
    () => barChart(c, { categories: [evil], xLabel: evil, series: [{ name: evil, values: [1] }, { name: 'b', values: [2] }] }),
    () => heatmap(c, { rows: [evil], columns: [evil], values: [[1]], xLabel: evil }),
    () => scatterChart(c, { series: [{ name: evil, points: [{ x: 1, y: 2, label: evil }] }, { name: 'b', points: [] }] }),
    () => sparkline(c, [1, 2], { label: evil }),
    () => funnelChart(c, { stages: [{ label: evil, value: 3 }], label: evil }),
    () => lineChart(c, { series: [], empty: evil }),
  ];
  for (const render of renders) {
    const svg = render();
    const elements = all(c);
    assert.ok(!elements.some((e) => /img|script/i.test(e.tagName)), 'no element created from user text');
    assert.ok(c.textContent.includes(evil) || svg.getAttribute('aria-label').includes(evil), 'text kept verbatim');
  }
});

test('empty data: visible message and data-points="0" for every kind', () => {
  const c = newContainer();
  const cases = [
    ['line', () => lineChart(c, { series: [{ name: 'a', points: [{ x: 1, y: null }] }] })],
    ['bar', () => barChart(c, { categories: [], series: [] })],
    ['heatmap', () => heatmap(c, { rows: ['a'], columns: ['b'], values: [[null]] })],
    ['scatter', () => scatterChart(c, {})],
    ['sparkline', () => sparkline(c, [])],
    ['funnel', () => funnelChart(c, { stages: [] })],
  ];
  for (const [kind, render] of cases) {
    const svg = render();
    assert.equal(svg.getAttribute('data-chart'), kind);
    assert.equal(svg.getAttribute('data-points'), '0');
    assert.equal(marks(svg).length, 0);
    assert.deepEqual(texts(svg), ['No data'], kind);
  }
  const custom = barChart(c, { categories: ['a'], series: [{ name: 's', values: [null] }], empty: 'Nothing yet' });
  assert.deepEqual(texts(custom), ['Nothing yet']);
  assert.match(custom.getAttribute('aria-label'), /Nothing yet/);
});

test('a stylesheet with zero-specificity defaults is injected once', () => {
  const styles = document.head.childNodes.filter((n) => n.tagName === 'STYLE');
  assert.equal(styles.length, 1);
  assert.match(styles[0].textContent, /:where\(\.chart-tooltip\)/);
});

console.log(`\n${passed} passed, 0 failed`);
