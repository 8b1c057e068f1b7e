/** Messages between the codec pool (main thread) and codec workers. Buffers travel as transferred ArrayBuffers. */
import type { ChunkCheck } from './chunk-format.js';

/**
 * Read the chunk file at `path`, decode it and check it as `check` says (see ChunkCheck). The worker
 * does the file I/O so the main thread makes no fs calls and never holds the compressed bytes.
 */
export interface LoadRequest {
  readonly id: number;
  readonly op: 'load';
  readonly path: string;
  /** Hex sha256 the decoded bytes must have; a mismatch is reported, never the bytes. */
  readonly expectHash: string;
  readonly check: ChunkCheck;
}

/**
 * Hash a chunk, and unless an intact chunk file of that name exists (or `force`), compress it and write
 * it durably to a temp file (the store renames it under `chunksDir` when it adopts it). The worker does the file I/O so the main thread
 * never touches the chunk's bytes again; `data` comes back in the answer for reuse.
 */
export interface StoreRequest {
  readonly id: number;
  readonly op: 'store';
  readonly data: ArrayBuffer;
  /** Bytes of `data` that are the chunk (the buffer may be larger). */
  readonly length: number;
  readonly level: number;
  readonly chunksDir: string;
  readonly tmpDir: string;
  /** Write even if a file of that name exists (it vanished under gc since the worker looked). */
  readonly force: boolean;
}

/**
 * Check a chunk file a client uploaded, exactly as sent, and unless an intact file of that name
 * exists (or `force`), write those bytes durably to a temp file for the store to adopt. Accepted only
 * if its header parses, it is of the format this code writes (CHUNK_FORMAT: one zstd frame with its
 * content checksum), its decoded length is 1..`maxLength`, it decodes, and sha256 of the decoded bytes
 * is `expectHash`. Anything else is answered with kind 'rejected' and nothing is written.
 */
export interface PutRequest {
  readonly id: number;
  readonly op: 'put';
  /** The file's bytes (a copy: the caller's buffer is not taken). */
  readonly file: ArrayBuffer;
  readonly expectHash: string;
  readonly maxLength: number;
  readonly chunksDir: string;
  readonly tmpDir: string;
  /** Write even if a file of that name exists (it vanished under gc since the worker looked). */
  readonly force: boolean;
}

export type CodecRequest = LoadRequest | StoreRequest | PutRequest;

export interface LoadResult {
  readonly id: number;
  readonly ok: true;
  readonly op: 'load';
  /** The verified bytes are data[offset, offset + length). */
  readonly data: ArrayBuffer;
  readonly offset: number;
  readonly length: number;
}

export interface StoreResult {
  readonly id: number;
  readonly ok: true;
  readonly op: 'store';
  /** Every byte was zero: nothing was hashed or written (the chunk is a hole). */
  readonly zero: boolean;
  /** Hex sha256 of the chunk; '' when zero. */
  readonly hash: string;
  /** Size of the chunk file on disk (existing or new); 0 when zero. */
  readonly stored: number;
  /** An intact file already held these bytes, so nothing was written. */
  readonly existed: boolean;
  /** No file of that name existed before this store wrote one (false when a damaged file was replaced). */
  readonly fresh: boolean;
  /** The new chunk file, written and fsynced in the temp directory, for the store to rename into place; null when nothing was written. */
  readonly tmpPath: string | null;
  /** The request's buffer, handed back for reuse. */
  readonly data: ArrayBuffer;
}

export interface PutResult {
  readonly id: number;
  readonly ok: true;
  readonly op: 'put';
  /** The decoded length of the accepted chunk. */
  readonly length: number;
  /** Size of the chunk file on disk (existing or new). */
  readonly stored: number;
  /** An intact file of this format already held these bytes, so nothing was written. */
  readonly existed: boolean;
  /** No file of that name existed before this put wrote one (false when a damaged or older-format file is replaced). */
  readonly fresh: boolean;
  /** The uploaded file, written and fsynced in the temp directory; null when nothing was written. */
  readonly tmpPath: string | null;
}

export interface CodecFailure {
  readonly id: number;
  readonly ok: false;
  /**
   * 'corrupt' = the chunk file is missing, or its bytes do not decode or do not match their checksum or name;
   * 'too-new' = the file is of a chunk format newer than this code reads;
   * 'rejected' = an uploaded chunk file failed a check (the message says which).
   */
  readonly kind: 'corrupt' | 'too-new' | 'rejected' | 'internal';
  readonly message: string;
  /** A store request's buffer, handed back for reuse, if the worker still has it. */
  readonly data?: ArrayBuffer;
}

export type CodecResponse = LoadResult | StoreResult | PutResult | CodecFailure;
