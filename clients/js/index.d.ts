// Types of chatd-client. Ids: user and room ids are u64; the API returns
// them as decimal strings and accepts a decimal string, a bigint or a safe
// integer number (Id). Client ids are u32 numbers.

/** A user or room id as the API accepts it. */
export type Id = string | bigint | number;

/** Connection states: "connected" means logged in. */
export type ConnectionState = 'disconnected' | 'connecting' | 'connected';

/** What a transport's open() gets: the client's callbacks. */
export interface TransportHandlers {
  /** The connection is usable. */
  open(): void;
  /** Bytes received (a whole message, or a stream chunk); or an error for something that is not protocol bytes. */
  data(bytes: Uint8Array | null, error?: Error): void;
  /** The connection is gone (called once, not after the client's own close()). */
  close(info: { code?: number; reason?: string; wasClean?: boolean; error?: Error }): void;
}

/** One open connection of a transport. */
export interface TransportConnection {
  /** 'message': each data() holds whole commands (WebSocket); 'stream': chunks of a byte stream (TCP). */
  readonly framing: 'message' | 'stream';
  send(bytes: Uint8Array): void;
  close(): void;
}

/** Opens a connection to `url` (called once per connection attempt). */
export type Transport = (url: string, handlers: TransportHandlers) => TransportConnection;

/** The timer functions the client uses (tests pass virtual time). */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface ClientOptions {
  /** ws://host:port/chatd, wss://..., or tcp:// / tls:// with the tcp transport. */
  url: string;
  /** A token (JWT), or a function giving a fresh one for each connection attempt (tokens expire). */
  token: string | (() => string | Promise<string>);
  /** Default: webSocketTransport() (the global WebSocket). */
  transport?: Transport;
  /** Reconnect after a loss (default true). */
  reconnect?: boolean;
  /** First reconnect delay (default 500 ms); doubled per failed attempt, with jitter. */
  minReconnectDelayMs?: number;
  /** Cap of the reconnect delay (default 20000 ms). */
  maxReconnectDelayMs?: number;
  /** Opening plus login must finish within this (default 15000 ms). */
  connectTimeoutMs?: number;
  /** OP_KEEPALIVE period (default 30000 ms; the server closes a connection silent for 90 s). */
  keepaliveIntervalMs?: number;
  /** No byte received this long after a keepalive: the connection is dead (default 10000 ms). */
  keepaliveTimeoutMs?: number;
  timers?: Timers;
  /** Random numbers in [0, 1) for the backoff jitter (default Math.random). */
  random?: () => number;
}

/** An error the server sent (OP_ERROR) or the client raised before sending. */
export class ChatdError extends Error {
  /** 'NOT_MEMBER', 'AUTH_FAILED', ..., or the client's 'NOT_CONNECTED', 'NOT_JOINED', 'BAD_ADDRESS', 'LEFT', 'REMOVED', 'TIMEOUT', 'CLOSED', 'DISCONNECTED'. */
  readonly code: string;
  /** The OP_ERROR code, when the server sent it. */
  readonly errorCode?: number;
  /** The opcode of the command that caused it. */
  readonly opcode?: number;
  /** The chatid it concerns (decimal string; "0" when none). */
  readonly id?: string;
}

/** The bytes from the server can never be valid commands. */
export class ProtocolError extends Error {}

export interface StateEvent {
  state: ConnectionState;
  previous: ConnectionState;
  reason: string;
}
export interface ConnectingEvent {
  /** Why the last connection ended or failed. */
  error: Error;
  /** Failed attempts since the last login. */
  attempt: number;
  /** Delay before the next attempt. */
  delayMs: number;
}
export interface DisconnectedEvent {
  /** 'client' (disconnect()), 'server' (a fatal login error), 'lost' (reconnect off), 'transport'. */
  reason: string;
  error?: Error;
}

export class Emitter<Events extends object> {
  /** Calls `fn` for every `type` event; returns the unsubscribe function. */
  on<K extends keyof Events>(type: K, fn: (event: Events[K]) => void): () => void;
  off<K extends keyof Events>(type: K, fn: (event: Events[K]) => void): void;
  /** The next `type` event passing `filter`; rejects when `signal` aborts. */
  once<K extends keyof Events>(type: K, filter?: (event: Events[K]) => boolean, opts?: { signal?: AbortSignal }): Promise<Events[K]>;
  emit<K extends keyof Events>(type: K, event: Events[K]): void;
}

interface BaseEvents {
  state: StateEvent;
  connecting: ConnectingEvent;
  disconnected: DisconnectedEvent;
  error: { error: Error };
}

declare class BaseClient<Events extends BaseEvents> extends Emitter<Events> {
  readonly service: 'chatd' | 'statusd';
  readonly url: string;
  readonly state: ConnectionState;
  /** The token's user id (its `sub`, read for display), or null. */
  readonly userid: string | null;
  /** Starts connecting, and reconnecting as needed. No-op unless disconnected. */
  connect(): void;
  /** Closes the connection and stops reconnecting. */
  disconnect(reason?: string): void;
  /** Resolves when connected; rejects on a terminal disconnect, or at once when disconnected. */
  ready(): Promise<void>;
}

/** What the client knows of a room it wants joined. */
export interface RoomState {
  chatid: string;
  /** The server confirmed the join on the current connection. */
  joined: boolean;
  /** The room's in-call flag (null until joined). */
  inCall: boolean | null;
  /** This client says it is in the room's call (heartbeating). */
  inCallSelf: boolean;
}

/** A real-time message received. */
export class RtMessage {
  readonly chatid: string;
  /** Sender's user id. */
  readonly userid: string;
  /** Sender's client id. */
  readonly clientid: number;
  readonly msgtype: number;
  readonly data: Uint8Array;
  /** `data` as UTF-8 text. */
  readonly text: string;
}

export interface ChatdEvents extends BaseEvents {
  connected: { clientid: number };
  /** A room was joined (again after every reconnect), with its flag. */
  join: { chatid: string; inCall: boolean };
  /** A room was left: 'LEFT' (leave()), 'REMOVED' (membership removed), or the error code of a failed re-join. */
  leave: { chatid: string; reason: string; error?: ChatdError };
  /** The room's flag, on every join and every change. */
  incall: { chatid: string; inCall: boolean };
  message: RtMessage;
}

export interface ChatdOptions extends ClientOptions {
  /** OP_IN_CALL heartbeat period while in a call (default 3000 ms; the protocol asks for 2-5 s). */
  heartbeatIntervalMs?: number;
}

export interface Address {
  /** Only this user's devices (omit for the whole room). */
  userid?: Id;
  /** Only this device of `userid`. */
  clientid?: number;
  /** Application-defined type byte (default 0). */
  msgtype?: number;
}

export class ChatdClient extends BaseClient<ChatdEvents> {
  constructor(opts: ChatdOptions);
  /** Client id of the current connection, null while not connected. */
  readonly clientid: number | null;
  /** Rooms wanted joined, by chatid. */
  readonly rooms: Map<string, RoomState>;
  room(chatid: Id): RoomState | undefined;
  /** Joins (kept across reconnects); resolves once the server answered with the room's flag. */
  join(chatid: Id): Promise<RoomState>;
  /** Leaves; resolves once the server answered (at once when not connected). */
  leave(chatid: Id): Promise<void>;
  /** Sends to a joined room: everyone, one user's devices, or one device. Strings go as UTF-8. */
  send(chatid: Id, data: string | Uint8Array | ArrayBuffer | ArrayBufferView, to?: Address): void;
  /** In the room's call (heartbeats, re-sent after reconnects) or not. */
  setInCall(chatid: Id, inCall: boolean): void;
}

export interface PresenceEvents extends BaseEvents {
  connected: { presence: number };
  /** Another user's presence changed (0: offline). */
  presence: { userid: string; presence: number; previous: number };
  /** This user's own presence, as the server says. */
  self: { presence: number };
}

export interface PresenceOptions extends ClientOptions {
  /** Announced at login (0..127, default PRESENCE.ONLINE). */
  presence?: number;
  /** The announced value was set automatically (idle timer), not by the user. */
  auto?: boolean;
}

export class PresenceClient extends BaseClient<PresenceEvents> {
  constructor(opts: PresenceOptions);
  /** This user's presence as the server last said (0 until connected). */
  readonly presence: number;
  /** Who is online: user id -> presence (non-zero), a copy. */
  readonly online: Map<string, number>;
  /** A user's presence (0 when offline or unknown). */
  get(userid: Id): number;
  /** Sets this client's presence; `auto` marks it automatic (only this device). Re-announced after reconnects. */
  setPresence(presence: number, opts?: { auto?: boolean }): void;
}

export const PRESENCE: Readonly<{ OFFLINE: 0; DND: 1; AWAY: 2; ONLINE: 3; CHATTY: 4 }>;
export const PRESENCE_AUTO: 0x80;
export const DEFAULT_HEARTBEAT_INTERVAL_MS: number;
export const DEFAULTS: Readonly<{
  minReconnectDelayMs: number;
  maxReconnectDelayMs: number;
  connectTimeoutMs: number;
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
}>;

/** The WebSocket transport (default: the global WebSocket constructor). */
export function webSocketTransport(opts?: { WebSocket?: unknown }): Transport;

/** The `sub` of a JWT, unverified (for display), or null. */
export function tokenUserId(token: string): string | null;

// ---- the codec (sans-IO) ----

export const PROTOCOL_VERSION: 1;
export const CHATD: 'chatd';
export const STATUSD: 'statusd';
export const C2S: 'c2s';
export const S2C: 's2c';
export type Service = 'chatd' | 'statusd';
export type Direction = 'c2s' | 's2c';
export const OP: Readonly<Record<'KEEPALIVE' | 'JOIN' | 'LEAVE' | 'HELLO' | 'RTMSG' | 'IN_CALL' | 'AUTH' | 'ERROR', number>>;
export const SOP: Readonly<Record<'KEEPALIVE' | 'HELLO' | 'SETPRES' | 'PRES' | 'AUTH' | 'ERROR', number>>;
export const ERR: Readonly<Record<string, number>>;
export const MAX_MSGLEN: number;
export const MAX_TOKEN_LEN: number;
export function errorName(code: number): string;
export function errorCloses(code: number): boolean;

/** A command: `op` names it; fields as in the protocol (u64 as bigint, token as string, msgdata as Uint8Array). */
export interface Command {
  op: string;
  [field: string]: unknown;
}
export function encode(service: Service, dir: Direction, cmd: Command): Uint8Array;
/** The command at `offset` and its size, or null when more bytes are needed; throws ProtocolError. */
export function decode(service: Service, dir: Direction, bytes: Uint8Array, offset?: number): { cmd: Command; used: number } | null;
/** Whole commands only (a WebSocket message); throws ProtocolError. */
export function decodeMessage(service: Service, dir: Direction, bytes: Uint8Array): Command[];
export class StreamDecoder {
  constructor(service: Service, dir: Direction);
  /** Adds a chunk; returns the commands now complete. */
  push(chunk: Uint8Array): Command[];
}
