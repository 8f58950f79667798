// What a fill does besides its marker: a short WebAudio beep and a toast, each with a toggle
// kept in localStorage. A burst of fills (a resume) stays bounded: few toasts, throttled sound.

import { fmtAmount, store } from './util.js';

const TOAST_MS = 4000;
const MAX_TOASTS = 4;
const SOUND_GAP_MS = 120;

export class Notifier {
  constructor({ container, soundToggle, toastToggle }) {
    this.container = container;
    this.sound = store.get('sqt.sound', true);
    this.toasts = store.get('sqt.toasts', true);
    this.shown = 0; // toasts shown since the page loaded
    this.audio = null;
    this.lastBeep = 0;
    this._toggle(soundToggle, 'sound', 'sqt.sound');
    this._toggle(toastToggle, 'toasts', 'sqt.toasts');
    // Browsers start audio only after a user gesture: make the context on the first one.
    const unlock = () => {
      this._audio();
      window.removeEventListener('pointerdown', unlock);
      window.removeEventListener('keydown', unlock);
    };
    window.addEventListener('pointerdown', unlock);
    window.addEventListener('keydown', unlock);
  }

  _toggle(input, field, key) {
    input.checked = this[field];
    input.addEventListener('change', () => {
      this[field] = input.checked;
      store.set(key, input.checked);
      if (field === 'sound' && input.checked) this._audio();
    });
  }

  _audio() {
    if (!this.audio) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return null;
      this.audio = new Ctx();
    }
    if (this.audio.state === 'suspended') this.audio.resume().catch(() => {});
    return this.audio;
  }

  /** A live fill of the market. */
  fill(f, quoteAsset) {
    if (this.sound) this._beep(f.side === 'buy');
    if (this.toasts) this._toast(f, quoteAsset);
  }

  _beep(buy) {
    const ctx = this.audio; // never created here: without a gesture it could not play anyway
    const now = performance.now();
    if (!ctx || ctx.state !== 'running' || now - this.lastBeep < SOUND_GAP_MS) return;
    this.lastBeep = now;
    const t = ctx.currentTime;
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = 'sine';
    osc.frequency.setValueAtTime(buy ? 880 : 587, t);
    osc.frequency.exponentialRampToValueAtTime(buy ? 1175 : 440, t + 0.09);
    gain.gain.setValueAtTime(0.0001, t);
    gain.gain.exponentialRampToValueAtTime(0.12, t + 0.01);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.16);
    osc.connect(gain).connect(ctx.destination);
    osc.start(t);
    osc.stop(t + 0.18);
  }

  _toast(f, quoteAsset) {
    this.shown += 1;
    const buy = f.side === 'buy';
    const el = document.createElement('div');
    el.className = `toast ${buy ? 'buy' : 'sell'}`;
    el.setAttribute('role', 'status');
    el.dataset.testid = 'toast';
    const head = document.createElement('b');
    head.textContent = `${buy ? 'BUY' : 'SELL'} ${fmtAmount(f.amount)} @ ${fmtAmount(f.price)}`;
    const sub = document.createElement('span');
    const fee = f.fee_cost != null ? ` · fee ${fmtAmount(f.fee_cost)} ${f.fee_currency || quoteAsset || ''}` : '';
    sub.textContent = `filled ${f.symbol || ''}${f.liquidity ? ' · ' + f.liquidity : ''}${fee}`;
    el.append(head, sub);
    this.container.append(el);
    while (this.container.childElementCount > MAX_TOASTS) this.container.firstElementChild.remove();
    setTimeout(() => el.remove(), TOAST_MS);
  }
}
