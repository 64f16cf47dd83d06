// Building DOM without innerHTML: every piece of text goes in as a text node, so data from customers (names,
// event properties, template output) can never become markup.

/**
 * h('a', {href: '/x', class: 'btn', onclick: fn}, 'text', child, [more children])
 * Attributes: `class`, `style` (string), `on<event>` (listener), booleans (true sets, false omits), `dataset`.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'value' && ('value' in el)) {
      el.value = value;
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's content. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table from column definitions: [{label, value: row => text|Node, class?}] */
export function table(columns, rows, { empty = '—', caption } = {}) {
  return h('table', { class: 'data' },
    caption ? h('caption', {}, caption) : null,
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label)))),
    h('tbody', {}, rows.length === 0
      ? h('tr', {}, h('td', { colspan: columns.length, class: 'empty' }, empty))
      : rows.map((row) => h('tr', {}, columns.map((c) => h('td', { class: c.class }, c.value(row)))))));
}

/** Debounces a function: calls it once `ms` after the last call. */
export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** An error box for a failed API call (message, and the field it names). */
export function errorBox(error) {
  return h('div', { class: 'error', role: 'alert' },
    h('strong', {}, error.code || 'error'), ' ', error.message,
    error.field ? h('span', { class: 'field' }, ` (${error.field})`) : null);
}

export function link(href, ...children) {
  return h('a', { href, 'data-link': true }, ...children);
}
