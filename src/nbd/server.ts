/**
 * TCP listener for NBD: accepts connections, hands each to an NbdConnection, counts connections
 * per export (stats()) and shuts everything down. Bytes are not counted here: each grant's export
 * runs through a transfer meter (transport/transfer-meter.ts), the one count of a transfer.
 *
 * Limits, so that nobody on the LAN can starve the clients that hold a token:
 * - Connections still in the handshake (unauthenticated: they have not named a valid export yet)
 *   have their own small pool, a per-address share of it and a short deadline. A new connection
 *   from an address at its share takes the slot of that address's oldest handshake (one that has
 *   sent nothing since the greeting first), so an address reconnecting in a loop only evicts
 *   itself. When the whole pool is full, the oldest connection that has sent nothing, from the
 *   address holding most such slots, makes room; one that is talking is never dropped for a
 *   newcomer (the newcomer is refused instead). A real client answers the greeting at once and
 *   finishes its handshake in milliseconds.
 * - Connections in transmission (attached to an export) are capped separately.
 * - Payload memory across all connections is bounded by one MemoryBudget.
 */
import net from 'node:net';
import { plainAddress } from '../lib/ipv4.js';
import type { Logger } from '../lib/log.js';
import type { ExportResolver, NbdExport } from './export.js';
import { NbdConnection } from './connection.js';
import { MemoryBudget } from './memory-budget.js';


const EVICTION_LOG_INTERVAL_MS = 10_000;

export interface NbdServerOptions {
  readonly resolver: ExportResolver;
  readonly logger: Logger;
  /** Connections attached to an export; a client asking for one more is refused at NBD_OPT_GO. Default 64. */
  readonly maxConnections?: number;
  /** Connections still in the handshake, across all addresses. Default 32. */
  readonly maxHandshakes?: number;
  /** Connections still in the handshake from one address. Default 8 (the imaging client opens 4 at once). */
  readonly maxHandshakesPerAddress?: number;
  /** A client that has not finished the handshake by then is dropped. Default 10 s. */
  readonly handshakeTimeoutMs?: number;
  /** After the handshake, a connection with nothing in flight that sends nothing this long is dropped. Default 5 min. */
  readonly idleTimeoutMs?: number;
  /** Bytes of request payloads (WRITE data received, READ data not yet sent) held across all connections. Default 256 MiB. */
  readonly memoryBudgetBytes?: number;
  /** Bytes one connection may hold in in-flight requests and unsent replies before it stops reading. Default 16 MiB: with several connections per client and several clients, this is what bounds the memory of a capture. */
  readonly maxInflightBytes?: number;
  /** Requests one connection may have in flight. Default 64. */
  readonly maxInflightRequests?: number;
}

/** Bytes are not counted here: every grant's export runs through the transfer meter (transport/transfer-meter.ts). */
export interface ExportStats {
  readonly connections: number;
}

export interface NbdMemoryStats {
  readonly budgetBytes: number;
  /** Budget bytes held by requests now. */
  readonly usedBytes: number;
  /** Requests waiting for budget (their connections read nothing meanwhile). */
  readonly waitingRequests: number;
  /** Received bytes not yet consumed, across connections (payloads being assembled, unparsed requests). */
  readonly queuedBytes: number;
}

export interface NbdServerStats {
  readonly connections: number;
  /** Of `connections`, those still in the handshake. */
  readonly handshaking: number;
  readonly memory: NbdMemoryStats;
  /** Exports with at least one attached connection. */
  readonly exports: ReadonlyArray<ExportStats & { readonly export: NbdExport }>;
}

interface MutableExportStats {
  connections: number;
}

export class NbdServer {
  private readonly server: net.Server;
  private readonly log: Logger;
  private readonly connections = new Set<NbdConnection>();
  /** Connections in the handshake, oldest first, with the address they count against. */
  private readonly handshaking = new Map<NbdConnection, string>();
  private transmitting = 0;
  private evictions = 0;
  private lastEvictionLog = 0;
  private readonly budget: MemoryBudget;
  /** Counters survive detaching, but not the export object itself. */
  private readonly perExport = new WeakMap<NbdExport, MutableExportStats>();
  private readonly active = new Set<NbdExport>();
  private nextId = 1;
  private closing = false;
  private closedWaiters: Array<() => void> = [];

  constructor(private readonly o: NbdServerOptions) {
    this.log = o.logger.child({ component: 'nbd' });
    this.budget = new MemoryBudget(o.memoryBudgetBytes ?? 256 * 1024 * 1024);
    this.server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.server.on('error', (err) => this.log.error({ err }, 'nbd: listener error'));
  }

  listen(port: number, host: string): Promise<{ port: number }> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        const addr = this.server.address();
        const bound = typeof addr === 'object' && addr !== null ? addr.port : port;
        this.log.info({ host, port: bound }, 'nbd: listening');
        resolve({ port: bound });
      });
    });
  }

  /** Stops accepting, ends every connection after its in-flight requests settle, resolves when all are gone. */
  async close(): Promise<void> {
    this.closing = true;
    const listenerClosed = new Promise<void>((resolve) => {
      if (!this.server.listening) resolve();
      else this.server.close(() => resolve());
    });
    const allGone = new Promise<void>((resolve) => {
      if (this.connections.size === 0) resolve();
      else this.closedWaiters.push(resolve);
    });
    for (const c of this.connections) c.shutdown();
    await Promise.all([listenerClosed, allGone]);
  }

  stats(): NbdServerStats {
    const exports = [...this.active].map((e) => ({ export: e, ...this.exportStats(e)! }));
    let queuedBytes = 0;
    for (const c of this.connections) queuedBytes += c.queuedBytes;
    return {
      connections: this.connections.size,
      handshaking: this.handshaking.size,
      memory: { budgetBytes: this.budget.limitBytes, usedBytes: this.budget.usedBytes, waitingRequests: this.budget.waiting, queuedBytes },
      exports,
    };
  }

  exportStats(exp: NbdExport): ExportStats | undefined {
    const s = this.perExport.get(exp);
    return s === undefined ? undefined : { ...s };
  }

  private accept(socket: net.Socket): void {
    const id = this.nextId++;
    const address = socket.remoteAddress ?? 'unknown';
    const port = socket.remotePort ?? 0;
    if (this.closing) {
      this.log.warn({ conn: id, peer: `${address}:${port}` }, 'nbd: connection refused: shutting down');
      socket.on('error', () => undefined);
      socket.destroy();
      return;
    }
    const source = plainAddress(address);
    if (!this.makeHandshakeRoom(source, id)) {
      this.log.warn({ conn: id, peer: `${address}:${port}`, handshaking: this.handshaking.size }, 'nbd: connection refused: every handshake slot is taken by a client still negotiating');
      socket.on('error', () => undefined);
      socket.destroy();
      return;
    }
    const conn = new NbdConnection({
      socket,
      peer: { connectionId: id, address, port },
      resolver: this.o.resolver,
      logger: this.log,
      isShuttingDown: () => this.closing,
      handshakeTimeoutMs: this.o.handshakeTimeoutMs ?? 10_000,
      idleTimeoutMs: this.o.idleTimeoutMs ?? 300_000,
      budget: this.budget,
      maxInflightBytes: this.o.maxInflightBytes ?? 16 * 1024 * 1024,
      maxInflightRequests: this.o.maxInflightRequests ?? 64,
      hooks: {
        admit: () => {
          const max = this.o.maxConnections ?? 64;
          if (this.transmitting < max) return undefined;
          return `the server already has ${this.transmitting} NBD connections attached (limit ${max}); close some or try again later`;
        },
        attached: (c, n) => {
          this.handshaking.delete(c);
          this.transmitting++;
          let s = this.perExport.get(n.export);
          if (s === undefined) {
            s = { connections: 0 };
            this.perExport.set(n.export, s);
          }
          s.connections++;
          this.active.add(n.export);
        },
        closed: (c) => this.onClosed(c),
      },
    });
    this.connections.add(conn);
    this.handshaking.set(conn, source);
  }

  /**
   * Frees a handshake slot for a new connection from `source` if the pools are full (see the
   * header). Returns false when there is no slot to give: the new connection must be refused.
   */
  private makeHandshakeRoom(source: string, id: number): boolean {
    const perAddress = this.o.maxHandshakesPerAddress ?? 8;
    const total = this.o.maxHandshakes ?? 32;
    let fromSame = 0;
    for (const a of this.handshaking.values()) if (a === source) fromSame++;
    let victim: NbdConnection | undefined;
    if (fromSame >= perAddress) {
      victim = this.oldestHandshake((c, a) => a === source && c.silent) ?? this.oldestHandshake((_c, a) => a === source);
    } else if (this.handshaking.size >= total) {
      const counts = new Map<string, number>();
      for (const [c, a] of this.handshaking) if (c.silent) counts.set(a, (counts.get(a) ?? 0) + 1);
      let most = 0;
      for (const n of counts.values()) most = Math.max(most, n);
      victim = this.oldestHandshake((c, a) => c.silent && counts.get(a) === most);
      if (victim === undefined) return false;
    }
    if (victim === undefined) return true;
    const victimAddress = this.handshaking.get(victim);
    this.handshaking.delete(victim);
    victim.evict('handshake slot taken by a newer connection (too many unfinished handshakes)');
    // A flood would write one line per connection; one line per interval says the same.
    this.evictions++;
    const now = Date.now();
    if (now - this.lastEvictionLog >= EVICTION_LOG_INTERVAL_MS) {
      this.log.warn(
        { conn: id, evictedAddress: victimAddress, evictions: this.evictions, handshaking: this.handshaking.size },
        'nbd: too many unfinished handshakes; dropping the oldest from the busiest address (a client opening connections without completing them)',
      );
      this.lastEvictionLog = now;
      this.evictions = 0;
    }
    return true;
  }

  private oldestHandshake(match: (c: NbdConnection, address: string) => boolean): NbdConnection | undefined {
    for (const [c, a] of this.handshaking) if (match(c, a)) return c;
    return undefined;
  }

  private onClosed(c: NbdConnection): void {
    this.connections.delete(c);
    this.handshaking.delete(c);
    const n = c.exportSelected;
    if (n !== undefined) {
      this.transmitting--;
      const s = this.perExport.get(n.export)!;
      s.connections--;
      if (s.connections === 0) this.active.delete(n.export);
    }
    if (this.connections.size === 0) {
      const waiters = this.closedWaiters;
      this.closedWaiters = [];
      for (const w of waiters) w();
    }
  }
}
