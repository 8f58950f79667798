// The side panel: price, balance and equity, PnL (numbers and a small line), position, orders,
// fills today, risk badge and reconciliation log. Every write goes through setText: an unchanged
// value costs no DOM work.

import { fmtAmount, fmtMoney, fmtTime, num, parseSymbol, setSign, setText } from './util.js';

const LC = window.LightweightCharts;
const MAX_RECON = 50;
const MAX_PNL_POINTS = 4000;

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

function utcDayStart(ms) {
  return ms - (ms % 86400000);
}

export class Panel {
  constructor() {
    this.el = {
      price: $('panel-price'),
      balance: $('panel-balance'),
      balanceFree: $('panel-balance-free'),
      equity: $('panel-equity'),
      realized: $('panel-realized-pnl'),
      unrealized: $('panel-unrealized-pnl'),
      position: $('panel-position'),
      openOrders: $('panel-open-orders'),
      fillsToday: $('panel-fills-today'),
      strategy: $('panel-strategy-status'),
      quote: $('panel-quote-asset'),
      risk: $('risk-badge'),
      riskMessage: $('risk-message'),
      recon: $('recon-log'),
      pnlEmpty: $('pnl-empty'),
    };
    this._pnlChart($('pnl-chart'));
    this.resetMarket(null);
  }

  /** A new market: forget everything that was about the previous one. */
  resetMarket(market) {
    this.market = market;
    const sym = market ? parseSymbol(market.symbol) : { base: '', quote: '', settle: null };
    this.base = sym.base;
    this.quoteAsset = sym.settle || sym.quote;
    this.isSwap = !!sym.settle;
    this.balances = new Map();
    this.position = null;
    this.grids = new Map();
    this.lastPrice = NaN;
    this.fillIdsToday = new Set(); // ids of the fills since 00:00 UTC (the browser's clock decides the day)
    this.dayStart = utcDayStart(Date.now());
    this.fillsSaturated = false;
    this.pnlLast = -Infinity;
    this.pnlPoints = [];
    this.pnl.setData([]);
    setText(this.el.quote, this.quoteAsset || '—');
    for (const key of ['price', 'balance', 'balanceFree', 'equity', 'realized', 'unrealized', 'position', 'strategy']) {
      setText(this.el[key], '—');
    }
    setText(this.el.openOrders, '0');
    setText(this.el.fillsToday, '0');
    this.el.pnlEmpty.hidden = false;
    this.resetAlerts();
  }

  resetAlerts() {
    this.riskCount = 0;
    this.el.risk.dataset.severity = 'none';
    setText(this.el.risk, 'no risk monitor yet');
    setText(this.el.riskMessage, '');
    this.el.recon.replaceChildren(this._empty('no reconciliation findings yet'));
    this.reconCount = 0;
  }

  setPrice(close) {
    const x = num(close);
    if (!Number.isFinite(x)) return;
    if (Number.isFinite(this.lastPrice) && x !== this.lastPrice) setSign(this.el.price, x - this.lastPrice);
    this.lastPrice = x;
    setText(this.el.price, fmtAmount(close));
    if (!this.isSwap) this._equity(); // spot equity moves with the price
  }

  setBalance(b) {
    this.balances.set(b.asset, b);
    if (b.asset === this.quoteAsset) {
      setText(this.el.balance, `${fmtMoney(b.total)} ${b.asset}`);
      setText(this.el.balanceFree, `free ${fmtMoney(b.free)} · used ${fmtMoney(b.used)}`);
    }
    if (b.asset === this.quoteAsset || b.asset === this.base) this._equity();
  }

  setPosition(p) {
    this.position = p;
    this._positionAndPnl();
    this._equity();
  }

  /** A `grid_state`: one strategy instance's numbers; the panel shows the sum of instances. */
  setGrid(g) {
    this.grids.set(`${g.component}/${g.instance}`, g);
    this._positionAndPnl();
    this._equity();
    const statuses = [...new Set([...this.grids.values()].map((s) => s.status))];
    setText(this.el.strategy, statuses.join(', ') || '—');
    this.el.strategy.dataset.status = statuses.length === 1 ? statuses[0] : 'mixed';
    this._pnlPoint(g.ts);
  }

  setOpenOrders(n) {
    setText(this.el.openOrders, String(n));
  }

  /** A fill of the market (live or from the REST seed). */
  addFill(f) {
    this._rollDay();
    const id = f.trade_id ?? `${f.order_id}|${f.ts}|${f.price}|${f.amount}`;
    if (f.ts >= this.dayStart && !this.fillIdsToday.has(id)) {
      this.fillIdsToday.add(id);
      this._fillsText();
    }
  }

  /** The REST seed hit its limit: the count of today's fills is a lower bound. */
  fillsMayBeMore(yes) {
    this.fillsSaturated = yes;
    this._fillsText();
  }

  tick() {
    if (this._rollDay()) this._fillsText();
  }

  addRisk(a) {
    this.riskCount += 1;
    const severity = ['info', 'warning', 'critical'].includes(a.severity) ? a.severity : 'warning';
    this.el.risk.dataset.severity = severity;
    setText(this.el.risk, `${severity.toUpperCase()} · ${a.kind || 'alert'}`);
    const value = a.value != null ? ` (${fmtAmount(a.value)}${a.threshold != null ? ' / ' + fmtAmount(a.threshold) : ''})` : '';
    setText(this.el.riskMessage, `${fmtTime(a.ts)} ${a.message || ''}${value} · ${this.riskCount} alert${this.riskCount > 1 ? 's' : ''}`);
  }

  addRecon(r) {
    const list = this.el.recon;
    if (this.reconCount === 0) list.replaceChildren();
    this.reconCount += 1;
    const li = document.createElement('li');
    li.dataset.kind = r.kind || '';
    const time = document.createElement('time');
    time.textContent = fmtTime(r.ts);
    const kind = document.createElement('b');
    kind.textContent = r.kind || 'finding';
    const text = document.createElement('span');
    const ids = r.client_order_id ? ` [${r.client_order_id}]` : '';
    const diff = r.expected != null || r.actual != null ? ` expected ${fmtAmount(r.expected)} actual ${fmtAmount(r.actual)}` : '';
    text.textContent = ` ${r.detail || ''}${ids}${diff} → ${r.action || 'none'}`;
    li.append(time, ' ', kind, text);
    list.prepend(li);
    while (list.childElementCount > MAX_RECON) list.lastElementChild.remove();
  }

  // ---- internals ----------------------------------------------------------------------------

  _sum(field) {
    let s = 0;
    for (const g of this.grids.values()) s += num(g[field]) || 0;
    return s;
  }

  _positionAndPnl() {
    const p = this.position;
    const grids = this.grids.size > 0;
    // Realized: the strategies' own (grid_state), else the venue position's.
    const realized = grids ? this._sum('realized_pnl') : p ? num(p.realized_pnl) : NaN;
    // Unrealized and position: the venue's position (its mark), else the strategies'.
    const unrealized = p ? num(p.unrealized_pnl) : grids ? this._sum('unrealized_pnl') : NaN;
    setText(this.el.realized, fmtMoney(realized, 2, true));
    setSign(this.el.realized, realized);
    setText(this.el.unrealized, fmtMoney(unrealized, 2, true));
    setSign(this.el.unrealized, unrealized);
    let text = '—';
    if (p) {
      const contracts = num(p.contracts);
      text = !contracts
        ? 'flat'
        : `${p.side || ''} ${fmtAmount(p.contracts)}${p.entry_price != null ? ' @ ' + fmtAmount(p.entry_price) : ''}`.trim();
    } else if (grids) {
      const pos = this._sum('position');
      text = pos === 0 ? 'flat' : `${pos > 0 ? 'long' : 'short'} ${fmtAmount(String(Math.abs(pos)))}`;
    }
    setText(this.el.position, text);
  }

  _equity() {
    const q = this.balances.get(this.quoteAsset);
    if (!q) return;
    let equity = num(q.total);
    if (this.isSwap) {
      const u = this.position ? num(this.position.unrealized_pnl) : this._sum('unrealized_pnl');
      equity += Number.isFinite(u) ? u : 0;
    } else {
      const b = this.balances.get(this.base);
      if (b && Number.isFinite(this.lastPrice)) equity += num(b.total) * this.lastPrice;
    }
    setText(this.el.equity, `${fmtMoney(equity)} ${this.quoteAsset}`);
  }

  _rollDay() {
    const start = utcDayStart(Date.now());
    if (start === this.dayStart) return false;
    this.dayStart = start;
    this.fillIdsToday = new Set();
    this.fillsSaturated = false;
    return true;
  }

  _fillsText() {
    setText(this.el.fillsToday, `${this.fillIdsToday.size}${this.fillsSaturated ? '+' : ''}`);
  }

  _pnlChart(container) {
    this.pnlChart = LC.createChart(container, {
      autoSize: true,
      layout: {
        background: { type: LC.ColorType.Solid, color: 'transparent' },
        textColor: '#6f7a8a',
        fontSize: 10,
        attributionLogo: false, // the main chart and the footer carry the attribution
      },
      grid: { vertLines: { visible: false }, horzLines: { color: 'rgba(255,255,255,0.04)' } },
      rightPriceScale: { borderVisible: false, scaleMargins: { top: 0.15, bottom: 0.1 } },
      timeScale: { borderVisible: false, timeVisible: true, secondsVisible: false },
      handleScroll: false,
      handleScale: false,
      crosshair: { horzLine: { visible: false } },
    });
    this.pnl = this.pnlChart.addBaselineSeries({
      baseValue: { type: 'price', price: 0 },
      lineWidth: 1,
      priceLineVisible: false,
      priceFormat: { type: 'price', precision: 2, minMove: 0.01 },
    });
  }

  /** One point of the total PnL (realized + unrealized of the strategies) per grid_state. */
  _pnlPoint(ts) {
    const time = Math.floor(ts / 1000);
    if (!Number.isFinite(time) || time < this.pnlLast) return;
    const value = this._sum('realized_pnl') + this._sum('unrealized_pnl');
    const point = { time, value };
    if (time === this.pnlLast) this.pnlPoints[this.pnlPoints.length - 1] = point;
    else this.pnlPoints.push(point);
    this.pnlLast = time;
    if (this.pnlPoints.length > MAX_PNL_POINTS) {
      // Rare (once per MAX_PNL_POINTS / 2 points): drop the older half in one setData.
      this.pnlPoints = this.pnlPoints.slice(-MAX_PNL_POINTS / 2);
      this.pnl.setData(this.pnlPoints);
    } else {
      this.pnl.update(point);
    }
    this.el.pnlEmpty.hidden = true;
  }

  _empty(text) {
    const li = document.createElement('li');
    li.className = 'empty';
    li.textContent = text;
    return li;
  }
}
