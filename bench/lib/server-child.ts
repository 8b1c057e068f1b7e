/**
 * Our NBD server as the appliance runs it: one node process holding the image store (with its codec
 * worker pool), NbdGrants as the resolver and StoreExportSource opening exports, wired as in
 * src/serve/runtime.ts. The bench drives it over the IPC channel, so the bench's own work
 * (spawning nbdcopy, sampling /proc) never shares this process's event loop or its RSS.
 */
import { nullLogger } from '../../src/lib/log.js';
import { ImageStore } from '../../src/imaging/image-store.js';
import { importFile } from '../../src/imaging/image-import.js';
import { NbdServer } from '../../src/nbd/server.js';
import { NbdGrants } from '../../src/transport/grants.js';
import { StoreExportSource } from '../../src/transport/store-exports.js';
import { TransferMeter } from '../../src/transport/transfer-meter.js';
import type { CommittedVersion, ReadyMessage, ServerReply, ServerRequest } from './server-protocol.js';

const logger = nullLogger();
const grants = new NbdGrants(logger);
const stores = new Map<string, { store: ImageStore; source: StoreExportSource }>();
const captures = new Map<string, Promise<CommittedVersion>>();
const TTL_SECONDS = 3600;

function storeAt(dir: string): { store: ImageStore; source: StoreExportSource } {
  const s = stores.get(dir);
  if (!s) throw new Error(`store ${dir} is not open in the server process`);
  return s;
}

async function handle(req: ServerRequest): Promise<ServerReply> {
  switch (req.op) {
    case 'openStore': {
      const store = await ImageStore.open(req.dir, { logger });
      stores.set(req.dir, { store, source: new StoreExportSource(store, logger) });
      return { id: req.id, ok: true };
    }
    case 'closeStore': {
      const s = storeAt(req.dir);
      stores.delete(req.dir);
      await s.store.close();
      return { id: req.id, ok: true };
    }
    case 'import': {
      const t0 = performance.now();
      const v = await importFile(storeAt(req.dir).store, req.image, req.path);
      return { id: req.id, ok: true, ms: performance.now() - t0, digest: v.digest };
    }
    case 'deploy': {
      const { source } = storeAt(req.dir);
      const g = await grants.grant({ kind: 'deploy', image: req.image, ttlSeconds: TTL_SECONDS, meter: new TransferMeter('deploy'), open: () => source.openDeploy(req.image) });
      return { id: req.id, ok: true, exportName: g.name };
    }
    case 'capture': {
      const { source } = storeAt(req.dir);
      let settle!: { resolve(v: CommittedVersion): void; reject(e: Error): void };
      const done = new Promise<CommittedVersion>((resolve, reject) => (settle = { resolve, reject }));
      done.catch(() => undefined);
      const g = await grants.grant({
        kind: 'capture',
        image: req.image,
        ttlSeconds: TTL_SECONDS,
        meter: new TransferMeter('capture'),
        open: () =>
          source.openCapture(req.image, req.size, 512, 'bench', {
            onCommitted: (v) => settle.resolve({ version: v.version, digest: v.digest, dataBytes: v.dataBytes, committedAt: performance.timeOrigin + performance.now() }),
            onFailed: (reason) => settle.reject(new Error(`capture failed: ${reason}`)),
          }),
      });
      captures.set(g.name, done);
      return { id: req.id, ok: true, exportName: g.name };
    }
    case 'awaitCapture': {
      const done = captures.get(req.exportName);
      if (!done) throw new Error(`no capture export ${req.exportName}`);
      const committed = await done;
      captures.delete(req.exportName);
      return { id: req.id, ok: true, committed };
    }
    case 'revoke': {
      await grants.revoke(req.exportName, 'bench finished with it');
      return { id: req.id, ok: true };
    }
    case 'shutdown': {
      await server.close();
      await grants.closeAll('bench finished');
      for (const s of stores.values()) await s.store.close();
      stores.clear();
      return { id: req.id, ok: true };
    }
  }
}

if (!process.send) throw new Error('server-child must be started with an IPC channel (child_process.fork)');
const server = new NbdServer({ resolver: grants, logger });
const { port } = await server.listen(0, '127.0.0.1');
process.on('message', (req: ServerRequest) => {
  handle(req).then(
    (reply) => {
      process.send!(reply);
      if (req.op === 'shutdown') process.disconnect();
    },
    (err: unknown) => process.send!({ id: req.id, ok: false, error: (err as Error).message } satisfies ServerReply),
  );
});
process.send({ ready: true, port } satisfies ReadyMessage);
