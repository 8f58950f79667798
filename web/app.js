// The live page of the gateway: wires the feed (feed.js) to the chart (chart.js), the side panel
// (panel.js) and the fill notifications (notify.js). Protocol: docs/gateway-protocol.md.

import { MainChart } from './chart.js';
import { Feed } from './feed.js';
import { Notifier } from './notify.js';
import { Panel } from './panel.js';
import { TIMEFRAMES, sameMarket, setText, store } from './util.js';

const STREAMS = ['MARKET', 'ACCOUNT', 'OPS'];
const SNAPSHOT_WAIT_MS = 3000; // no `history` this long after hello: ask with `subscribe`
const FILLS_SEED = 1000;

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

const state = {
  market: null, // {venue, symbol} shown
  markets: [],
  tf: TIMEFRAMES.includes(store.get('sqt.tf', '1m')) ? store.get('sqt.tf', '1m') : '1m',
  role: null,
  haveSnapshot: false, // a `history` of state.market arrived (a resume can continue from it)
  baseline: null, // hello.positions of the connection that subscribed: resume's fallback `after`
  marketGen: 0, // bumps on every market switch: late REST answers of the old market are dropped
  loadGen: 0, // bumps on every timeframe load: only the newest answer is drawn
  snapshotTimer: 0,
  errorTimer: 0,
};

const chart = new MainChart($('chart'));
const panel = new Panel();
const notifier = new Notifier({
  container: $('toasts'),
  soundToggle: $('toggle-sound'),
  toastToggle: $('toggle-toasts'),
});
// With auth on, the page is opened as /?token=...: the token goes with the WebSocket and REST.
// Opened as /?from=...&to=...&speed=10 (venue, symbol optional), the page plays that past window
// instead of the live feed: space pauses and resumes, the right arrow steps one frame.
const params = new URLSearchParams(location.search);
const token = params.get('token');
const wsQuery = new URLSearchParams();
if (token) wsQuery.set('token', token);
const playback = params.has('from');
if (playback) for (const k of ['from', 'to', 'speed', 'venue', 'symbol']) if (params.has(k)) wsQuery.set(k, params.get(k));
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
const feed = new Feed(wsQuery.size ? `${wsUrl}?${wsQuery}` : wsUrl, {
  onHello,
  onFrame,
  onState,
});

// ---- connection --------------------------------------------------------------------------

function onState(s) {
  const el = $('conn-state');
  el.dataset.state = s;
  setText(el, s);
}

function onHello(frame, reconnected) {
  const d = frame.data || {};
  state.markets = Array.isArray(d.markets) ? d.markets : [];
  fillMarkets();
  setRole(d.role ?? null);
  const heads = d.positions || {};
  // A stream whose head is behind what we saw was recreated: its old seqs mean nothing now.
  const recreated = STREAMS.filter((s) => feed.lastSeq[s] !== undefined && heads[s] != null && heads[s] < feed.lastSeq[s]);
  if (recreated.length) {
    feed.forget(recreated);
    state.haveSnapshot = false;
  }
  if (d.mode === 'playback') {
    // A playback starts over on a reconnect: the gateway plays the window again from its start.
    chart.reset?.();
    if (d.market) switchMarket(d.market, false);
    return;
  }
  if (reconnected && state.market && state.haveSnapshot) {
    const after = {};
    for (const s of STREAMS) after[s] = feed.lastSeq[s] ?? state.baseline?.[s] ?? null;
    if (STREAMS.every((s) => after[s] != null)) {
      const { venue, symbol } = state.market;
      feed.send({ type: 'resume', data: { venue, symbol, after } });
      return;
    }
  }
  const stored = store.get('sqt.market', null);
  const want =
    state.market ||
    state.markets.find((m) => sameMarket(m, stored)) ||
    d.market ||
    state.markets[0] ||
    null;
  state.baseline = heads;
  if (!want) {
    status('no markets on the gateway yet');
    return;
  }
  if (!sameMarket(want, state.market)) switchMarket(want, false);
  state.haveSnapshot = false;
  // The gateway sends the default market's snapshot after hello by itself.
  if (!sameMarket(want, d.market)) subscribe();
  clearTimeout(state.snapshotTimer);
  state.snapshotTimer = setTimeout(() => state.haveSnapshot || subscribe(), SNAPSHOT_WAIT_MS);
}

function subscribe() {
  if (!state.market) return;
  const { venue, symbol } = state.market;
  feed.send({ type: 'subscribe', data: { venue, symbol } });
}

/** Does a frame's data belong to the market shown? (venue/symbol absent = not market-specific) */
function ours(d) {
  const m = state.market;
  return !!m && !!d && (d.venue == null || d.venue === m.venue) && (d.symbol == null || d.symbol === m.symbol);
}

function onFrame(f) {
  const d = f.data || {};
  switch (f.type) {
    case 'history':
      if (ours(d) && feed.accept(f)) onHistory(d);
      break;
    case 'kline':
      if (ours(d) && (d.interval ?? '1m') === '1m' && feed.accept(f)) {
        chart.onKline(d);
        panel.setPrice(d.close);
      }
      break;
    case 'orders': {
      const orders = (d.orders || []).filter(ours);
      if ((orders.length || d.snapshot) && feed.accept(f)) {
        chart.setOrders(orders, !!d.snapshot);
        panel.setOpenOrders(chart.orderLines.size);
      }
      break;
    }
    case 'trade_event':
      if (ours(d) && feed.accept(f)) onFill(d, true);
      break;
    case 'position':
      if (ours(d) && feed.accept(f)) panel.setPosition(d);
      break;
    case 'account':
      if (ours(d) && feed.accept(f)) panel.setBalance(d);
      break;
    case 'grid_state':
      if (ours(d) && feed.accept(f)) {
        chart.setLevels(`${d.component}/${d.instance}`, d.levels || []);
        panel.setGrid(d);
      }
      break;
    case 'risk_alert':
      if (ours(d) && feed.accept(f)) panel.addRisk(d);
      break;
    case 'reconciliation':
      if (ours(d) && feed.accept(f)) panel.addRecon(d);
      break;
    case 'error':
      console.warn('sqt: gateway error', d.code, d.message);
      setText($('gateway-error'), `gateway: ${d.code || 'error'}${d.message ? ' — ' + d.message : ''}`);
      clearTimeout(state.errorTimer);
      state.errorTimer = setTimeout(() => setText($('gateway-error'), ''), 10000);
      break;
    case 'playback':
      state.playback = d.state;
      setText($('gateway-error'), `playback ${d.state} · ${new Date(d.at).toISOString().slice(0, 19).replace('T', ' ')} UTC · x${d.speed} (space: pause/resume, →: step)`);
      break;
    case 'control_result':
      setText($('gateway-error'), `${d.action}: ${d.ok ? 'done' : d.message}`);
      clearTimeout(state.errorTimer);
      state.errorTimer = setTimeout(() => setText($('gateway-error'), ''), 10000);
      break;
    case 'pong':
      break;
    default:
      console.debug('sqt: frame of unknown type ignored', f.type);
  }
}

function onHistory(d) {
  state.haveSnapshot = true;
  clearTimeout(state.snapshotTimer);
  const candles = Array.isArray(d.candles) ? d.candles : [];
  if (chart.setHistory(candles)) loadTimeframe();
  if (candles.length) panel.setPrice(candles[candles.length - 1].close);
  status(candles.length ? '' : 'no candles yet');
  seedFills();
}

function onFill(d, live) {
  const fresh = chart.addFill(d);
  panel.addFill(d);
  if (fresh && live) notifier.fill(d, panel.quoteAsset);
}

// ---- market and timeframe ----------------------------------------------------------------

function fillMarkets() {
  const select = $('symbol-switcher');
  const list = state.markets.slice();
  if (state.market && !list.some((m) => sameMarket(m, state.market))) list.push(state.market);
  const options = list.map((m) => {
    const o = document.createElement('option');
    o.value = JSON.stringify([m.venue, m.symbol]);
    o.textContent = `${m.symbol} · ${m.venue}`;
    return o;
  });
  if (!options.length) {
    const o = document.createElement('option');
    o.textContent = 'no markets yet';
    options.push(o);
  }
  select.replaceChildren(...options);
  select.disabled = list.length === 0;
  if (state.market) select.value = JSON.stringify([state.market.venue, state.market.symbol]);
}

function switchMarket(market, send) {
  state.market = { venue: market.venue, symbol: market.symbol };
  state.haveSnapshot = false;
  state.marketGen += 1;
  state.loadGen += 1;
  store.set('sqt.market', state.market);
  fillMarkets();
  chart.reset();
  panel.resetMarket(state.market);
  panel.setOpenOrders(0);
  status('waiting for data…');
  if (state.tf !== '1m') chart.setTimeframe(state.tf);
  if (send) subscribe();
}

$('symbol-switcher').addEventListener('change', (ev) => {
  const [venue, symbol] = JSON.parse(ev.target.value);
  if (!sameMarket({ venue, symbol }, state.market)) switchMarket({ venue, symbol }, true);
});

function setTimeframe(tf) {
  state.tf = tf;
  store.set('sqt.tf', tf);
  for (const b of document.querySelectorAll('.tfs button')) b.setAttribute('aria-pressed', String(b.dataset.tf === tf));
  state.loadGen += 1;
  if (chart.setTimeframe(tf)) loadTimeframe();
  else status('');
}

for (const b of document.querySelectorAll('.tfs button')) {
  b.addEventListener('click', () => b.dataset.tf !== state.tf && setTimeframe(b.dataset.tf));
}

function query(m) {
  return `venue=${encodeURIComponent(m.venue)}&symbol=${encodeURIComponent(m.symbol)}`;
}

async function getJson(url) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(url, { headers });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

const candleList = (x) => (Array.isArray(x) ? x : Array.isArray(x?.candles) ? x.candles : []);

/** Bars of a timeframe above 1m from REST, plus the 1m candles of its current bucket. */
async function loadTimeframe() {
  const m = state.market;
  if (!m || state.tf === '1m' || playback) return; // playback shows its window in 1m
  const gen = ++state.loadGen;
  const tf = state.tf;
  status(`loading ${tf}…`);
  const from = chart.currentBucket() * 1000;
  const [bars, m1] = await Promise.all([
    getJson(`/api/candles?${query(m)}&tf=${tf}`).catch((err) => err),
    getJson(`/api/candles?${query(m)}&tf=1m&from=${from}`).catch(() => null),
  ]);
  if (gen !== state.loadGen) return;
  if (bars instanceof Error) {
    console.warn('sqt:', bars.message);
    chart.setAggregated([], m1 && candleList(m1)); // at least the live bars
    status(`could not load ${tf} candles`);
    return;
  }
  chart.setAggregated(candleList(bars), m1 && candleList(m1));
  status('');
}

/** Recent fills of the market over REST: markers and today's count after a (re)load. */
async function seedFills() {
  if (playback) return; // a past window's fills come from the window itself, not today's REST
  const m = state.market;
  const gen = state.marketGen;
  let fills;
  try {
    fills = await getJson(`/api/fills?${query(m)}&limit=${FILLS_SEED}`);
  } catch (err) {
    console.warn('sqt: no fills seed:', err.message);
    return;
  }
  if (gen !== state.marketGen || !sameMarket(m, state.market) || !Array.isArray(fills)) return;
  for (const f of fills) if (ours(f)) onFill(f, false);
  panel.fillsMayBeMore(fills.length >= FILLS_SEED);
}

// ---- operator controls (hidden unless hello says role 'operator') ------------------------

function setRole(role) {
  state.role = role;
  $('operator-controls').hidden = role !== 'operator';
}

for (const b of document.querySelectorAll('.ops button')) {
  b.addEventListener('click', () => {
    if (!state.market || state.role !== 'operator') return;
    const { action } = b.dataset;
    if (!window.confirm(`${b.textContent} on ${state.market.symbol} (${state.market.venue})?`)) return;
    // Not in docs/gateway-protocol.md yet: the frame the gateway is expected to accept.
    feed.send({ type: 'control', data: { action, venue: state.market.venue, symbol: state.market.symbol } });
  });
}

// ---- misc --------------------------------------------------------------------------------

function status(text) {
  setText($('chart-status'), text);
}

// For tests and the console.
window.sqt = {
  candles: () => chart.bars.length,
  lastBar: () => ({ ...chart.bars[chart.bars.length - 1] }),
  priceLines: () => chart.priceLineCount(),
  orderLines: () => chart.orderLines.size,
  levelLines: () => chart.levelLineCount,
  markers: () => chart.markerCount,
  toasts: () => notifier.shown,
  state: () => feed.state,
  market: () => state.market,
  timeframe: () => state.tf,
  lastSeq: () => ({ ...feed.lastSeq }),
};

setInterval(() => panel.tick(), 60000);
for (const b of document.querySelectorAll('.tfs button')) b.setAttribute('aria-pressed', String(b.dataset.tf === state.tf));
if (state.tf !== '1m') chart.setTimeframe(state.tf);
status('connecting…');
feed.start();

if (playback) {
  document.addEventListener('keydown', (e) => {
    if (e.key === ' ') feed.send({ type: 'playback', data: { action: state.playback === 'paused' ? 'resume' : 'pause' } });
    else if (e.key === 'ArrowRight') feed.send({ type: 'playback', data: { action: 'step' } });
    else return;
    e.preventDefault();
  });
}
