// Ids at the API boundary.
//
// `userid` and `chatid` are u64 on the wire (BigInt inside the codec). The
// client API returns them as decimal strings, the form the admin API uses
// (ids in JSON are decimal strings), which also work as Map keys and in
// JSON; it accepts a decimal string, a BigInt, or a safe integer number.
// `clientid` is u32 and always a number.

const U64_MAX = (1n << 64n) - 1n;

/**
 * The BigInt of an id given as a decimal string, BigInt or safe integer.
 * @param {string|bigint|number} id
 * @param {string} what  name used in the error message
 * @param {{allowZero?: boolean}} [opts]
 * @returns {bigint}
 */
export function toId(id, what = 'id', { allowZero = false } = {}) {
  let v;
  if (typeof id === 'bigint') v = id;
  else if (typeof id === 'number' && Number.isSafeInteger(id)) v = BigInt(id);
  else if (typeof id === 'string' && /^[0-9]{1,20}$/.test(id)) v = BigInt(id);
  else throw new TypeError(`${what} must be a decimal string, a BigInt or a safe integer, not ${String(id)}`);
  if (v < 0n || v > U64_MAX) throw new RangeError(`${what} ${v} is not a u64`);
  if (v === 0n && !allowZero) throw new RangeError(`${what} must not be 0`);
  return v;
}

/** The decimal string of a u64 id. */
export function idString(v) {
  return v.toString(10);
}

/** A client id (u32; 0 only where allowed). */
export function toClientId(id, what = 'clientid', { allowZero = false } = {}) {
  if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) throw new RangeError(`${what} must be a u32`);
  if (id === 0 && !allowZero) throw new RangeError(`${what} must not be 0`);
  return id;
}

/**
 * The `sub` claim of a JWT (the user id the token logs in as), read without
 * verifying anything: the server is the judge; this is for display.
 * @returns {string|null}
 */
export function tokenUserId(token) {
  try {
    const part = token.split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))));
    return typeof json.sub === 'string' && /^[0-9]{1,20}$/.test(json.sub) ? json.sub : null;
  } catch {
    return null;
  }
}
