/**
 * TCP listener for NBD: accepts connections, hands each to an NbdConnection, counts traffic per
 * export and lets the owner observe transfers (for task progress) and shut everything down.
 */
import net from 'node:net';
import type { Logger } from '../log.js';
import type { ExportResolver, NbdExport } from './export.js';
import { NbdConnection, type TransferEvent } from './connection.js';

export type { TransferEvent };

export interface NbdServerOptions {
  readonly resolver: ExportResolver;
  readonly logger: Logger;
  /** Connections beyond this are closed at once (with a log line). Default 64. */
  readonly maxConnections?: number;
  /** A client that has not finished the handshake by then is dropped. Default 30 s. */
  readonly handshakeTimeoutMs?: number;
  /** Bytes one connection may hold in in-flight requests and unsent replies before it stops reading. Default 16 MiB: with several connections per client and several clients, this is what bounds the memory of a capture. */
  readonly maxInflightBytes?: number;
  /** Requests one connection may have in flight. Default 64. */
  readonly maxInflightRequests?: number;
  /** Called after each successful READ/WRITE/WRITE_ZEROES/TRIM; must be cheap and must not throw. */
  readonly onTransfer?: (exp: NbdExport, event: TransferEvent) => void;
}

export interface ExportStats {
  readonly connections: number;
  readonly bytesRead: number;
  readonly bytesWritten: number;
}

export interface NbdServerStats {
  readonly connections: number;
  readonly bytesRead: number;
  readonly bytesWritten: number;
  /** Exports with at least one attached connection. */
  readonly exports: ReadonlyArray<ExportStats & { readonly export: NbdExport }>;
}

interface MutableExportStats {
  connections: number;
  bytesRead: number;
  bytesWritten: number;
}

export class NbdServer {
  private readonly server: net.Server;
  private readonly log: Logger;
  private readonly connections = new Set<NbdConnection>();
  /** Counters survive detaching, but not the export object itself. */
  private readonly perExport = new WeakMap<NbdExport, MutableExportStats>();
  private readonly active = new Set<NbdExport>();
  private nextId = 1;
  private bytesRead = 0;
  private bytesWritten = 0;
  private closing = false;
  private closedWaiters: Array<() => void> = [];

  constructor(private readonly o: NbdServerOptions) {
    this.log = o.logger.child({ component: 'nbd' });
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
    return { connections: this.connections.size, bytesRead: this.bytesRead, bytesWritten: this.bytesWritten, exports };
  }

  exportStats(exp: NbdExport): ExportStats | undefined {
    const s = this.perExport.get(exp);
    return s === undefined ? undefined : { ...s };
  }

  private accept(socket: net.Socket): void {
    const id = this.nextId++;
    const address = socket.remoteAddress ?? 'unknown';
    const port = socket.remotePort ?? 0;
    if (this.closing || this.connections.size >= (this.o.maxConnections ?? 64)) {
      this.log.warn({ conn: id, peer: `${address}:${port}`, open: this.connections.size }, 'nbd: connection refused (limit reached or shutting down)');
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
      handshakeTimeoutMs: this.o.handshakeTimeoutMs ?? 30_000,
      maxInflightBytes: this.o.maxInflightBytes ?? 16 * 1024 * 1024,
      maxInflightRequests: this.o.maxInflightRequests ?? 64,
      hooks: {
        attached: (_c, n) => {
          let s = this.perExport.get(n.export);
          if (s === undefined) {
            s = { connections: 0, bytesRead: 0, bytesWritten: 0 };
            this.perExport.set(n.export, s);
          }
          s.connections++;
          this.active.add(n.export);
        },
        transfer: (_c, n, ev) => {
          const s = this.perExport.get(n.export)!;
          if (ev.op === 'read') {
            s.bytesRead += ev.length;
            this.bytesRead += ev.length;
          } else if (ev.op === 'write') {
            s.bytesWritten += ev.length;
            this.bytesWritten += ev.length;
          }
          this.o.onTransfer?.(n.export, ev);
        },
        closed: (c) => this.onClosed(c),
      },
    });
    this.connections.add(conn);
  }

  private onClosed(c: NbdConnection): void {
    this.connections.delete(c);
    const n = c.exportSelected;
    if (n !== undefined) {
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
