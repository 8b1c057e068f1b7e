/**
 * Model-based test of captures: seeded random operation streams (see model.ts) run against real
 * captures of a real store, two captures at once sharing content, several "connections" each with
 * many requests in flight, few RAM slots so chunks are evicted (stored or spilled) and written again,
 * and gc running beside them. Each read is checked against the model as it stood when the read was
 * issued; after commit, the version must equal the model byte for byte, verify clean, and the store
 * must hold exactly the chunk files that committed versions name (superseded and aborted chunks gone).
 *
 * MODEL_SEED=n replays one seed; MODEL_SEEDS, MODEL_SEED_BASE and MODEL_OPS choose other or more work. A failure
 * prints its seed, the shortest failing prefix of the stream found, and that prefix's last operations.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { basename, join } from 'node:path';
import { ImageStore } from '../../src/imaging/image-store.js';
import type { Capture } from '../../src/imaging/capture.js';
import { nullLogger } from '../../src/lib/log.js';
import { prng } from '../lib/prng.js';
import { tempDir, readAll, chunkPaths } from './helpers.js';
import { applyToModel, describeOp, firstDifference, generate, payload, type Op, type Stream } from './model.js';

const CHUNK = 64 * 1024;
const SEEDS = Number(process.env.MODEL_SEEDS ?? 40);
const OPS = Number(process.env.MODEL_OPS ?? 1300);
const ONLY = process.env.MODEL_SEED === undefined ? null : Number(process.env.MODEL_SEED);

interface Knobs {
  readonly conns: number;
  readonly depth: number;
  readonly maxPartial: number;
  readonly maxPending: number;
}

function knobs(seed: number): Knobs {
  const rnd = prng(seed ^ 0x5a5a5a5a);
  return { conns: 1 + Math.floor(rnd() * 4), depth: 1 + Math.floor(rnd() * 16), maxPartial: 2 + Math.floor(rnd() * 6), maxPending: 1 + Math.floor(rnd() * 4) };
}


function gather(pieces: { kind: string; offset: number; data?: Buffer; length?: number }[], offset: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (const p of pieces) if (p.kind === 'data' && p.data) p.data.copy(out, p.offset - offset);
  return out;
}

/**
 * Issues `ops` in order over `k.conns` connections, each with up to `k.depth` requests in flight
 * (a full connection waits for its oldest). The issue order is fixed by the list, whatever the timing.
 */
async function drive(cap: Capture, ops: readonly Op[], model: Buffer, k: Knobs, seed: number, problems: string[]): Promise<void> {
  const rnd = prng(seed ^ 0x1234567);
  const queues: Promise<void>[][] = Array.from({ length: k.conns }, () => []);
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i];
    const q = queues[Math.floor(rnd() * k.conns)];
    if (q.length >= k.depth) await q.shift();
    let p: Promise<void>;
    const fail = (e: unknown): void => {
      problems.push(`op ${i} (${describeOp(op)}) failed: ${(e as Error).message}`);
    };
    switch (op.kind) {
      case 'write':
        p = cap.write(op.offset, payload(op));
        break;
      case 'zero':
        p = cap.writeZeroes(op.offset, op.length);
        break;
      case 'trim':
        p = cap.trim(op.offset, op.length);
        break;
      case 'flush':
        p = cap.flush();
        break;
      case 'read': {
        const expected = Buffer.from(model.subarray(op.offset, op.offset + op.length));
        p = cap.read(op.offset, op.length).then((pieces) => {
          const got = gather(pieces, op.offset, op.length);
          const d = firstDifference(got, expected);
          if (d >= 0) problems.push(`op ${i} (${describeOp(op)}) read ${got[d]} at ${op.offset + d}, model has ${expected[d]}`);
        });
        break;
      }
    }
    applyToModel(model, op);
    q.push(p.catch(fail));
  }
  for (const q of queues) await Promise.all(q);
}


async function referenced(store: ImageStore): Promise<Set<string>> {
  const out = new Set<string>();
  for (const img of await store.list()) {
    for (const v of await store.versions(img.name)) {
      const r = await store.openVersion(img.name, v);
      for (let i = 0; i < r.chunkCount; i++) {
        const h = r.chunkHash(i);
        if (h !== null) out.add(h);
      }
      r.close();
    }
  }
  return out;
}

interface Outcome {
  readonly problems: string[];
}

/** One seed: captures A and B at once, gc beside them; A commits, B commits or aborts. */
async function runSeed(store: ImageStore, storeDir: string, seed: number, count: number, tag: string): Promise<Outcome> {
  const problems: string[] = [];
  const streams: Stream[] = [generate(seed, count, CHUNK), generate(seed + 1_000_003, count, CHUNK)];
  const k = knobs(seed);
  const caps = streams.map((s, j) => store.beginCapture(`m${tag}-${seed}-${j}`, { size: s.size, source: `model seed ${seed}`, maxPartialChunks: k.maxPartial, maxPendingChunks: k.maxPending }));
  const models = streams.map((s) => Buffer.alloc(s.size));
  let running = true;
  const gcLoop = (async () => {
    while (running) {
      await store.gc().catch((e: unknown) => problems.push(`gc failed: ${(e as Error).message}`));
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  try {
    await Promise.all(caps.map((c, j) => drive(c, streams[j].ops, models[j], k, seed + j, problems)));
    const abortB = prng(seed)() < 0.4;
    const commits = [caps[0].commit(), abortB ? caps[1].abort('model: the client went away').then(() => null) : caps[1].commit()];
    const done = await Promise.allSettled(commits);
    done.forEach((d, j) => {
      if (d.status === 'rejected') problems.push(`capture ${j} commit failed: ${(d.reason as Error).message}`);
    });
    running = false;
    await gcLoop;
    for (let j = 0; j < 2; j++) {
      if (j === 1 && abortB) continue;
      const name = caps[j].name;
      if (!(await store.exists(name))) continue;
      const got = await readAll(store, name);
      const d = firstDifference(got, models[j]);
      if (d >= 0) problems.push(`capture ${j} committed ${got[d]} at ${d} (chunk ${Math.floor(d / CHUNK)}), model has ${models[j][d]}`);
      const v = await store.verify(name);
      if (!v.ok) problems.push(`capture ${j} verify: ${v.damaged.map((x) => `${x.offset}: ${x.reason}`).join('; ')}`);
    }
    const files = new Set((await chunkPaths(storeDir)).map((f) => basename(f)));
    const named = await referenced(store);
    const extra = [...files].filter((f) => !named.has(f));
    const missing = [...named].filter((f) => !files.has(f));
    if (extra.length > 0) problems.push(`${extra.length} chunk file(s) no committed version names (superseded or aborted chunks left behind)`);
    if (missing.length > 0) problems.push(`${missing.length} chunk file(s) named by committed versions are missing`);
  } finally {
    running = false;
    await gcLoop;
    for (const c of caps) await c.abort('model test cleanup');
  }
  return { problems };
}

describe('captures against a model (seeded random operation streams)', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  const storeDir = (): string => join(dir, 'store');
  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('model'));
    store = await ImageStore.open(storeDir(), { logger: nullLogger(), chunkSize: CHUNK, cacheBytes: 2 * 1024 * 1024, keepVersions: 1000 });
  });
  afterAll(async () => {
    await store.close();
    await cleanup();
  });

  it(`${ONLY === null ? `${SEEDS} seeds` : `seed ${ONLY}`} × 2 captures × ${OPS} operations equal the model after commit, with no chunk file left over`, async () => {
    const base = Number(process.env.MODEL_SEED_BASE ?? 1000);
    const seeds = ONLY === null ? Array.from({ length: SEEDS }, (_, i) => base + i * 7919) : [ONLY];
    let total = 0;
    for (const seed of seeds) {
      const { problems } = await runSeed(store, storeDir(), seed, OPS, 'r');
      total += 2 * OPS;
      if (problems.length === 0) continue;
      // Shrink: the shortest prefix that still fails, found by bisection on fresh captures.
      let lo = 1;
      let hi = OPS;
      let shortest = problems;
      while (lo < hi) {
        const mid = Math.floor((lo + hi) / 2);
        const again = await runSeed(store, storeDir(), seed, mid, `s${mid}`);
        if (again.problems.length > 0) {
          hi = mid;
          shortest = again.problems;
        } else lo = mid + 1;
      }
      const tails = [seed, seed + 1_000_003].map((s, j) => {
        const ops = generate(s, hi, CHUNK).ops.slice(-20).map((op, i) => `  ${hi - Math.min(20, hi) + i}: ${describeOp(op)}`);
        return `last operations of capture ${j}'s stream:\n${ops.join('\n')}`;
      });
      throw new Error(`model test failed: MODEL_SEED=${seed} (knobs ${JSON.stringify(knobs(seed))}); fails with the first ${hi} operations:\n${shortest.slice(0, 10).join('\n')}\n${tails.join('\n')}`);
    }
    expect(total).toBe(seeds.length * 2 * OPS);
  });
});
