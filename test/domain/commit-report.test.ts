/**
 * A capture task reports what the store did. When the client says "done" and the commit is
 * still running once the server's wait runs out, the task must not fail while the version
 * it wrote becomes current a moment later: the task waits for the commit it cannot stop.
 * The commit is held at its start by a gate in front of the store's real commit, so "still
 * running when the wait runs out" is a fact of the test, not a race.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { forgetDatabase, openDatabase } from '../../src/domain/database.js';
import { EventLog } from '../../src/domain/events.js';
import { HostService } from '../../src/domain/hosts.js';
import { TaskService } from '../../src/domain/tasks.js';
import { NbdGrants } from '../../src/transport/grants.js';
import { StoreExportSource } from '../../src/transport/store-exports.js';
import { TransferService } from '../../src/domain/transfers.js';
import { ImageStore } from '../../src/imaging/image-store.js';
import type { Capture } from '../../src/imaging/capture.js';
import { NbdServer } from '../../src/nbd/server.js';
import { nullLogger } from '../../src/lib/log.js';
import { run } from '../lib/run.js';
import { rawGo, readSimpleReply, request } from '../nbd/helpers.js';
import { CMD } from '../../src/nbd/protocol.js';

const MiB = 1024 * 1024;
const MAC = '52:54:00:c0:ff:ee';
let dir: string;
let store: ImageStore;
let nbd: NbdServer;
let grants: NbdGrants;

interface Gate {
  readonly reached: Promise<void>;
  open(): void;
}

/** The store, except that every capture's commit waits for the gate before it runs. */
function gatedStore(real: ImageStore, gate: { reached: () => void; opened: Promise<void> }): ImageStore {
  return new Proxy(real, {
    get(target, prop) {
      if (prop === 'beginCapture') {
        return (...args: Parameters<ImageStore['beginCapture']>): Capture => {
          const cap = target.beginCapture(...args);
          return new Proxy(cap, {
            get(c, p) {
              if (p === 'commit') {
                return async () => {
                  gate.reached();
                  await gate.opened;
                  return c.commit();
                };
              }
              const v: unknown = Reflect.get(c, p, c);
              return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(c) : v;
            },
          });
        };
      }
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

function makeGate(): Gate & { reachedNow: () => void; opened: Promise<void> } {
  let reachedNow!: () => void;
  let open!: () => void;
  const reached = new Promise<void>((r) => (reachedNow = r));
  const opened = new Promise<void>((r) => (open = r));
  return { reached, reachedNow, opened, open };
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-commit-report-'));
  store = await ImageStore.open(path.join(dir, 'images'), { logger: nullLogger(), workers: 1 });
  grants = new NbdGrants(nullLogger());
  nbd = new NbdServer({ resolver: grants, logger: nullLogger() });
});
afterEach(async () => {
  await nbd.close();
  await grants.closeAll('test over');
  await store.close();
  forgetDatabase(dir);
  await rm(dir, { recursive: true, force: true });
});

describe('capture task outcome', () => {
  it('reports a version that committed after the wait ran out as committed, not failed', async () => {
    const db = await openDatabase(dir);
    const events = new EventLog(db, nullLogger());
    const hosts = new HostService(db, events);
    const tasks = new TaskService(db, events);
    const gate = makeGate();
    const source = new StoreExportSource(gatedStore(store, { reached: gate.reachedNow, opened: gate.opened }), nullLogger(), 0);
    const transfers = new TransferService(source, grants, tasks, hosts, nullLogger(), 50);
    const { port } = await nbd.listen(0, '127.0.0.1');

    const size = 4 * MiB;
    await hosts.add(MAC);
    const task = await tasks.create({ kind: 'capture', mac: MAC, image: 'office' });
    await tasks.beginBoot(task, '127.0.0.1');
    const url = await transfers.start(task, { name: 'sda', size, logicalSectorSize: 512, serial: 'S1' }, '127.0.0.1', '127.0.0.1', port);
    const disk = Buffer.alloc(size, 0x3c);
    await writeFile(path.join(dir, 'disk.raw'), disk);
    const copy = await run('nbdcopy', ['--flush', path.join(dir, 'disk.raw'), url]);
    expect(copy.code, copy.stderr).toBe(0);
    await gate.reached; // the client disconnected cleanly; the commit has begun and is held

    // The wait (50 ms) runs out while the commit is held; the gate opens only once the server
    // has given up waiting and closes the task's export.
    const revokeTask = grants.revokeTask.bind(grants);
    vi.spyOn(grants, 'revokeTask').mockImplementation(async (id, reason) => {
      gate.open();
      return revokeTask(id, reason);
    });
    await transfers.finish(task, true, 'ok', null);

    expect(task.state, task.reason ?? '').toBe('done');
    expect(task.result?.version).toBe(1);
    const latest = (await store.list()).find((i) => i.name === 'office');
    expect(latest?.latestVersion).toBe(1);
    expect(task.result?.digest).toBe((await store.show('office')).versions.at(-1)?.digest);
  });

  it('fails the task and commits nothing when the client is still connected once the wait runs out', async () => {
    const db = await openDatabase(dir);
    const events = new EventLog(db, nullLogger());
    const hosts = new HostService(db, events);
    const tasks = new TaskService(db, events);
    const transfers = new TransferService(new StoreExportSource(store, nullLogger(), 0), grants, tasks, hosts, nullLogger(), 50);
    const { port } = await nbd.listen(0, '127.0.0.1');
    await hosts.add(MAC);
    const task = await tasks.create({ kind: 'capture', mac: MAC, image: 'office' });
    await tasks.beginBoot(task, '127.0.0.1');
    const url = await transfers.start(task, { name: 'sda', size: 2 * MiB, logicalSectorSize: 512, serial: 'S1' }, '127.0.0.1', '127.0.0.1', port);
    // A client that wrote (and had it acknowledged) but never disconnected.
    const { c } = await rawGo(port, url.split('/').pop() as string);
    c.write(Buffer.concat([request(CMD.WRITE, 1n, 0n, MiB), Buffer.alloc(MiB, 0x5a)]));
    expect((await readSimpleReply(c)).errno).toBe(0);

    await transfers.finish(task, true, 'ok', null);
    c.socket.destroy();
    expect(task.state).toBe('failed');
    expect(task.reason).toBe('the capture did not commit: the client never flushed and disconnected cleanly');
    expect((await store.list()).find((i) => i.name === 'office')).toBeUndefined();
  });
});
