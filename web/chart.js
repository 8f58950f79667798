// The main chart: candles + volume, order and grid-level price lines, fill markers, and the
// client-side aggregation of live 1m candles into the current bar of a longer timeframe.

import { DOWN, TF_SECONDS, UP, decimals, fmtAmount, num, toBar } from './util.js';

const LC = window.LightweightCharts;

const MAX_MARKERS = 300;
const M1_KEEP = 3000; // 1m bars kept (>= one 1d bucket of 1440)
const VOL_UP = 'rgba(38,166,154,0.45)';
const VOL_DOWN = 'rgba(239,83,80,0.45)';
const LEVEL_COLORS = {
  buy: 'rgba(38,166,154,0.38)',
  sell: 'rgba(239,83,80,0.38)',
  none: 'rgba(154,164,178,0.22)',
};

function volumePoint(b) {
  return { time: b.time, value: b.volume, color: b.close >= b.open ? VOL_UP : VOL_DOWN };
}

/** Index of the bar with `time` in a time-sorted array, or -(insertion point) - 1. */
function search(bars, time) {
  let lo = 0;
  let hi = bars.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const t = bars[mid].time;
    if (t === time) return mid;
    if (t < time) lo = mid + 1;
    else hi = mid - 1;
  }
  return -lo - 1;
}

/** Insert or replace `bar` in a time-sorted array (the common case is at the end). */
function upsert(bars, bar) {
  const n = bars.length;
  if (n === 0 || bars[n - 1].time < bar.time) bars.push(bar);
  else if (bars[n - 1].time === bar.time) bars[n - 1] = bar;
  else {
    const i = search(bars, bar.time);
    if (i >= 0) bars[i] = bar;
    else bars.splice(-i - 1, 0, bar);
  }
}

export class MainChart {
  constructor(container) {
    this.chart = LC.createChart(container, {
      autoSize: true,
      layout: {
        background: { type: LC.ColorType.Solid, color: '#0b0e13' },
        textColor: '#8b95a5',
        fontSize: 11,
        attributionLogo: true, // TradingView attribution + link, as the license's NOTICE asks
      },
      grid: {
        vertLines: { color: 'rgba(255,255,255,0.035)' },
        horzLines: { color: 'rgba(255,255,255,0.035)' },
      },
      rightPriceScale: { borderColor: '#1f2630', scaleMargins: { top: 0.08, bottom: 0.26 } },
      timeScale: { borderColor: '#1f2630', timeVisible: true, secondsVisible: false, rightOffset: 6 },
      crosshair: { mode: LC.CrosshairMode.Normal },
    });
    this.candles = this.chart.addCandlestickSeries({
      upColor: UP,
      downColor: DOWN,
      borderVisible: false,
      wickUpColor: UP,
      wickDownColor: DOWN,
    });
    this.volume = this.chart.addHistogramSeries({
      priceScaleId: '',
      priceFormat: { type: 'volume' },
      lastValueVisible: false,
      priceLineVisible: false,
    });
    this.volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });

    this.tf = '1m';
    this.bars = []; // what the chart shows, in this.tf
    this.m1 = []; // 1m bars of the market (history + live), the source of every aggregate
    this.loading = false; // a longer timeframe's bars are being fetched: no live updates yet
    this.agg = null; // {time, bar, cover}: the REST bar of the current bucket when no 1m covers it
    this.precision = -1;
    this.orderLines = new Map(); // client_order_id -> {line, sig}
    this.levelLines = new Map(); // strategy key -> Map(level key -> line)
    this.levelLineCount = 0;
    this.fills = []; // {id, time (s), buy}, time-sorted, at most MAX_MARKERS
    this.fillIds = new Set();
    this.markerCount = 0;
    this.markersQueued = false;
  }

  // ---- candles ------------------------------------------------------------------------------

  /** Forget everything of the market (a symbol switch). */
  reset() {
    this.m1 = [];
    this.agg = null;
    this.precision = -1; // the next market's candles set it again
    this._show([]);
    for (const { line } of this.orderLines.values()) this.candles.removePriceLine(line);
    this.orderLines.clear();
    for (const key of [...this.levelLines.keys()]) this.setLevels(key, []);
    this.fills = [];
    this.fillIds.clear();
    this._queueMarkers();
  }

  /** A `history` frame: the last 1m candles; true when the timeframe needs a REST load. */
  setHistory(candles) {
    this.m1 = candles.map(toBar).sort((a, b) => a.time - b.time);
    this._precisionFrom(candles);
    if (this.tf === '1m') {
      this._show(this.m1.slice());
      return false;
    }
    this.loading = true; // the bars shown stay until the caller's REST load replaces them
    return true;
  }

  /** A `kline` frame (1m). Updates only the last bar (or adds one); never re-sets the data. */
  onKline(c) {
    const bar = toBar(c);
    if (!Number.isFinite(bar.close)) return;
    upsert(this.m1, bar);
    if (this.m1.length > M1_KEEP + 500) this.m1.splice(0, this.m1.length - M1_KEEP);
    if (this.precision < 0) this._precisionFrom([c]);
    if (this.tf === '1m') this._apply(bar);
    else if (!this.loading) this._apply(this._aggregate(this._bucket(bar.time)));
  }

  /** Switch the timeframe; true when the caller must fetch its bars (then call setAggregated). */
  setTimeframe(tf) {
    this.tf = tf;
    this.agg = null;
    if (tf === '1m') {
      this.loading = false;
      this._show(this.m1.slice());
      return false;
    }
    this.loading = true;
    this._show([]);
    return true;
  }

  /** Start of the current bucket of the timeframe (UTC seconds), from the newest 1m bar. */
  currentBucket() {
    const last = this.m1.length ? this.m1[this.m1.length - 1].time : Math.floor(Date.now() / 1000);
    return this._bucket(last);
  }

  /**
   * Bars of a longer timeframe from REST, and (when the gateway gave them) the 1m candles of
   * its current bucket. The current bar is rebuilt from 1m bars so live klines extend it.
   */
  setAggregated(candles, m1Candles) {
    const bars = candles.map(toBar).sort((a, b) => a.time - b.time);
    this._precisionFrom(candles);
    const bucket = this.currentBucket();
    if (m1Candles && m1Candles.length) {
      // Merge in one pass (up to 1440 bars for 1d): REST first, then what live klines said.
      const byTime = new Map(m1Candles.map((c) => [Math.floor(c.open_time / 1000), toBar(c)]));
      for (const bar of this.m1) byTime.set(bar.time, bar);
      this.m1 = [...byTime.values()].sort((a, b) => a.time - b.time);
    }
    const first = this.m1.length ? this.m1[0].time : Infinity;
    const last = bars.length ? bars[bars.length - 1] : null;
    if (last && last.time === bucket && first > bucket) {
      // No 1m bar reaches the bucket's start: keep the REST bar as the base of the current bar;
      // 1m bars after `cover` (the newest 1m at load, maybe partly counted in it) add volume.
      const m1Last = this.m1.length ? this.m1[this.m1.length - 1].time : bucket;
      this.agg = { time: bucket, bar: last, cover: m1Last };
    } else {
      this.agg = null;
    }
    this.loading = false;
    const current = this._aggregate(bucket);
    if (current) upsert(bars, current);
    this._show(bars);
  }

  _bucket(time) {
    const s = TF_SECONDS[this.tf] || 60;
    return time - (time % s);
  }

  /** The bar of the bucket starting at `start`, from the 1m bars (and the REST base, if any). */
  _aggregate(start) {
    const end = start + (TF_SECONDS[this.tf] || 60);
    const base = this.agg && this.agg.time === start ? this.agg : null;
    let bar = base ? { ...base.bar } : null;
    let i = this.m1.length - 1;
    while (i >= 0 && this.m1[i].time >= end) i--;
    let j = i;
    while (j >= 0 && this.m1[j].time >= start) j--;
    for (let k = j + 1; k <= i; k++) {
      const m = this.m1[k];
      if (base && m.time < base.cover) continue;
      if (!bar) bar = { time: start, open: m.open, high: m.high, low: m.low, close: m.close, volume: 0 };
      if (m.high > bar.high) bar.high = m.high;
      if (m.low < bar.low) bar.low = m.low;
      bar.close = m.close;
      if (!base || m.time > base.cover) bar.volume += m.volume;
    }
    return bar;
  }

  _apply(bar) {
    if (!bar) return;
    const bars = this.bars;
    const last = bars[bars.length - 1];
    if (last && bar.time < last.time) {
      // An older bar changed (out of order): keep the data right, leave the drawn bar.
      upsert(bars, bar);
      return;
    }
    if (last && bar.time === last.time) bars[bars.length - 1] = bar;
    else bars.push(bar);
    this.candles.update(bar);
    this.volume.update(volumePoint(bar));
  }

  _show(bars) {
    this.bars = bars;
    this.candles.setData(bars);
    this.volume.setData(bars.map(volumePoint));
    this._queueMarkers();
  }

  _precisionFrom(candles) {
    let d = this.precision;
    for (const c of candles) {
      d = Math.max(d, decimals(c.open), decimals(c.high), decimals(c.low), decimals(c.close));
    }
    d = Math.min(Math.max(d, 0), 10);
    if (d !== this.precision) {
      this.precision = d;
      this.candles.applyOptions({ priceFormat: { type: 'price', precision: d, minMove: 10 ** -d } });
    }
  }

  // ---- open orders --------------------------------------------------------------------------

  /** An `orders` frame: a snapshot replaces every line; otherwise each order is a change. */
  setOrders(orders, snapshot) {
    if (snapshot) {
      const keep = new Set(orders.filter((o) => o.status === 'open').map((o) => o.client_order_id));
      for (const [id, { line }] of this.orderLines) {
        if (!keep.has(id)) {
          this.candles.removePriceLine(line);
          this.orderLines.delete(id);
        }
      }
    }
    for (const o of orders) this._order(o);
  }

  _order(o) {
    const id = o.client_order_id;
    const have = this.orderLines.get(id);
    const price = num(o.price);
    if (o.status !== 'open' || !Number.isFinite(price)) {
      if (have) {
        this.candles.removePriceLine(have.line);
        this.orderLines.delete(id);
      }
      return;
    }
    const buy = o.side === 'buy';
    const title = `${buy ? 'BUY' : 'SELL'} ${fmtAmount(o.remaining ?? o.amount)}`;
    const sig = `${price}|${title}`;
    if (have && have.sig === sig) return;
    const opts = {
      price,
      color: buy ? UP : DOWN,
      lineWidth: 1,
      lineStyle: LC.LineStyle.Solid,
      axisLabelVisible: true,
      title,
    };
    if (have) {
      have.line.applyOptions(opts);
      have.sig = sig;
    } else {
      this.orderLines.set(id, { line: this.candles.createPriceLine(opts), sig });
    }
  }

  // ---- grid levels --------------------------------------------------------------------------

  /** The levels of one strategy instance: lines whose level is unchanged are kept. */
  setLevels(strategyKey, levels) {
    const old = this.levelLines.get(strategyKey) || new Map();
    const before = old.size;
    const next = new Map();
    for (const lv of levels || []) {
      const price = num(lv.price);
      if (!Number.isFinite(price)) continue;
      const side = lv.side === 'buy' || lv.side === 'sell' ? lv.side : 'none';
      const status = lv.status ?? lv.phase ?? '';
      let key = `${price}|${side}|${status}`;
      while (next.has(key)) key += '+';
      const line = old.get(key);
      if (line) {
        old.delete(key);
        next.set(key, line);
      } else {
        next.set(
          key,
          this.candles.createPriceLine({
            price,
            color: LEVEL_COLORS[side],
            lineWidth: 1,
            lineStyle: LC.LineStyle.Dashed,
            axisLabelVisible: false,
            title: '',
          }),
        );
      }
    }
    for (const line of old.values()) this.candles.removePriceLine(line);
    this.levelLineCount += next.size - before;
    if (next.size) this.levelLines.set(strategyKey, next);
    else this.levelLines.delete(strategyKey);
  }

  priceLineCount() {
    return this.orderLines.size + this.levelLineCount;
  }

  // ---- fills --------------------------------------------------------------------------------

  /** A fill (from a `trade_event` or the REST seed); false if it was already shown. */
  addFill(f) {
    const id = f.trade_id ?? `${f.order_id}|${f.ts}|${f.price}|${f.amount}`;
    if (this.fillIds.has(id)) return false;
    const fill = { id, time: Math.floor(f.ts / 1000), buy: f.side === 'buy' };
    const fills = this.fills;
    if (fills.length >= MAX_MARKERS && fill.time < fills[0].time) return false; // older than all kept
    this.fillIds.add(id);
    let i = fills.length;
    while (i > 0 && fills[i - 1].time > fill.time) i--;
    fills.splice(i, 0, fill);
    if (fills.length > MAX_MARKERS) {
      for (const gone of fills.splice(0, fills.length - MAX_MARKERS)) this.fillIds.delete(gone.id);
    }
    this._queueMarkers();
    return true;
  }

  /** Markers are set at most once per animation frame (a burst of fills costs one call). */
  _queueMarkers() {
    if (this.markersQueued) return;
    this.markersQueued = true;
    requestAnimationFrame(() => {
      this.markersQueued = false;
      const markers = this.fills.map((f) => ({
        time: this._bucket(f.time),
        position: f.buy ? 'belowBar' : 'aboveBar',
        shape: f.buy ? 'arrowUp' : 'arrowDown',
        color: f.buy ? UP : DOWN,
        size: 0.8,
      }));
      this.candles.setMarkers(markers);
      this.markerCount = markers.length;
    });
  }
}
