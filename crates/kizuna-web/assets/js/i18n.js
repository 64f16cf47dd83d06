// Every string the app shows goes through t(): the English catalogue is the source, other locales fill in what
// they have (a missing key falls back to English, then to the key itself so a gap is visible, not blank).
// Numbers, money and dates are formatted with Intl in the chosen locale.
import en from './locales/en.js';
import ja from './locales/ja.js';

const catalogues = { en, ja };
export const LOCALES = [['en', 'English'], ['ja', '日本語']];

let locale = pickLocale();
let currency = 'USD';

function pickLocale() {
  const saved = globalThis.localStorage?.getItem('kizuna.locale');
  if (saved && catalogues[saved]) return saved;
  return (globalThis.navigator?.language || 'en').toLowerCase().startsWith('ja') ? 'ja' : 'en';
}

export function currentLocale() {
  return locale;
}

export function setLocale(next) {
  if (!catalogues[next]) return;
  locale = next;
  globalThis.localStorage?.setItem('kizuna.locale', next);
  document.documentElement.lang = next;
}

export function setCurrency(code) {
  if (code) currency = code;
}

/** t('home.title') or t('segments.count', {count: 3}) — `{name}` placeholders are replaced. */
export function t(key, vars = {}) {
  const text = catalogues[locale][key] ?? en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

export function formatNumber(value, options = {}) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return '—';
  return new Intl.NumberFormat(locale, { maximumFractionDigits: 2, ...options }).format(Number(value));
}

export function formatPercent(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return '—';
  return new Intl.NumberFormat(locale, { style: 'percent', maximumFractionDigits: digits }).format(Number(value));
}

export function formatMoney(value, code = currency) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return '—';
  // Sums of refunds can leave -0; a store never shows "-$0.00".
  const amount = Number(value) === 0 ? 0 : Number(value);
  try {
    return new Intl.NumberFormat(locale, { style: 'currency', currency: code }).format(amount);
  } catch {
    return `${formatNumber(amount)} ${code}`;
  }
}

export function formatDate(value, withTime = false) {
  if (!value) return '—';
  const date = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  const options = withTime
    ? { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' }
    : { year: 'numeric', month: 'short', day: 'numeric' };
  return new Intl.DateTimeFormat(locale, options).format(date);
}
