/** Messages between the codec pool (main thread) and codec workers. Buffers travel as transferred ArrayBuffers. */

export interface EncodeRequest {
  readonly id: number;
  readonly op: 'encode';
  readonly data: ArrayBuffer;
  readonly level: number;
}

export interface DecodeRequest {
  readonly id: number;
  readonly op: 'decode';
  readonly file: ArrayBuffer;
  /** Hex sha256 the decoded bytes must have; a mismatch is reported, never the bytes. */
  readonly expectHash: string;
}

export type CodecRequest = EncodeRequest | DecodeRequest;

export interface EncodeResult {
  readonly id: number;
  readonly ok: true;
  readonly op: 'encode';
  readonly hash: string;
  /** Header + payload, ready to be written as the chunk file. */
  readonly file: ArrayBuffer;
}

export interface DecodeResult {
  readonly id: number;
  readonly ok: true;
  readonly op: 'decode';
  readonly data: ArrayBuffer;
}

export interface CodecFailure {
  readonly id: number;
  readonly ok: false;
  /** 'corrupt' = the chunk's bytes do not decode or do not match their name. */
  readonly kind: 'corrupt' | 'internal';
  readonly message: string;
}

export type CodecResponse = EncodeResult | DecodeResult | CodecFailure;
