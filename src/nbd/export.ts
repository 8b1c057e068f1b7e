/**
 * The one interface every NBD export implements, whatever stores its bytes.
 *
 * The server speaks the protocol and validates every request (bounds, alignment,
 * read-only: nbd/connection.ts with the checks in nbd/validate.ts) before it reaches
 * an export, so an export only ever sees in-range requests. Like nbdkit's plugin interface, an export knows
 * nothing about the wire; unlike it, lifecycle hooks let a capture commit only
 * when every connection ended cleanly.
 */

/** READ replies are made of pieces (data, or a run the client may treat as zeroes); BLOCK_STATUS of extents. */
import type { Extent, ReadPiece } from '../lib/pieces.js';

export type { Extent, ReadPiece };

export interface ExportCapabilities {
  readonly readOnly: boolean;
  /** True only when every connection sees every other's completed writes (spec rule for CAN_MULTI_CONN). */
  readonly multiConn: boolean;
  readonly trim: boolean;
  readonly writeZeroes: boolean;
  readonly fastZero: boolean;
  readonly cache: boolean;
  readonly blockStatus: boolean;
}

export interface BlockSizes {
  readonly minimum: number;
  readonly preferred: number;
  readonly maximum: number;
}

/** Who is on the other end of a connection, for logs and access rules. */
export interface PeerInfo {
  readonly connectionId: number;
  readonly address: string;
  readonly port: number;
}

/**
 * How a connection ended. `clean`: DISC was received and every write on this connection was
 * flushed on this connection. `discReceived`: the client said goodbye; with multi-conn a client
 * may flush on one connection only (nbdcopy does), and an export that makes data durable itself
 * (a capture does at commit) needs only this. `wrote`: the connection issued at least one
 * write-class command (WRITE, WRITE_ZEROES or TRIM) that passed validation and reached the export,
 * so a probe that only looked (nbdinfo, a size check) can be told apart from a writer.
 */
export interface DetachInfo {
  readonly clean: boolean;
  readonly discReceived: boolean;
  readonly wrote: boolean;
  readonly reason: string;
}

/** Error an export raises to make the server answer a request with a specific NBD errno. */
export class ExportError extends Error {
  constructor(
    readonly errno: 'EIO' | 'EPERM' | 'ENOSPC' | 'EINVAL' | 'ENOTSUP' | 'ESHUTDOWN' | 'EOVERFLOW' | 'ENOMEM',
    message: string,
  ) {
    super(message);
    this.name = 'ExportError';
  }
}

export interface WriteZeroesOptions {
  readonly fua: boolean;
  /** NBD_CMD_FLAG_FAST_ZERO: fail with ENOTSUP instead of writing zeroes slowly. */
  readonly fastZero: boolean;
  /** Absence of NBD_CMD_FLAG_NO_HOLE: the export may punch a hole. */
  readonly mayTrim: boolean;
}

export interface NbdExport {
  /** Human-readable description for NBD_INFO_DESCRIPTION and logs (never the secret token). */
  readonly description: string;
  readonly size: number;
  readonly capabilities: ExportCapabilities;
  readonly blockSizes: BlockSizes;

  /** Called when a connection selects this export; throw ExportError to refuse it. */
  attach(peer: PeerInfo): void;
  /** Called once per attached connection when it ends, cleanly or not. */
  detach(peer: PeerInfo, info: DetachInfo): void;

  read(offset: number, length: number): Promise<ReadPiece[]>;
  write(offset: number, data: Buffer, fua: boolean): Promise<void>;
  /**
   * Optional vectored write: `slices` are the payload in order (total length > 0), views of socket
   * buffers handed over without assembling them. The export must copy what it keeps and hold no
   * slice after the returned promise settles. Without it the server concatenates and calls write().
   */
  writev?(offset: number, slices: readonly Buffer[], fua: boolean): Promise<void>;
  writeZeroes(offset: number, length: number, options: WriteZeroesOptions): Promise<void>;
  trim(offset: number, length: number, fua: boolean): Promise<void>;
  flush(): Promise<void>;
  cache(offset: number, length: number): Promise<void>;
  /** Extents covering at least the first byte of [offset, offset+length), in order, not past the end. */
  blockStatus(offset: number, length: number): Promise<Extent[]>;
}

/**
 * Maps an export name (which carries an unguessable token) to an export.
 * Returning an ExportRefusal refuses the client with NBD_REP_ERR_UNKNOWN ('unknown') or
 * NBD_REP_ERR_POLICY ('policy'), its reason as the message, and a log line.
 */
export interface ExportResolver {
  resolve(name: string, peer: PeerInfo): NbdExport | ExportRefusal;
}

export interface ExportRefusal {
  readonly refused: 'unknown' | 'policy';
  readonly reason: string;
}
