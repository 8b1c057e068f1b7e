/**
 * One hashing thread of the agent: names chunks (sha256 through the store's own chunk-format module,
 * so the agent and the server can never disagree on a name) and hands each buffer back.
 */
import { parentPort } from 'node:worker_threads';
import { chunkName } from '../imaging/chunk-format.js';
import type { HashRequest, HashResponse } from './hash-pool.js';

const port = parentPort;
if (!port) throw new Error('hash-worker.ts runs only as a worker thread (HashPool starts it)');

port.on('message', (req: HashRequest) => {
  const view = new Uint8Array(req.buffer, 0, req.length);
  const res: HashResponse = { id: req.id, hash: chunkName(view), buffer: req.buffer };
  port.postMessage(res, [req.buffer]);
});
