/**
 * Read-only TFTP server for PXE boot loaders. Listens for requests on one socket and gives every
 * accepted transfer its own ephemeral socket (RFC 1350 TID). Write requests are refused.
 *
 * netascii requests are served byte-for-byte like octet: boot files are binary, and converting would
 * make the tsize we announce disagree with the bytes sent.
 */
import dgram, { type RemoteInfo, type Socket } from 'node:dgram';
import { realpath, stat } from 'node:fs/promises';
import { lookup as dnsLookup } from 'node:dns';
import { isIP, isIPv6 } from 'node:net';
import type { Logger } from '../../lib/log.js';
import { ErrorCode, Opcode, encodeError, tryDecodePacket, type RequestPacket } from './codec.js';
import { MAX_BLKSIZE, negotiateRead } from './negotiate.js';
import { resolveInRoot, splitRequestName } from './paths.js';
import { FileCache, MemorySource, openSource, type OpenResult } from './source.js';
import { ReadTransfer, type TransferInfo } from './transfer.js';
import { BusyPoll } from './busy-poll.js';

export type { TransferInfo, TransferStatus } from './transfer.js';

export interface TftpServerOptions {
  /** Boot directory; nothing outside it (after resolving symlinks) is ever served. */
  readonly root: string;
  readonly port?: number;
  readonly bindAddress?: string;
  readonly logger: Logger;
  /** Retransmission timeout when the client does not negotiate one. Default 1000 ms. */
  readonly timeoutMs?: number;
  /** Retransmissions (with exponential backoff) before a transfer is abandoned. Default 5. */
  readonly retries?: number;
  /** Called once per transfer when it ends, whatever the outcome. */
  readonly onTransfer?: (info: TransferInfo) => void;
  /** Concurrent transfers; more requests get "server busy". Default 256. */
  readonly maxTransfers?: number;
  /** Largest blksize granted. Default 65464 (RFC 2348 maximum). */
  readonly maxBlksize?: number;
  /** Largest windowsize granted. Default 64. */
  readonly maxWindowsize?: number;
  /**
   * After each DATA send, keep the event loop polling this long for the ACK instead of sleeping
   * (see busy-poll.ts). Default 1 ms; 0 turns it off.
   */
  readonly busyPollMs?: number;
  /**
   * The MAC of the PC at an address, if known (from DHCP and boot-script sightings): TFTP sees only
   * addresses, and a technician follows one PC's boot by its MAC.
   */
  readonly macOf?: (address: string) => string | undefined;
  /**
   * Files answered per request instead of from the root (the signed chain's per-PC GRUB configuration,
   * the imaging client's kernel and initrd). Asked first, with the request's name split into segments
   * (no "..", see splitRequestName); null: look in the root as usual.
   */
  readonly virtualFiles?: (segments: readonly string[], client: { readonly address: string; readonly port: number }) => Promise<VirtualFile | null>;
}

/** What a virtual file holds: bytes made for this request, or a file elsewhere on disk. */
export type VirtualFile = { readonly kind: 'data'; readonly data: Buffer } | { readonly kind: 'file'; readonly path: string };

const CACHE = { maxFileBytes: 8 * 1024 * 1024, maxTotalBytes: 64 * 1024 * 1024 };
const STREAM_CHUNK_BYTES = 1024 * 1024;

export class TftpServer {
  private readonly log: Logger;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly maxTransfers: number;
  private readonly maxBlksize: number;
  private readonly maxWindowsize: number;
  private readonly busyPoll: BusyPoll;
  private readonly cache = new FileCache(CACHE);
  private readonly transfers = new Set<ReadTransfer>();
  private socket: Socket | undefined;
  private realRoot = '';
  /** Requests between accept and transfer start (path resolution, open); they count against maxTransfers. */
  private pending = 0;
  private stopping = false;

  constructor(private readonly opts: TftpServerOptions) {
    this.log = opts.logger.child({ component: 'tftp' });
    this.timeoutMs = opts.timeoutMs ?? 1000;
    this.retries = opts.retries ?? 5;
    this.maxTransfers = opts.maxTransfers ?? 256;
    this.maxBlksize = Math.min(opts.maxBlksize ?? MAX_BLKSIZE, MAX_BLKSIZE);
    this.maxWindowsize = opts.maxWindowsize ?? 64;
    this.busyPoll = new BusyPoll(opts.busyPollMs ?? 1);
  }

  async start(): Promise<void> {
    if (this.socket) throw new Error('TFTP server already started; call stop() first');
    try {
      this.realRoot = await realpath(this.opts.root);
      if (!(await stat(this.realRoot)).isDirectory()) throw new Error('not a directory');
    } catch (err) {
      throw new Error(`TFTP boot directory ${this.opts.root} is unusable (${err instanceof Error ? err.message : String(err)}); create it or run boot/setup-loaders.sh`, { cause: err });
    }
    this.stopping = false;
    const socket = this.newSocket();
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(new Error(`TFTP cannot listen on ${this.bindAddress()}:${this.opts.port ?? 69}: ${err.message} (port in use, or not root for port 69?)`));
      socket.once('error', onError);
      socket.bind(this.opts.port ?? 69, this.bindAddress(), () => {
        socket.off('error', onError);
        resolve();
      });
    });
    socket.on('error', (err) => this.log.error({ err: err.message }, 'tftp listening socket error'));
    socket.on('message', (msg, rinfo) => this.onRequest(msg, rinfo));
    this.socket = socket;
    const addr = socket.address();
    this.log.info({ root: this.realRoot, address: addr.address, port: addr.port }, 'tftp server listening');
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const t of [...this.transfers]) t.abort('stopped', 'Server shutting down');
    const socket = this.socket;
    this.socket = undefined;
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }

  address(): { address: string; port: number; family: string } {
    if (!this.socket) throw new Error('TFTP server is not running; call start() first');
    const a = this.socket.address();
    return { address: a.address, port: a.port, family: a.family };
  }

  private bindAddress(): string {
    return this.opts.bindAddress ?? '0.0.0.0';
  }

  /**
   * The transfer's TID port, held by two sockets (see transfer.ts): one connected to the client, one
   * unconnected for everybody else. Sharing a port needs SO_REUSEADDR on both; the unconnected one binds
   * first so the kernel picks a free ephemeral port.
   */
  private async openTransferSockets(client: { address: string; port: number }): Promise<{ socket: Socket; strangers: Socket }> {
    const strangers = this.newSocket(true);
    const socket = this.newSocket(true);
    try {
      await bindSocket(strangers, 0, this.bindAddress());
      await bindSocket(socket, strangers.address().port, this.bindAddress());
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.connect(client.port, client.address, () => {
          socket.off('error', reject);
          resolve();
        });
      });
      return { socket, strangers };
    } catch (err) {
      for (const s of [socket, strangers]) {
        try {
          s.close();
        } catch {
          // never bound
        }
      }
      throw new Error(`cannot open a transfer socket for ${client.address}:${client.port}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  }

  private newSocket(reuseAddr = false): Socket {
    const type = isIPv6(this.bindAddress()) ? 'udp6' : 'udp4';
    // We only ever send to addresses taken from rinfo, i.e. IP literals. Node's default lookup defers
    // every send by a tick even for literals; answering synchronously is a large part of the send path.
    const lookup = (host: string, opts: unknown, cb: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void => {
      const family = isIP(host);
      if (family !== 0) cb(null, host, family);
      else dnsLookup(host, { family: type === 'udp6' ? 6 : 4 }, (err, address, fam) => cb(err, address, fam));
    };
    return dgram.createSocket({ type, lookup, reuseAddr });
  }

  private reply(rinfo: RemoteInfo, code: number, message: string): void {
    this.socket?.send(encodeError(code, message), rinfo.port, rinfo.address);
  }

  private onRequest(msg: Buffer, rinfo: RemoteInfo): void {
    const client = { address: rinfo.address, port: rinfo.port };
    const res = tryDecodePacket(msg);
    if (!res.ok) {
      // Only complain to things that tried to be requests; stray DATA/ACK/ERROR bytes get silence.
      const op = msg.length >= 2 ? msg.readUInt16BE(0) : 0;
      if (op === Opcode.RRQ || op === Opcode.WRQ) this.reply(rinfo, ErrorCode.IllegalOperation, `Malformed request: ${res.error.kind}`);
      this.log.debug({ client, err: res.error.message }, 'tftp: malformed packet on request port');
      return;
    }
    const pkt = res.packet;
    if (pkt.op === 'WRQ') {
      this.log.warn({ client, file: pkt.filename }, 'tftp: refused write request (server is read-only)');
      this.reply(rinfo, ErrorCode.AccessViolation, 'Server is read-only');
      return;
    }
    if (pkt.op !== 'RRQ') {
      this.log.debug({ client, op: pkt.op }, 'tftp: ignoring non-request packet on request port');
      return;
    }
    if (pkt.mode !== 'octet' && pkt.mode !== 'netascii') {
      this.reply(rinfo, ErrorCode.IllegalOperation, `Unsupported transfer mode "${pkt.mode}"; use octet`);
      return;
    }
    if (this.transfers.size + this.pending >= this.maxTransfers) {
      this.log.warn({ client, file: pkt.filename, active: this.transfers.size }, 'tftp: too many transfers, refusing request');
      this.reply(rinfo, ErrorCode.NotDefined, 'Server busy, retry later');
      return;
    }
    this.pending++;
    this.startTransfer(pkt, rinfo)
      .catch((err: unknown) => {
        this.log.error({ client, file: pkt.filename, err: err instanceof Error ? err.message : String(err) }, 'tftp: could not start transfer');
        this.reply(rinfo, ErrorCode.NotDefined, 'Internal server error');
      })
      .finally(() => {
        this.pending--;
      });
  }

  private async startTransfer(req: RequestPacket, rinfo: RemoteInfo): Promise<void> {
    const client = { address: rinfo.address, port: rinfo.port };
    const file = req.filename;
    const virtual = await this.virtualFile(file, client);
    let servedPath: string;
    let opened: OpenResult;
    if (virtual?.kind === 'data') {
      servedPath = `(generated) ${file}`;
      opened = { ok: true, source: new MemorySource(virtual.data) };
    } else {
      const resolved = virtual ? ({ ok: true, path: virtual.path } as const) : await resolveInRoot(this.realRoot, file);
      if (!resolved.ok) {
        const code = resolved.reason === 'not-found' ? ErrorCode.FileNotFound : ErrorCode.AccessViolation;
        const level = resolved.reason === 'not-found' ? 'info' : 'warn';
        this.log[level]({ client, file, reason: resolved.reason, detail: resolved.detail }, 'tftp: request refused');
        this.reply(rinfo, code, resolved.reason === 'not-found' ? 'File not found' : 'Access violation');
        return;
      }
      servedPath = resolved.path;
      opened = await openSource(resolved.path, this.cache, STREAM_CHUNK_BYTES);
    }
    if (!opened.ok) {
      const code = opened.reason === 'not-file' ? ErrorCode.FileNotFound : opened.reason === 'forbidden' ? ErrorCode.AccessViolation : ErrorCode.NotDefined;
      this.log.warn({ client, file, reason: opened.reason, detail: opened.detail }, 'tftp: request refused');
      this.reply(rinfo, code, opened.reason === 'not-file' ? 'File not found' : opened.reason === 'forbidden' ? 'Access violation' : 'Cannot read file');
      return;
    }
    const source = opened.source;
    if (this.stopping) {
      await source.close();
      return;
    }
    const negotiated = negotiateRead(req.options, source.size, {
      maxBlksize: this.maxBlksize,
      maxWindowsize: this.maxWindowsize,
      defaultTimeoutMs: this.timeoutMs,
    });
    let sockets: { socket: Socket; strangers: Socket };
    try {
      sockets = await this.openTransferSockets(client);
    } catch (err) {
      await source.close();
      throw err;
    }
    if (this.stopping) {
      sockets.socket.close();
      sockets.strangers.close();
      await source.close();
      return;
    }
    const transfer = new ReadTransfer({
      ...sockets,
      peer: client,
      file,
      path: servedPath,
      source,
      negotiated,
      retries: this.retries,
      busyPoll: this.busyPoll,
      logger: this.log,
      onDone: (info) => {
        this.transfers.delete(transfer);
        this.logEnd(info);
        try {
          this.opts.onTransfer?.(info);
        } catch (err) {
          this.log.error({ err: err instanceof Error ? err.message : String(err) }, 'tftp: onTransfer callback threw');
        }
      },
    });
    this.transfers.add(transfer);
    this.log.info(
      { client, mac: this.macFor(client.address), file, path: servedPath, size: source.size, mode: req.mode, options: Object.fromEntries(req.options), granted: Object.fromEntries(negotiated.oack) },
      'tftp transfer start',
    );
    transfer.start();
  }

  private async virtualFile(file: string, client: { address: string; port: number }): Promise<VirtualFile | null> {
    if (!this.opts.virtualFiles) return null;
    const split = splitRequestName(file);
    if (!split.ok) return null;
    return this.opts.virtualFiles(split.segments, client);
  }

  private macFor(address: string): string | undefined {
    try {
      return this.opts.macOf?.(address);
    } catch {
      return undefined; // a lookup failure must not cost the transfer, only the log field
    }
  }

  private logEnd(info: TransferInfo): void {
    const fields = {
      client: info.client,
      mac: this.macFor(info.client.address),
      file: info.file,
      status: info.status,
      size: info.size,
      bytesAcked: info.bytesAcked,
      durationMs: info.durationMs,
      blksize: info.blksize,
      windowsize: info.windowsize,
      dataPackets: info.dataPackets,
      retransmits: info.retransmits,
      duplicateAcks: info.duplicateAcks,
      detail: info.detail,
    };
    if (info.status === 'complete') this.log.info(fields, 'tftp transfer end');
    else if (info.endedAfterOack) {
      // edk2 (OVMF, most UEFI firmware) asks for tsize, reads the OACK, aborts with error 8, then asks again.
      this.log.info(fields, 'tftp transfer end: client stopped after option negotiation (normal for UEFI tsize probe)');
    } else if (info.status === 'stopped') this.log.info(fields, 'tftp transfer end: server stopping');
    else if (info.status === 'client-abort') this.log.warn(fields, 'tftp transfer end: client aborted');
    else this.log.warn(fields, `tftp transfer failed (${info.status})`);
  }
}

function bindSocket(socket: Socket, port: number, address: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, address, () => {
      socket.off('error', reject);
      resolve();
    });
  });
}
