/**
 * Worker thread: hashes and compresses chunks for capture, decompresses and verifies them
 * for reads. zstd-napi and sha256 are synchronous, so they run here, off the event loop.
 */
import { parentPort } from 'node:worker_threads';
import { createHash } from 'node:crypto';
import { Compressor, Decompressor } from 'zstd-napi';
import { CHUNK_HEADER_SIZE, ChunkCodec, ChunkFormatError, decodeChunkHeader, encodeChunkHeader } from './chunk-format.js';
import type { CodecRequest, CodecResponse } from './codec-protocol.js';

const compressors = new Map<number, Compressor>();
const decompressor = new Decompressor();

function compressorFor(level: number): Compressor {
  let c = compressors.get(level);
  if (!c) {
    c = new Compressor();
    c.setParameters({ compressionLevel: level });
    compressors.set(level, c);
  }
  return c;
}

function toArrayBuffer(b: Buffer): ArrayBuffer {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer) return b.buffer;
  const copy = new ArrayBuffer(b.byteLength);
  new Uint8Array(copy).set(b);
  return copy;
}

function handle(req: CodecRequest): { res: CodecResponse; transfer: ArrayBuffer[] } {
  if (req.op === 'encode') {
    const data = Buffer.from(req.data);
    const hash = createHash('sha256').update(data).digest('hex');
    const compressed = compressorFor(req.level).compress(data);
    let file: Buffer;
    if (compressed.length + CHUNK_HEADER_SIZE < data.length) {
      file = Buffer.allocUnsafeSlow(CHUNK_HEADER_SIZE + compressed.length);
      encodeChunkHeader({ codec: ChunkCodec.Zstd, uncompressedLength: data.length, payloadLength: compressed.length }, file);
      compressed.copy(file, CHUNK_HEADER_SIZE);
    } else {
      file = Buffer.allocUnsafeSlow(CHUNK_HEADER_SIZE + data.length);
      encodeChunkHeader({ codec: ChunkCodec.Raw, uncompressedLength: data.length, payloadLength: data.length }, file);
      data.copy(file, CHUNK_HEADER_SIZE);
    }
    const ab = toArrayBuffer(file);
    return { res: { id: req.id, ok: true, op: 'encode', hash, file: ab }, transfer: [ab] };
  }
  const file = Buffer.from(req.file);
  let data: Buffer;
  try {
    const h = decodeChunkHeader(file);
    const payload = file.subarray(CHUNK_HEADER_SIZE);
    if (h.codec === ChunkCodec.Raw) {
      data = Buffer.allocUnsafeSlow(payload.length);
      payload.copy(data);
    } else {
      const d = decompressor.decompress(payload);
      if (d.length !== h.uncompressedLength) throw new ChunkFormatError(`chunk decompressed to ${d.length} bytes, header says ${h.uncompressedLength}`);
      data = d;
    }
  } catch (e) {
    return { res: { id: req.id, ok: false, kind: 'corrupt', message: (e as Error).message }, transfer: [] };
  }
  const actual = createHash('sha256').update(data).digest('hex');
  if (actual !== req.expectHash) {
    return { res: { id: req.id, ok: false, kind: 'corrupt', message: `content hash ${actual} does not match chunk name` }, transfer: [] };
  }
  const ab = toArrayBuffer(data);
  return { res: { id: req.id, ok: true, op: 'decode', data: ab }, transfer: [ab] };
}

const port = parentPort;
if (!port) throw new Error('codec-worker must run as a worker thread');
port.on('message', (req: CodecRequest) => {
  try {
    const { res, transfer } = handle(req);
    port.postMessage(res, transfer);
  } catch (e) {
    const res: CodecResponse = { id: req.id, ok: false, kind: 'internal', message: (e as Error).message };
    port.postMessage(res);
  }
});
