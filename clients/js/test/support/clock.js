// Virtual time for the client's timers (its `timers` option): nothing
// waits for real time; `advance(ms)` runs the timers that fall due, in
// order, letting promises and microtasks settle between them.

/** Lets every pending microtask and promise chain run. */
export async function settle() {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

export class FakeClock {
  constructor() {
    this.now = 0;
    this._seq = 0;
    /** @type {Map<number, {at: number, fn: Function}>} */
    this._timers = new Map();
  }

  setTimeout(fn, ms = 0) {
    const id = ++this._seq;
    this._timers.set(id, { at: this.now + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(id) {
    this._timers.delete(id);
  }

  /** Delays of the pending timers from now, sorted (for assertions). */
  pending() {
    return [...this._timers.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
  }

  /** Moves time forward by `ms`, running each timer due on the way. */
  async advance(ms) {
    const end = this.now + ms;
    await settle();
    for (;;) {
      let next = null;
      for (const [id, t] of this._timers) {
        if (t.at <= end && (next === null || t.at < next[1].at || (t.at === next[1].at && id < next[0]))) next = [id, t];
      }
      if (!next) break;
      this._timers.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
      await settle();
    }
    this.now = end;
  }
}
