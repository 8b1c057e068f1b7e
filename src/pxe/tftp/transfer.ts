/**
 * One read transfer on its own ephemeral socket (its TID, RFC 1350 §4).
 *
 * Retransmission policy, the part that matters most:
 * - Only our timer retransmits. A duplicate ACK is ignored, never answered with data: answering it is
 *   the Sorcerer's Apprentice bug (RFC 1123 §4.2.3.1), where every packet ends up sent twice forever.
 * - With windowsize (RFC 7440) the client ACKs the last block it got in order. An ACK that moves the
 *   window forward but stops short of what we sent is news (the next block was lost), so we restart the
 *   window right after it; an ACK that moves nothing is stale and ignored.
 * - Timeouts back off exponentially (RFC 1123) up to a bounded number of retries, then we give up.
 * Blocks are counted as absolute numbers internally; the wire carries them mod 65536, so files with more
 * than 65535 blocks wrap to 0, as tftp-hpa, atftp, curl, iPXE and edk2 expect.
 *
 * Two sockets share the TID port: `socket` is connected to the client, so the kernel caches the route
 * and Node skips address validation on every send (lock-step speed is per-packet cost); `strangers` is
 * unconnected and, because the kernel prefers the connected socket for the client's packets, receives
 * only packets from other TIDs, which get error 5 (RFC 1350 §4) from the right port.
 */
import type { Socket, RemoteInfo } from 'node:dgram';
import type { Logger } from '../../lib/log.js';
import { ErrorCode, Opcode, encodeError, encodeOack, tryDecodePacket, writeDataHeader } from './codec.js';
import type { Negotiated } from './negotiate.js';
import type { BlockSource } from './source.js';
import type { BusyPoll } from './busy-poll.js';

export type TransferStatus = 'complete' | 'client-abort' | 'timeout' | 'error' | 'stopped';

export interface TransferInfo {
  readonly client: { readonly address: string; readonly port: number };
  /** Name as the client asked for it. */
  readonly file: string;
  /** Resolved path inside the boot directory. */
  readonly path: string;
  readonly status: TransferStatus;
  /** File size in bytes. */
  readonly size: number;
  /** Bytes the client acknowledged. */
  readonly bytesAcked: number;
  readonly blksize: number;
  readonly windowsize: number;
  readonly blocks: number;
  /** DATA packets sent, including retransmissions. */
  readonly dataPackets: number;
  readonly retransmits: number;
  readonly duplicateAcks: number;
  readonly durationMs: number;
  /** True when the client ended the transfer right after our OACK, e.g. edk2 probing tsize with error 8. */
  readonly endedAfterOack: boolean;
  readonly clientError?: { readonly code: number; readonly message: string };
  readonly detail?: string;
}

export interface TransferParams {
  /** Connected to the client; owned (closed) by the transfer. */
  readonly socket: Socket;
  /** Unconnected, bound to the same port as `socket`; owned (closed) by the transfer. */
  readonly strangers: Socket;
  readonly peer: { readonly address: string; readonly port: number };
  readonly file: string;
  readonly path: string;
  readonly source: BlockSource;
  readonly negotiated: Negotiated;
  readonly retries: number;
  /** Shared by the server's transfers: kicked after each send so the ACK is seen without a wake-up. */
  readonly busyPoll?: BusyPoll;
  readonly logger: Logger;
  readonly onDone: (info: TransferInfo) => void;
}

/** DATA headers for every wire block number, built lazily and shared: sends never allocate a header. */
const headerTable = Buffer.alloc(65536 * 4);
const headers: Buffer[] = new Array<Buffer>(65536);
function dataHeader(wireBlock: number): Buffer {
  let h = headers[wireBlock];
  if (h === undefined) {
    h = headerTable.subarray(wireBlock * 4, wireBlock * 4 + 4);
    writeDataHeader(h, wireBlock);
    headers[wireBlock] = h;
  }
  return h;
}

/** Cap on the backoff multiplier so a slow client still gets retries within a sane total time. */
const MAX_BACKOFF_SHIFT = 3;

export class ReadTransfer {
  private readonly socket: Socket;
  private readonly strangers: Socket;
  private readonly peer: { readonly address: string; readonly port: number };
  private readonly source: BlockSource;
  private readonly blksize: number;
  private readonly windowsize: number;
  private readonly totalBlocks: number;
  private readonly baseTimeoutMs: number;
  private readonly started = Date.now();

  private oackPending: boolean;
  /** Highest block the client acknowledged (0 = nothing yet / OACK acknowledged). */
  private lastAcked = 0;
  private nextToSend = 1;
  private highestSent = 0;
  private loading = false;
  private done = false;
  private retriesUsed = 0;
  private timer: NodeJS.Timeout | undefined;
  private dataPackets = 0;
  private retransmits = 0;
  private duplicateAcks = 0;

  constructor(private readonly p: TransferParams) {
    this.socket = p.socket;
    this.strangers = p.strangers;
    this.peer = p.peer;
    this.source = p.source;
    this.blksize = p.negotiated.blksize;
    this.windowsize = p.negotiated.windowsize;
    this.baseTimeoutMs = p.negotiated.timeoutMs;
    // A file that is an exact multiple of blksize still ends with an empty DATA packet.
    this.totalBlocks = Math.floor(p.source.size / this.blksize) + 1;
    this.oackPending = p.negotiated.oack.size > 0;
    this.socket.on('message', (msg) => this.onMessage(msg));
    this.strangers.on('message', (msg, rinfo) => this.answerStranger(msg, rinfo));
    const onError = (err: Error): void => {
      // Send errors (e.g. ENOBUFS under a burst, ECONNREFUSED once the client is gone) are transient
      // or final; either way the retransmit timer recovers or gives up.
      p.logger.debug({ err: err.message, client: this.peer }, 'tftp transfer socket error');
    };
    this.socket.on('error', onError);
    this.strangers.on('error', onError);
  }

  start(): void {
    this.timer = setTimeout(() => this.onTimeout(), this.baseTimeoutMs);
    if (this.oackPending) this.sendOack();
    else this.pump();
  }

  /** Ends the transfer from outside (server shutdown). */
  abort(status: TransferStatus, detail: string): void {
    if (this.done) return;
    this.sendError(ErrorCode.NotDefined, detail);
    this.finish(status, detail);
  }

  /** Only the client's packets arrive here: the socket is connected to it. */
  private onMessage(msg: Buffer): void {
    if (this.done) return;
    // Fast path for the one packet that arrives thousands of times per second.
    if (msg.length === 4 && msg[0] === 0 && msg[1] === Opcode.ACK) {
      this.onAck(msg.readUInt16BE(2));
      return;
    }
    const res = tryDecodePacket(msg);
    if (!res.ok) {
      this.p.logger.debug({ client: this.peer, err: res.error.message }, 'tftp: ignoring malformed packet from client');
      return;
    }
    const pkt = res.packet;
    if (pkt.op === 'ACK') this.onAck(pkt.block);
    else if (pkt.op === 'ERROR') {
      this.finish('client-abort', `client sent error ${pkt.code}: ${pkt.message}`, { code: pkt.code, message: pkt.message });
    } else {
      this.p.logger.debug({ client: this.peer, op: pkt.op }, 'tftp: ignoring unexpected packet type from client');
    }
  }

  /** RFC 1350: a packet from a wrong TID gets error 5 and leaves the transfer alone. */
  private answerStranger(msg: Buffer, rinfo: RemoteInfo): void {
    if (this.done) return;
    // Never answer an ERROR with an ERROR: two confused peers would ping-pong forever.
    if (msg.length >= 2 && msg.readUInt16BE(0) === 5) return;
    this.strangers.send(encodeError(ErrorCode.UnknownTransferId, 'Unknown transfer ID'), rinfo.port, rinfo.address);
  }

  private onAck(wire: number): void {
    if (this.oackPending) {
      if (wire !== 0) return;
      this.oackPending = false;
      this.progress();
      this.pump();
      return;
    }
    const diff = (wire - (this.lastAcked & 0xffff)) & 0xffff;
    if (diff === 0) {
      this.duplicateAcks++;
      return;
    }
    const abs = this.lastAcked + diff;
    if (abs > this.highestSent) return; // ACK for a block never sent: stale or forged, ignore.
    this.lastAcked = abs;
    this.progress();
    if (abs === this.totalBlocks) {
      this.finish('complete', 'all blocks acknowledged');
      return;
    }
    // Window partly acknowledged: the block after `abs` went missing, restart from there.
    if (abs < this.nextToSend - 1) this.nextToSend = abs + 1;
    this.pump();
  }

  private progress(): void {
    if (this.retriesUsed > 0) {
      this.retriesUsed = 0;
      this.rearm(this.baseTimeoutMs);
    }
  }

  private rearm(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.onTimeout(), ms);
  }

  private onTimeout(): void {
    if (this.done) return;
    this.retriesUsed++;
    if (this.retriesUsed > this.p.retries) {
      const lastOnly = !this.oackPending && this.lastAcked === this.totalBlocks - 1;
      const detail = lastOnly
        ? 'final ACK never arrived (client probably has the whole file)'
        : `no ACK after ${this.p.retries} retries (last acknowledged block ${this.lastAcked} of ${this.totalBlocks})`;
      this.sendError(ErrorCode.NotDefined, 'Transfer timed out');
      this.finish('timeout', detail);
      return;
    }
    this.rearm(this.baseTimeoutMs << Math.min(this.retriesUsed, MAX_BACKOFF_SHIFT));
    if (this.oackPending) {
      this.sendOack();
      return;
    }
    this.nextToSend = this.lastAcked + 1;
    this.pump();
  }

  private sendOack(): void {
    this.socket.send(encodeOack(this.p.negotiated.oack));
  }

  /** Sends what the window allows. Only data leaves here; it never reacts to duplicates. */
  private pump(): void {
    if (this.loading || this.done || this.oackPending) return;
    const limit = Math.min(this.lastAcked + this.windowsize, this.totalBlocks);
    const size = this.source.size;
    let sent = false;
    while (this.nextToSend <= limit) {
      const n = this.nextToSend;
      const start = (n - 1) * this.blksize;
      const end = Math.min(start + this.blksize, size);
      if (!this.source.has(start, end)) {
        this.loadThenPump(start, Math.min(limit * this.blksize, size));
        break;
      }
      const payload = this.source.view(start, end);
      const header = dataHeader(n & 0xffff);
      this.socket.send(payload.length > 0 ? [header, payload] : header);
      this.dataPackets++;
      if (n <= this.highestSent) this.retransmits++;
      else this.highestSent = n;
      this.nextToSend = n + 1;
      sent = true;
    }
    if (sent) {
      this.p.busyPoll?.kick();
      // Timeout counts from the last send, so a slow disk read does not eat the client's time.
      if (this.retriesUsed === 0) this.timer?.refresh();
    }
  }

  private loadThenPump(start: number, end: number): void {
    this.loading = true;
    this.source.load(start, end).then(
      () => {
        this.loading = false;
        this.pump();
      },
      (err: unknown) => {
        this.loading = false;
        const detail = err instanceof Error ? err.message : String(err);
        this.sendError(ErrorCode.NotDefined, 'Read error on server');
        this.finish('error', detail);
      },
    );
  }

  private sendError(code: number, message: string): void {
    try {
      this.socket.send(encodeError(code, message));
    } catch {
      // Socket already closed: nothing left to tell the client.
    }
  }

  private finish(status: TransferStatus, detail: string, clientError?: { code: number; message: string }): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    const endedAfterOack = status === 'client-abort' && this.oackPending;
    const info: TransferInfo = {
      client: { ...this.peer },
      file: this.p.file,
      path: this.p.path,
      status,
      size: this.source.size,
      bytesAcked: Math.min(this.lastAcked * this.blksize, this.source.size),
      blksize: this.blksize,
      windowsize: this.windowsize,
      blocks: this.totalBlocks,
      dataPackets: this.dataPackets,
      retransmits: this.retransmits,
      duplicateAcks: this.duplicateAcks,
      durationMs: Date.now() - this.started,
      endedAfterOack,
      ...(clientError ? { clientError } : {}),
      detail,
    };
    // Close after queued sends (the final ERROR) have been handed to the kernel.
    setImmediate(() => {
      for (const sock of [this.socket, this.strangers]) {
        try {
          sock.close();
        } catch {
          // already closed
        }
      }
    });
    this.source.close().catch((err: unknown) => this.p.logger.warn({ err: String(err), path: this.p.path }, 'tftp: closing file failed'));
    this.p.onDone(info);
  }
}
