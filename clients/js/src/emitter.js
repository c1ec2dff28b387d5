// A tiny typed event emitter (the same in browsers and Node).
//
// `on` returns the function that removes the listener; `once` returns a
// promise of the next event that passes an optional filter. A listener
// that throws does not stop the others nor the client's state machine: the
// exception is rethrown in a microtask, where the host reports it as it
// reports any uncaught error (as DOM EventTarget does).

export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /** Calls `fn(event)` for every `type` event; returns the unsubscribe function. */
  on(type, fn) {
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /** Removes a listener added with `on`. */
  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  /**
   * The next `type` event for which `filter(event)` is true (any event when
   * no filter is given). With `signal`, rejects when it aborts.
   * @returns {Promise<any>}
   */
  once(type, filter = () => true, { signal } = {}) {
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        off();
        reject(signal.reason ?? new Error('aborted'));
      };
      const off = this.on(type, (ev) => {
        if (!filter(ev)) return;
        off();
        signal?.removeEventListener('abort', onAbort);
        resolve(ev);
      });
      if (signal) {
        if (signal.aborted) onAbort();
        else signal.addEventListener('abort', onAbort, { once: true });
      }
    });
  }

  /** Delivers `event` to every current listener of `type`. */
  emit(type, event) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(event);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
