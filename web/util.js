// Small helpers shared by the page's modules: numbers arrive as decimal strings, times as ms.

export const TIMEFRAMES = ['1m', '5m', '15m', '1h', '4h', '1d'];
export const TF_SECONDS = { '1m': 60, '5m': 300, '15m': 900, '1h': 3600, '4h': 14400, '1d': 86400 };

export const UP = '#26a69a';
export const DOWN = '#ef5350';

/** A decimal string (or number) as a float; NaN for null/empty. */
export function num(value) {
  if (value === null || value === undefined || value === '') return NaN;
  return typeof value === 'number' ? value : parseFloat(value);
}

/** A candle of the protocol as a lightweight-charts bar: open_time ms -> UTC seconds. */
export function toBar(c) {
  return {
    time: Math.floor(c.open_time / 1000),
    open: num(c.open),
    high: num(c.high),
    low: num(c.low),
    close: num(c.close),
    volume: num(c.volume) || 0,
  };
}

/** Digits after the point of a decimal string ("43000.50" -> 2, "1.5E-7" -> 8). */
export function decimals(value) {
  const m = /^[-+]?\d*(?:\.(\d+))?(?:[eE]([-+]?\d+))?$/.exec(String(value).trim());
  if (!m) return 0;
  return Math.max(0, (m[1] ? m[1].length : 0) - (m[2] ? parseInt(m[2], 10) : 0));
}

/** An amount as the bus wrote it, without trailing zeros ("0.00300000" -> "0.003"). */
export function fmtAmount(value) {
  if (value === null || value === undefined || value === '') return '—';
  let s = String(value);
  if (/e/i.test(s)) s = String(Number(s));
  if (s.includes('.')) s = s.replace(/0+$/, '').replace(/\.$/, '');
  return s;
}

const moneyFormats = new Map();
/** Money with a fixed number of decimals and thousands separators; signed adds '+'. */
export function fmtMoney(value, digits = 2, signed = false) {
  const x = num(value);
  if (!Number.isFinite(x)) return '—';
  let f = moneyFormats.get(digits);
  if (!f) {
    f = new Intl.NumberFormat('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
    moneyFormats.set(digits, f);
  }
  const s = f.format(x);
  return signed && x > 0 ? '+' + s : s;
}

/** HH:MM:SS (UTC) of a ms timestamp. */
export function fmtTime(ms) {
  if (!Number.isFinite(ms)) return '--:--:--';
  return new Date(ms).toISOString().slice(11, 19);
}

/** base / quote / settle of a ccxt symbol ("BTC/USDT:USDT", "ETH/USDT"). */
export function parseSymbol(symbol) {
  const [pair, settle = null] = String(symbol).split(':');
  const [base = pair, quote = ''] = pair.split('/');
  return { base, quote, settle };
}

export function sameMarket(a, b) {
  return !!a && !!b && a.venue === b.venue && a.symbol === b.symbol;
}

/** Set an element's text only when it changed (no layout work for equal values). */
export function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

/** Set the sign class (pos/neg/flat) of an element from a number. */
export function setSign(el, x) {
  const cls = !Number.isFinite(x) || x === 0 ? 'flat' : x > 0 ? 'pos' : 'neg';
  if (el && el.dataset.sign !== cls) el.dataset.sign = cls;
}

/** localStorage that never throws (private windows, disabled storage). */
export const store = {
  get(key, fallback) {
    try {
      const v = window.localStorage.getItem(key);
      return v === null ? fallback : JSON.parse(v);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      window.localStorage.setItem(key, JSON.stringify(value));
    } catch {
      /* storage unavailable: the setting lasts for this page only */
    }
  },
};
