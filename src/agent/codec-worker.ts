/**
 * One compression thread of the agent: chunk files through the store's own chunk-format module, so
 * the agent writes exactly what the server checks and reads exactly what the server stores.
 */
import { parentPort } from 'node:worker_threads';
import { ChunkCodecContext, maxChunkFileSize, CHUNK_HEADER_SIZE, chunkName } from '../imaging/chunk-format.js';
import type { CodecRequest, CodecResponse } from './codec-pool.js';

const port = parentPort;
if (!port) throw new Error('codec-worker.ts runs only as a worker thread (CodecPool starts it)');

const codec = new ChunkCodecContext();
let scratch = Buffer.alloc(0);

/** Compared against for the zero check of 'name'; grown to the longest chunk asked about. */
let zeros = Buffer.alloc(0);

function allZero(view: Buffer): boolean {
  if (zeros.length < view.length) zeros = Buffer.alloc(view.length);
  return view.equals(zeros.subarray(0, view.length));
}

function handle(req: Exclude<CodecRequest, { op: 'name' }>): Uint8Array {
  if (req.op === 'encode') {
    const data = Buffer.from(req.data.buffer, req.data.byteOffset, req.data.byteLength);
    const need = maxChunkFileSize(data.length) - CHUNK_HEADER_SIZE;
    if (scratch.length < need) scratch = Buffer.allocUnsafeSlow(need);
    const [header, payload] = codec.encode(data, req.level, scratch);
    return Buffer.concat([header, payload]);
  }
  const file = Buffer.from(req.file.buffer, req.file.byteOffset, req.file.byteLength);
  return codec.decodeChecked(file, req.hash, 'full');
}

port.on('message', (req: CodecRequest) => {
  if (req.op === 'name') {
    const view = Buffer.from(req.buffer, 0, req.length);
    const named: CodecResponse = { id: req.id, ok: true, hash: req.zeroIsNull && allZero(view) ? null : chunkName(view), buffer: req.buffer };
    port.postMessage(named, [req.buffer]);
    return;
  }
  let res: CodecResponse;
  try {
    const bytes = handle(req);
    res = { id: req.id, ok: true, bytes };
  } catch (err) {
    res = { id: req.id, ok: false, error: (err as Error).message };
  }
  const transfer = res.ok && 'bytes' in res && res.bytes.byteLength === res.bytes.buffer.byteLength ? [res.bytes.buffer as ArrayBuffer] : [];
  port.postMessage(res, transfer);
});
