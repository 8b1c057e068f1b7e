/**
 * One hashing thread of the agent: names chunks (sha256 through the store's own chunk-format module,
 * so the agent and the server can never disagree on a name), or tells a chunk of zeros, and hands
 * each buffer back.
 */
import { parentPort } from 'node:worker_threads';
import { chunkName } from '../imaging/chunk-format.js';
import type { HashRequest, HashResponse } from './hash-pool.js';

const port = parentPort;
if (!port) throw new Error('hash-worker.ts runs only as a worker thread (HashPool starts it)');

/** Compared against for the zero check; grown to the longest chunk asked about. */
let zeros = Buffer.alloc(0);

function allZero(view: Buffer): boolean {
  if (zeros.length < view.length) zeros = Buffer.alloc(view.length);
  return view.equals(zeros.subarray(0, view.length));
}

port.on('message', (req: HashRequest) => {
  const view = Buffer.from(req.buffer, 0, req.length);
  const res: HashResponse = { id: req.id, hash: req.zeroIsNull && allZero(view) ? null : chunkName(view), buffer: req.buffer };
  port.postMessage(res, [req.buffer]);
});
