/**
 * After a crash mid-capture (temp files left in the store), the server removes the chunk files no
 * version names on its own, beside serving, instead of keeping the disk full until someone runs gc.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile, mkdir, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { loopbackConfig } from '../lib/appliance-config.js';
import { startAppliance, type RunningAppliance } from '../../src/serve/runtime.js';
import { ImageStore } from '../../src/imaging/image-store.js';
import { importStream } from '../../src/imaging/image-import.js';
import { readBytes } from '../../src/imaging/image-export.js';
import { nullLogger } from '../../src/lib/log.js';

let dir: string;
let app: RunningAppliance | null = null;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-crash-recovery-'));
});

afterAll(async () => {
  await app?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('start after a crash', () => {
  it('removes orphan chunk files left by a killed capture, and keeps every committed version whole', async () => {
    const config = loopbackConfig(dir);
    const data = randomBytes(3 * 1024 * 1024);
    const store = await ImageStore.open(config.imagesDir, { logger: nullLogger() });
    await importStream(store, 'kept', Readable.from([data]), data.length, { source: 't' });
    await store.close();
    // What a capture killed mid-way leaves: a chunk file no manifest names, and a temp file.
    const orphan = 'ab'.repeat(32);
    const orphanPath = path.join(config.imagesDir, 'chunks', 'ab', orphan);
    await mkdir(path.dirname(orphanPath), { recursive: true });
    await writeFile(orphanPath, randomBytes(5000));
    await writeFile(path.join(config.imagesDir, 'tmp', 'spill-1234-abcdef'), randomBytes(100));

    app = await startAppliance(config, nullLogger());
    expect(app.core.store.crashed).toBe(true);
    await expect.poll(() => access(orphanPath).then(() => false, () => true), { timeout: 5000, interval: 50 }).toBe(true);
    expect((await app.core.store.verify('kept')).ok).toBe(true);
    const r = await app.core.store.openVersion('kept');
    try {
      expect((await readBytes(r, 0, r.size)).equals(data)).toBe(true);
    } finally {
      r.close();
    }
  });
});
