/**
 * One NBD client connection: reads bytes, drives the handshake, then runs transmission requests
 * concurrently against the selected export and writes replies (possibly out of order).
 *
 * Ordering: a request waits for every in-flight request whose byte range overlaps it when either
 * of the two writes (WRITE, WRITE_ZEROES, TRIM); FLUSH waits for all in-flight writes. So a
 * client never observes writes applied out of the order it issued overlapping ones, while
 * non-overlapping requests run in parallel.
 *
 * Backpressure: parsing stops (and the socket is paused) while the bytes held by in-flight
 * requests plus unsent reply bytes exceed a limit, and resumes on completion or 'drain'.
 */
import type { Socket } from 'node:net';
import type { Logger } from '../log.js';
import { ExportError, type ExportResolver, type PeerInfo, type ReadPiece } from './export.js';
import { ByteQueue } from './byte-queue.js';
import { Handshake, MAX_OPTION_LENGTH, MAX_PAYLOAD_CAP, optionName, type Negotiated } from './handshake.js';
import {
  CMD,
  CMD_FLAG,
  ERRNO,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  KNOWN_CLIENT_FLAGS,
  OPTION_HEADER_LENGTH,
  REP,
  REQUEST_HEADER_LENGTH,
  decodeClientFlags,
  decodeOptionHeader,
  decodeRequestHeader,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeNoneChunk,
  encodeOffsetDataHeader,
  encodeOffsetHoleChunk,
  encodeOptionError,
  encodeServerGreeting,
  encodeSimpleReply,
  errnoName,
  type RequestHeader,
} from './protocol.js';
import { checkReadPieces, checkRequest, clampExtents, commandName, isWriteCommand, type TransmissionContext } from './validate.js';

export interface TransferEvent {
  readonly op: 'read' | 'write' | 'zero' | 'trim';
  readonly offset: number;
  readonly length: number;
  readonly peer: PeerInfo;
}

export interface ConnectionHooks {
  attached(conn: NbdConnection, negotiated: Negotiated): void;
  transfer(conn: NbdConnection, negotiated: Negotiated, event: TransferEvent): void;
  closed(conn: NbdConnection): void;
}

export interface ConnectionOptions {
  readonly socket: Socket;
  readonly peer: PeerInfo;
  readonly resolver: ExportResolver;
  readonly logger: Logger;
  readonly hooks: ConnectionHooks;
  readonly isShuttingDown: () => boolean;
  readonly handshakeTimeoutMs: number;
  readonly maxInflightBytes: number;
  readonly maxInflightRequests: number;
}

/** Handshake is a burst of small messages; a client haggling this long is misbehaving. */
const MAX_OPTIONS = 256;
/** Queue limit while a message is incomplete: one maximal WRITE plus slack. */
const QUEUE_LIMIT = MAX_PAYLOAD_CAP + REQUEST_HEADER_LENGTH + 1024 * 1024;
const ZEROES = Buffer.alloc(1024 * 1024);
/** After we end the socket, a peer that never closes its side is cut off after this long. */
const END_GRACE_MS = 5000;

type State = 'flags' | 'optionHeader' | 'optionData' | 'request' | 'writePayload' | 'done';

interface InFlight {
  readonly type: number;
  readonly start: number;
  readonly end: number;
  readonly bytes: number;
  settled: Promise<void>;
}

export class NbdConnection {
  readonly peer: PeerInfo;
  private readonly socket: Socket;
  private readonly log: Logger;
  private readonly queue = new ByteQueue();
  private state: State = 'flags';
  private handshake: Handshake | undefined;
  private noZeroes = false;
  private optionCount = 0;
  private pendingOption = { option: 0, length: 0 };
  private pendingWrite: RequestHeader | undefined;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private tx: { negotiated: Negotiated; ctx: TransmissionContext } | undefined;
  private readonly inflight = new Set<InFlight>();
  private inflightBytes = 0;
  private pumping = false;
  private paused = false;
  private reason: string | undefined;
  private discReceived = false;
  private wroteAny = false;
  private writeGen = 0;
  private flushedGen = 0;
  private socketClosed = false;
  private detached = false;
  private shutdownRequested = false;
  private ending = false;
  private corked = false;

  constructor(private readonly o: ConnectionOptions) {
    this.peer = o.peer;
    this.socket = o.socket;
    this.log = o.logger.child({ conn: o.peer.connectionId, peer: `${o.peer.address}:${o.peer.port}` });
    this.socket.setNoDelay(true);
    this.socket.on('data', (chunk: Buffer) => {
      if (this.state === 'done') return;
      this.queue.push(chunk);
      this.pump();
    });
    this.socket.on('drain', () => this.pump());
    this.socket.on('error', (err: Error) => {
      this.reason ??= `socket error: ${err.message}`;
    });
    this.socket.on('close', () => this.onSocketClosed());
    this.handshakeTimer = setTimeout(() => this.abort('handshake timed out'), o.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    this.send([encodeServerGreeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)]);
  }

  get exportSelected(): Negotiated | undefined {
    return this.tx?.negotiated;
  }

  /** Server shutdown: refuse new work with ESHUTDOWN, end once in-flight requests settle. */
  shutdown(): void {
    this.shutdownRequested = true;
    if (this.tx === undefined || this.inflight.size === 0) {
      this.reason ??= 'server shutting down';
      this.endGracefully();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Input

  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.step()) {
        /* keep consuming complete messages */
      }
    } catch (err) {
      // A bug here must cost one connection, never the server.
      this.log.error({ err }, 'nbd: internal error while parsing; closing connection');
      this.abort('internal error');
    } finally {
      this.pumping = false;
    }
    this.updateFlow();
  }

  private blocked(): boolean {
    return (
      this.inflight.size >= this.o.maxInflightRequests ||
      this.inflightBytes + this.socket.writableLength >= this.o.maxInflightBytes
    );
  }

  private updateFlow(): void {
    if (this.socketClosed) return;
    const shouldPause = this.state !== 'done' && (this.queue.length >= QUEUE_LIMIT || (this.blocked() && this.queue.length > 0));
    if (shouldPause && !this.paused) {
      this.paused = true;
      this.socket.pause();
    } else if (!shouldPause && this.paused) {
      this.paused = false;
      this.socket.resume();
    }
  }

  private step(): boolean {
    const q = this.queue;
    switch (this.state) {
      case 'flags': {
        if (q.length < 4) return false;
        const flags = decodeClientFlags(q.take(4));
        if ((flags & ~KNOWN_CLIENT_FLAGS) !== 0) {
          this.abort(`client sent unknown handshake flags 0x${flags.toString(16)}`);
          return false;
        }
        this.noZeroes = (flags & FLAG_C_NO_ZEROES) !== 0;
        this.handshake = new Handshake({
          resolver: this.o.resolver,
          peer: this.peer,
          logger: this.log,
          noZeroes: this.noZeroes,
          isShuttingDown: () => this.o.isShuttingDown() || this.shutdownRequested,
        });
        this.state = 'optionHeader';
        return true;
      }
      case 'optionHeader': {
        if (q.length < OPTION_HEADER_LENGTH) return false;
        const h = decodeOptionHeader(q.take(OPTION_HEADER_LENGTH));
        if (!h.magicOk) {
          this.abort('bad option magic during handshake (not an NBD client, or a request before the handshake ended)');
          return false;
        }
        if (h.length > MAX_OPTION_LENGTH) {
          // Never buffer or skip an attacker-chosen amount: say why, then hang up.
          this.send([encodeOptionError(h.option, REP.ERR_TOO_BIG, `option data of ${h.length} bytes exceeds the limit of ${MAX_OPTION_LENGTH}`)]);
          this.reason ??= `option ${optionName(h.option)} length ${h.length} too big`;
          this.endGracefully();
          return false;
        }
        if (++this.optionCount > MAX_OPTIONS) {
          this.abort(`more than ${MAX_OPTIONS} options during handshake`);
          return false;
        }
        this.pendingOption = { option: h.option, length: h.length };
        this.state = 'optionData';
        return true;
      }
      case 'optionData': {
        const { option, length } = this.pendingOption;
        if (q.length < length) return false;
        const data = q.take(length);
        const outcome = this.handshake!.handleOption(option, data);
        this.send(outcome.replies);
        if (outcome.kind === 'close') {
          this.log.info({ option: optionName(option), reason: outcome.reason }, 'nbd: handshake ended');
          this.reason ??= outcome.reason;
          this.endGracefully();
          return false;
        }
        if (outcome.kind === 'transmission') this.enterTransmission(outcome.negotiated);
        else this.state = 'optionHeader';
        return true;
      }
      case 'request': {
        if (this.blocked()) return false;
        if (q.length < REQUEST_HEADER_LENGTH) return false;
        const h = decodeRequestHeader(q.take(REQUEST_HEADER_LENGTH));
        if (!h.magicOk) {
          this.abort('bad request magic; closing this connection');
          return false;
        }
        if (h.type === CMD.WRITE) {
          if (h.length > MAX_PAYLOAD_CAP) {
            // The payload cannot be skipped without reading it all; the stream is unrecoverable.
            this.abort(`NBD_CMD_WRITE payload of ${h.length} bytes exceeds the hard limit ${MAX_PAYLOAD_CAP}`);
            return false;
          }
          this.pendingWrite = h;
          this.state = 'writePayload';
          return true;
        }
        this.dispatch(h, undefined);
        return true;
      }
      case 'writePayload': {
        const h = this.pendingWrite!;
        if (q.length < h.length) return false;
        // Views of the socket chunks, not one assembled copy: a vectored export copies them once.
        const payload = q.takeSlices(h.length);
        this.pendingWrite = undefined;
        this.state = 'request';
        this.dispatch(h, payload);
        return true;
      }
      case 'done':
        q.clear();
        return false;
    }
  }

  private enterTransmission(n: Negotiated): void {
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
    this.handshake = undefined;
    const c = n.export.capabilities;
    const ctx: TransmissionContext = {
      size: n.export.size,
      readOnly: c.readOnly,
      structured: n.structured,
      allocationContextId: n.allocationContextId,
      minimumBlock: n.blockSizes.minimum,
      maximumPayload: n.blockSizes.maximum,
      trim: c.trim,
      writeZeroes: c.writeZeroes,
      fastZero: c.writeZeroes && c.fastZero,
      cache: c.cache,
    };
    this.tx = { negotiated: n, ctx };
    this.state = 'request';
    this.log.info(
      { export: n.export.description, size: n.export.size, structured: n.structured, blockStatus: n.allocationContextId !== undefined },
      'nbd: export attached',
    );
    this.o.hooks.attached(this, n);
  }

  // ---------------------------------------------------------------------------------------
  // Requests

  private dispatch(h: RequestHeader, payload: readonly Buffer[] | undefined): void {
    const tx = this.tx!;
    if (h.type === CMD.DISC) {
      this.discReceived = true;
      this.reason ??= 'client sent NBD_CMD_DISC';
      this.state = 'done';
      this.queue.clear();
      void this.settleAll().then(() => this.endGracefully());
      return;
    }
    if (this.shutdownRequested || this.o.isShuttingDown()) {
      this.replyError(h, ERRNO.ESHUTDOWN, 'server is shutting down', undefined);
      return;
    }
    const check = checkRequest(h, tx.ctx);
    if (!check.ok) {
      this.log.debug({ cmd: commandName(h.type), errno: errnoName(check.errno), msg: check.message }, 'nbd: request rejected');
      this.replyError(h, check.errno, check.message, undefined);
      return;
    }
    const start = check.offset;
    const end = h.type === CMD.FLUSH ? start : start + h.length;
    const writes = isWriteCommand(h.type);
    if (writes) this.wroteAny = true;
    const waitFor: Promise<void>[] = [];
    for (const r of this.inflight) {
      const rWrites = isWriteCommand(r.type);
      if (h.type === CMD.FLUSH) {
        if (rWrites) waitFor.push(r.settled);
      } else if ((writes || rWrites) && r.start < end && start < r.end) {
        waitFor.push(r.settled);
      }
    }
    const bytes = h.type === CMD.READ || payload !== undefined ? h.length : 0;
    const rec: InFlight = { type: h.type, start, end, bytes, settled: Promise.resolve() };
    this.inflight.add(rec);
    this.inflightBytes += bytes;
    const run = async (): Promise<void> => {
      if (waitFor.length > 0) await Promise.all(waitFor);
      await this.execute(h, start, payload);
    };
    rec.settled = run()
      .catch((err: unknown) => {
        this.log.error({ err }, 'nbd: internal error handling request');
      })
      .finally(() => {
        this.inflight.delete(rec);
        this.inflightBytes -= bytes;
        if (this.shutdownRequested && this.inflight.size === 0) this.endGracefully();
        if (!this.socketClosed) this.pump();
      });
  }

  private async execute(h: RequestHeader, offset: number, payload: readonly Buffer[] | undefined): Promise<void> {
    const { negotiated } = this.tx!;
    const exp = negotiated.export;
    const fua = (h.flags & CMD_FLAG.FUA) !== 0;
    try {
      switch (h.type) {
        case CMD.READ: {
          const pieces = h.length === 0 ? [] : await exp.read(offset, h.length);
          const checked = checkReadPieces(pieces, offset, h.length);
          if (typeof checked === 'string') throw new Error(`export returned a malformed read: ${checked}`);
          this.sendRead(h, offset, checked);
          this.transfer('read', offset, h.length);
          return;
        }
        case CMD.WRITE: {
          if (h.length > 0) {
            const slices = payload!;
            if (exp.writev) await exp.writev(offset, slices, fua);
            else await exp.write(offset, slices.length === 1 ? slices[0] : Buffer.concat(slices, h.length), fua);
          }
          this.wrote(fua);
          this.replyOk(h);
          this.transfer('write', offset, h.length);
          return;
        }
        case CMD.WRITE_ZEROES: {
          if (h.length > 0) {
            await exp.writeZeroes(offset, h.length, {
              fua,
              fastZero: (h.flags & CMD_FLAG.FAST_ZERO) !== 0,
              mayTrim: (h.flags & CMD_FLAG.NO_HOLE) === 0,
            });
          }
          this.wrote(fua);
          this.replyOk(h);
          this.transfer('zero', offset, h.length);
          return;
        }
        case CMD.TRIM: {
          if (h.length > 0) await exp.trim(offset, h.length, fua);
          this.wrote(fua);
          this.replyOk(h);
          this.transfer('trim', offset, h.length);
          return;
        }
        case CMD.FLUSH: {
          const gen = this.writeGen;
          await exp.flush();
          this.flushedGen = Math.max(this.flushedGen, gen);
          this.replyOk(h);
          return;
        }
        case CMD.CACHE: {
          if (h.length > 0) await exp.cache(offset, h.length);
          this.replyOk(h);
          return;
        }
        case CMD.BLOCK_STATUS: {
          const extents = await exp.blockStatus(offset, h.length);
          const reqOne = (h.flags & CMD_FLAG.REQ_ONE) !== 0;
          const wire = clampExtents(extents, offset, h.length, exp.size, reqOne);
          if (typeof wire === 'string') throw new Error(`export returned malformed extents: ${wire}`);
          this.send([encodeBlockStatusChunk(h.cookie, negotiated.allocationContextId!, wire, true)]);
          return;
        }
        default:
          // checkRequest rejects unknown types; reaching here is a server bug.
          throw new Error(`unhandled command ${h.type}`);
      }
    } catch (err) {
      let errno: number;
      let message: string;
      if (err instanceof ExportError) {
        errno = ERRNO[err.errno];
        message = err.message;
        this.log.warn({ cmd: commandName(h.type), offset, length: h.length, errno: err.errno, msg: err.message }, 'nbd: export error');
      } else {
        errno = ERRNO.EIO;
        message = 'I/O error on the server (see server log)';
        this.log.error({ err, cmd: commandName(h.type), offset, length: h.length }, 'nbd: export failed; answering EIO');
      }
      this.replyError(h, errno, message, h.type === CMD.READ && h.length > 0 ? offset : undefined);
    }
  }

  private wrote(fua: boolean): void {
    // FUA writes are durable on reply; everything else needs a later FLUSH for a clean end.
    if (!fua) this.writeGen++;
  }

  private transfer(op: TransferEvent['op'], offset: number, length: number): void {
    try {
      this.o.hooks.transfer(this, this.tx!.negotiated, { op, offset, length, peer: this.peer });
    } catch (err) {
      this.log.error({ err }, 'nbd: transfer observer threw');
    }
  }

  // ---------------------------------------------------------------------------------------
  // Output

  private send(bufs: readonly Buffer[]): void {
    if (this.socketClosed || this.socket.destroyed || !this.socket.writable || bufs.length === 0) return;
    // Replies completed in the same event-loop turn leave in one writev: with 16-byte WRITE replies,
    // one syscall each cost a capture more than the replies themselves (measured in bench/nbd.ts).
    // setImmediate, not nextTick: the replies to writes parsed from several socket reads in one
    // poll phase then share the syscall too.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    for (const b of bufs) this.socket.write(b);
  }

  private replyOk(h: RequestHeader): void {
    this.send([encodeSimpleReply(0, h.cookie)]);
  }

  private replyError(h: RequestHeader, errno: number, message: string, readOffset: number | undefined): void {
    if (this.tx!.negotiated.structured) {
      this.send([encodeErrorChunk(h.cookie, errno, message, true, readOffset)]);
    } else {
      this.send([encodeSimpleReply(errno, h.cookie)]);
    }
  }

  private sendRead(h: RequestHeader, offset: number, pieces: readonly ReadPiece[]): void {
    const structured = this.tx!.negotiated.structured;
    const out: Buffer[] = [];
    if (!structured) {
      out.push(encodeSimpleReply(0, h.cookie));
      for (const p of pieces) pushPieceBytes(out, p);
    } else if (h.length === 0) {
      out.push(encodeNoneChunk(h.cookie));
    } else if ((h.flags & CMD_FLAG.DF) !== 0) {
      if (pieces.every((p) => p.kind === 'hole')) {
        out.push(encodeOffsetHoleChunk(h.cookie, offset, h.length, true));
      } else {
        out.push(encodeOffsetDataHeader(h.cookie, offset, h.length, true));
        for (const p of pieces) pushPieceBytes(out, p);
      }
    } else {
      pieces.forEach((p, i) => {
        const done = i === pieces.length - 1;
        if (p.kind === 'hole') {
          out.push(encodeOffsetHoleChunk(h.cookie, p.offset, p.length, done));
        } else {
          out.push(encodeOffsetDataHeader(h.cookie, p.offset, p.data.length, done));
          out.push(p.data);
        }
      });
    }
    this.send(out);
  }

  // ---------------------------------------------------------------------------------------
  // Ending

  /** Protocol violation or timeout: drop the connection now (hard disconnect). */
  private abort(reason: string): void {
    if (this.reason === undefined) {
      this.reason = reason;
      this.log.warn({ reason }, 'nbd: closing connection');
    }
    this.state = 'done';
    this.queue.clear();
    this.socket.destroy();
  }

  /** Let queued replies flush, then close; a peer that never closes its side is cut off later. */
  private endGracefully(): void {
    this.state = 'done';
    this.queue.clear();
    if (this.socketClosed || this.ending) return;
    this.ending = true;
    if (this.paused) {
      this.paused = false;
      this.socket.resume();
    }
    this.socket.end();
    setTimeout(() => this.socket.destroy(), END_GRACE_MS).unref();
  }

  private async settleAll(): Promise<void> {
    while (this.inflight.size > 0) {
      await Promise.all([...this.inflight].map((r) => r.settled));
    }
  }

  private onSocketClosed(): void {
    this.socketClosed = true;
    this.state = 'done';
    this.queue.clear();
    clearTimeout(this.handshakeTimer);
    void this.settleAll().then(() => {
      if (this.detached) return;
      this.detached = true;
      const reason = this.reason ?? 'peer closed the connection';
      if (this.tx !== undefined) {
        const clean = this.discReceived && this.writeGen === this.flushedGen;
        this.log.info({ clean, wrote: this.wroteAny, reason, unflushedWrites: this.writeGen - this.flushedGen }, 'nbd: export detached');
        try {
          this.tx.negotiated.export.detach(this.peer, { clean, discReceived: this.discReceived, wrote: this.wroteAny, reason });
        } catch (err) {
          this.log.error({ err }, 'nbd: export detach threw');
        }
      } else {
        this.log.debug({ reason }, 'nbd: connection closed during handshake');
      }
      this.o.hooks.closed(this);
    });
  }
}

function pushPieceBytes(out: Buffer[], p: ReadPiece): void {
  if (p.kind === 'data') {
    out.push(p.data);
    return;
  }
  let left = p.length;
  while (left > 0) {
    const n = Math.min(left, ZEROES.length);
    out.push(ZEROES.subarray(0, n));
    left -= n;
  }
}
