// Small DOM helpers. Text always goes in as text (never as HTML): dataset,
// class and job names come from users.

// h('tr', {class: 'x', dataset: {id: 1}}, child, 'text', [children]) -> Element
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function table(columns, rows) {
  return h(
    'table',
    {},
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', {}, c)))),
    h('tbody', {}, rows),
  );
}

export function errorBox(error) {
  const what = error?.status ? `${error.status}: ` : '';
  return h('p', { class: 'error', role: 'alert' }, what + (error?.message || String(error)));
}

export function percent(x, digits = 1) {
  return Number.isFinite(x) ? `${(100 * x).toFixed(digits)}%` : '';
}

export function number(x, digits = 3) {
  const v = Number(x);
  return Number.isFinite(v) ? v.toFixed(digits) : '';
}

export function duration(seconds) {
  const s = Math.round(Number(seconds));
  if (!Number.isFinite(s) || s <= 0) return '';
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

// A shade of the accent colour for a share in [0, 1] (heat maps, bars),
// set through the CSSOM: the Content-Security-Policy refuses style attributes.
export function shade(el, share) {
  const v = Math.max(0, Math.min(1, share));
  el.style.backgroundColor = `rgba(37, 99, 235, ${(0.08 + 0.82 * v).toFixed(3)})`;
  if (v > 0.55) el.style.color = '#fff';
  return el;
}
