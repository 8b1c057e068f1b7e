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
 * requests plus unsent reply bytes exceed a limit, and resumes on completion or 'drain'. Beyond
 * that per-connection limit, a WRITE's payload is only received, and a READ only run, once the
 * server-wide MemoryBudget grants its bytes; until then the connection reads nothing more.
 *
 * Deadlines: the whole handshake must finish within `handshakeTimeoutMs`; after it, a connection
 * with no request in flight that sends nothing for `idleTimeoutMs` is dropped (hard close).
 */
import type { Socket } from 'node:net';
import type { Logger } from '../lib/log.js';
import { ExportError, type ExportResolver, type PeerInfo, type ReadPiece } from './export.js';
import { ByteQueue } from './byte-queue.js';
import type { MemoryBudget } from './memory-budget.js';
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

export interface ConnectionHooks {
  /** Called just before an export is attached; a string refuses the client with that message. */
  admit(conn: NbdConnection): string | undefined;
  attached(conn: NbdConnection, negotiated: Negotiated): void;
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
  /** After the handshake, a connection with nothing in flight that sends nothing this long is dropped. */
  readonly idleTimeoutMs: number;
  readonly maxInflightBytes: number;
  readonly maxInflightRequests: number;
  readonly budget: MemoryBudget;
}

/** Handshake is a burst of small messages; a client haggling this long is misbehaving. */
const MAX_OPTIONS = 256;
/** Queue limit while a message is incomplete: one maximal WRITE plus slack. */
const QUEUE_LIMIT = MAX_PAYLOAD_CAP + REQUEST_HEADER_LENGTH + 1024 * 1024;
const ZEROES = Buffer.alloc(1024 * 1024);
/** After we end the socket, a peer that never closes its side is cut off after this long. */
const END_GRACE_MS = 5000;

type State = 'flags' | 'optionHeader' | 'optionData' | 'request' | 'awaitBudget' | 'writePayload' | 'done';

interface InFlight {
  readonly type: number;
  readonly start: number;
  readonly end: number;
  readonly bytes: number;
  settled: Promise<void>;
}

/** Bytes of the server-wide budget one request holds; given back exactly once. */
interface BudgetHold {
  bytes: number;
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
  private idleTimer: NodeJS.Timeout | undefined;
  /** Budget holds not yet given back: released on completion, or all at once when the connection ends. */
  private readonly holds = new Set<BudgetHold>();
  /** The hold for the request whose header was parsed and whose payload or run is pending. */
  private pendingHold: BudgetHold | undefined;
  private pendingHeader: RequestHeader | undefined;
  private cancelBudgetWait: (() => void) | undefined;
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
      this.idleTimer?.refresh();
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

  /** Received bytes not yet consumed by a request (a payload being assembled, or requests not yet parsed). */
  get queuedBytes(): number {
    return this.queue.length;
  }

  /** True while the client has sent nothing at all since the greeting. */
  get silent(): boolean {
    return this.state === 'flags' && this.queue.length === 0;
  }

  /** Drops a connection still in the handshake to make room for another client (see NbdServer). */
  evict(reason: string): void {
    this.abort(reason);
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
    const shouldPause =
      this.state !== 'done' && (this.state === 'awaitBudget' || this.queue.length >= QUEUE_LIMIT || (this.blocked() && this.queue.length > 0));
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
          admit: () => this.o.hooks.admit(this),
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
        if (h.type === CMD.WRITE && h.length > MAX_PAYLOAD_CAP) {
          // The payload cannot be skipped without reading it all; the stream is unrecoverable.
          this.abort(`NBD_CMD_WRITE payload of ${h.length} bytes exceeds the hard limit ${MAX_PAYLOAD_CAP}`);
          return false;
        }
        // A READ is budgeted only when it will run: an invalid one is answered without reading anything.
        const budgeted = h.type === CMD.WRITE ? h.length : h.type === CMD.READ && this.tx !== undefined && checkRequest(h, this.tx.ctx).ok ? h.length : 0;
        if (budgeted === 0) return this.afterBudget(h, undefined);
        if (this.o.budget.tryAcquire(budgeted)) return this.afterBudget(h, this.hold(budgeted));
        this.pendingHeader = h;
        this.state = 'awaitBudget';
        this.cancelBudgetWait = this.o.budget.wait(budgeted, () => {
          this.cancelBudgetWait = undefined;
          const hold = this.hold(budgeted);
          if (this.state !== 'awaitBudget') {
            this.release(hold);
            return;
          }
          const pending = this.pendingHeader!;
          this.pendingHeader = undefined;
          this.state = 'request';
          this.afterBudget(pending, hold);
          // Granted from inside another request's release: resume parsing on a fresh stack.
          queueMicrotask(() => this.pump());
        });
        return false;
      }
      case 'awaitBudget':
        return false;
      case 'writePayload': {
        const h = this.pendingWrite!;
        if (q.length < h.length) return false;
        // Views of the socket chunks, not one assembled copy: a vectored export copies them once.
        const payload = q.takeSlices(h.length);
        const hold = this.pendingHold;
        this.pendingWrite = undefined;
        this.pendingHold = undefined;
        this.state = 'request';
        this.dispatch(h, payload, hold);
        return true;
      }
      case 'done':
        q.clear();
        return false;
    }
  }

  /** A request header whose budget (if any) is held: receive its payload, or run it. */
  private afterBudget(h: RequestHeader, hold: BudgetHold | undefined): boolean {
    if (h.type === CMD.WRITE) {
      this.pendingWrite = h;
      this.pendingHold = hold;
      this.state = 'writePayload';
      return true;
    }
    this.dispatch(h, undefined, hold);
    return true;
  }

  private hold(bytes: number): BudgetHold {
    const hold = { bytes };
    this.holds.add(hold);
    return hold;
  }

  private release(hold: BudgetHold | undefined): void {
    if (hold === undefined || hold.bytes === 0) return;
    const bytes = hold.bytes;
    hold.bytes = 0;
    this.holds.delete(hold);
    this.o.budget.release(bytes);
  }

  /** The connection will parse nothing more: withdraw a queued budget request, give back a payload's bytes not yet received. */
  private stopWaitingForBudget(): void {
    this.cancelBudgetWait?.();
    this.cancelBudgetWait = undefined;
    this.pendingHeader = undefined;
    this.release(this.pendingHold);
    this.pendingHold = undefined;
  }

  /** Every request has settled: give back what replies never handed to the kernel (the socket died first). */
  private releaseAll(): void {
    this.stopWaitingForBudget();
    for (const h of [...this.holds]) this.release(h);
  }

  private onIdle(): void {
    if (this.state === 'done') return;
    // Waiting on the server (a slow export, the memory budget) is not the client being idle.
    if (this.inflight.size > 0 || this.state === 'awaitBudget') {
      this.idleTimer?.refresh();
      return;
    }
    this.abort(`no request for ${Math.round(this.o.idleTimeoutMs / 1000)} s after the handshake (idle timeout)`);
  }

  private enterTransmission(n: Negotiated): void {
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
    this.idleTimer = setTimeout(() => this.onIdle(), this.o.idleTimeoutMs);
    this.idleTimer.unref();
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

  private dispatch(h: RequestHeader, payload: readonly Buffer[] | undefined, hold: BudgetHold | undefined): void {
    const tx = this.tx!;
    if (h.type === CMD.DISC) {
      this.release(hold);
      this.discReceived = true;
      this.reason ??= 'client sent NBD_CMD_DISC';
      this.state = 'done';
      this.queue.clear();
      this.settleAll()
        .then(() => this.endGracefully())
        .catch((err: unknown) => this.log.error({ err }, 'nbd: internal error ending the connection'));
      return;
    }
    if (this.shutdownRequested || this.o.isShuttingDown()) {
      this.release(hold);
      this.replyError(h, ERRNO.ESHUTDOWN, 'server is shutting down', undefined);
      return;
    }
    const check = checkRequest(h, tx.ctx);
    if (!check.ok) {
      this.release(hold);
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
    // A READ's reply takes over its hold until the socket has handed the bytes to the kernel.
    let replyOwnsHold = false;
    const run = async (): Promise<void> => {
      if (waitFor.length > 0) await Promise.all(waitFor);
      replyOwnsHold = await this.execute(h, start, payload, hold);
    };
    rec.settled = run()
      .catch((err: unknown) => {
        this.log.error({ err }, 'nbd: internal error handling request');
      })
      .finally(() => {
        if (!replyOwnsHold) this.release(hold);
        this.idleTimer?.refresh();
        this.inflight.delete(rec);
        this.inflightBytes -= bytes;
        if (this.shutdownRequested && this.inflight.size === 0) this.endGracefully();
        if (!this.socketClosed) this.pump();
      });
  }

  /** Runs one request and queues its reply; true when the reply took over `hold` (a READ's data). */
  private async execute(h: RequestHeader, offset: number, payload: readonly Buffer[] | undefined, hold: BudgetHold | undefined): Promise<boolean> {
    const { negotiated } = this.tx!;
    const exp = negotiated.export;
    const fua = (h.flags & CMD_FLAG.FUA) !== 0;
    try {
      switch (h.type) {
        case CMD.READ: {
          const pieces = h.length === 0 ? [] : await exp.read(offset, h.length);
          const checked = checkReadPieces(pieces, offset, h.length);
          if (typeof checked === 'string') throw new Error(`export returned a malformed read: ${checked}`);
          this.sendRead(h, offset, checked, () => this.release(hold));
          return true;
        }
        case CMD.WRITE: {
          if (h.length > 0) {
            const slices = payload!;
            if (exp.writev) await exp.writev(offset, slices, fua);
            else await exp.write(offset, slices.length === 1 ? slices[0] : Buffer.concat(slices, h.length), fua);
          }
          this.wrote(fua);
          this.replyOk(h);
          return false;
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
          return false;
        }
        case CMD.TRIM: {
          if (h.length > 0) await exp.trim(offset, h.length, fua);
          this.wrote(fua);
          this.replyOk(h);
          return false;
        }
        case CMD.FLUSH: {
          const gen = this.writeGen;
          await exp.flush();
          this.flushedGen = Math.max(this.flushedGen, gen);
          this.replyOk(h);
          return false;
        }
        case CMD.CACHE: {
          if (h.length > 0) await exp.cache(offset, h.length);
          this.replyOk(h);
          return false;
        }
        case CMD.BLOCK_STATUS: {
          const extents = await exp.blockStatus(offset, h.length);
          const reqOne = (h.flags & CMD_FLAG.REQ_ONE) !== 0;
          const wire = clampExtents(extents, offset, h.length, exp.size, reqOne);
          if (typeof wire === 'string') throw new Error(`export returned malformed extents: ${wire}`);
          this.send([encodeBlockStatusChunk(h.cookie, negotiated.allocationContextId!, wire, true)]);
          return false;
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
      return false;
    }
  }

  private wrote(fua: boolean): void {
    // FUA writes are durable on reply; everything else needs a later FLUSH for a clean end.
    if (!fua) this.writeGen++;
  }

  // ---------------------------------------------------------------------------------------
  // Output

  /** `written` runs once the last buffer has been handed to the kernel, or at once when it never will be. */
  private send(bufs: readonly Buffer[], written?: () => void): void {
    if (this.socketClosed || this.socket.destroyed || !this.socket.writable || bufs.length === 0) {
      written?.();
      return;
    }
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
    const last = bufs.length - 1;
    for (let i = 0; i < last; i++) this.socket.write(bufs[i]);
    if (written) this.socket.write(bufs[last], () => written());
    else this.socket.write(bufs[last]);
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

  private sendRead(h: RequestHeader, offset: number, pieces: readonly ReadPiece[], written: () => void): void {
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
    this.send(out, written);
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
    this.stopWaitingForBudget();
    this.socket.destroy();
  }

  /** Let queued replies flush, then close; a peer that never closes its side is cut off later. */
  private endGracefully(): void {
    this.state = 'done';
    this.queue.clear();
    this.stopWaitingForBudget();
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
    clearTimeout(this.idleTimer);
    this.stopWaitingForBudget();
    void this.settleAll().then(() => {
      this.releaseAll();
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
    }).catch((err: unknown) => this.log.error({ err }, 'nbd: internal error after the connection closed'));
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
