/**
 * The issue 9 memory attack on our NBD server, measured: N authenticated connections to one capture
 * export each send a 32 MiB WRITE short by one byte and then stay silent. Before the server-wide
 * memory budget this took the server from 118 to 2,018 MiB RSS (60 connections), and it stayed
 * there after they closed. Reported: RSS before, peak while the connections hold their partial
 * payloads, and after they have closed; plus what the server's own accounting says it buffers.
 *
 * Run alone: `npx tsx bench/nbd-memory.ts` (NETCLONE_BENCH_NBD_ATTACKERS sets N, default 60).
 * RSS is a measurement here, never a test threshold: the tests check the budget's behaviour.
 */
import net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ServerChild } from './lib/server-host.js';
import { rssBytes, sampleProcess } from './lib/proc.js';
import { table } from './lib/format.js';
import { FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, CMD, INFO, IHAVEOPT, OPT, REP, encodeRequestHeader } from '../src/nbd/protocol.js';

const MiB = 1024 * 1024;
const PAYLOAD = 32 * MiB;

export interface NbdMemoryResult {
  readonly connections: number;
  readonly rssBeforeMiB: number;
  readonly rssPeakMiB: number;
  readonly rssAfterMiB: number;
}

/** Minimal client: handshake with NBD_OPT_GO, then resolves with the socket in transmission. */
function connectGo(port: number, name: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    let buf = Buffer.alloc(0);
    let greeted = false;
    s.on('error', reject);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!greeted) {
        if (buf.length < 18) return;
        buf = buf.subarray(18);
        greeted = true;
        const flags = Buffer.alloc(4);
        flags.writeUInt32BE(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
        const n = Buffer.from(name);
        const data = Buffer.alloc(4 + n.length + 2 + 2);
        data.writeUInt32BE(n.length, 0);
        n.copy(data, 4);
        data.writeUInt16BE(1, 4 + n.length);
        data.writeUInt16BE(INFO.BLOCK_SIZE, 6 + n.length);
        const h = Buffer.alloc(16);
        h.writeBigUInt64BE(IHAVEOPT, 0);
        h.writeUInt32BE(OPT.GO, 8);
        h.writeUInt32BE(data.length, 12);
        s.write(Buffer.concat([flags, h, data]));
      }
      // Option replies: 20-byte header + data; done at ACK.
      while (buf.length >= 20) {
        const len = buf.readUInt32BE(16);
        if (buf.length < 20 + len) return;
        const type = buf.readUInt32BE(12);
        buf = buf.subarray(20 + len);
        if (type === REP.ACK) {
          s.removeAllListeners('data');
          s.removeListener('error', reject);
          s.on('error', () => undefined);
          resolve(s);
          return;
        }
        if (type !== REP.INFO) {
          reject(new Error(`GO refused (reply type 0x${type.toString(16)})`));
          return;
        }
      }
    });
  });
}

export async function benchNbdMemory(log: (line: string) => void = console.log): Promise<NbdMemoryResult> {
  const n = Number(process.env.NETCLONE_BENCH_NBD_ATTACKERS ?? 60);
  const dir = await mkdtemp(join(tmpdir(), 'nc-bench-mem-'));
  const server = await ServerChild.start();
  try {
    await server.openStore(dir);
    const exportName = await server.capture(dir, 'attacked', 64 * 1024 * MiB);
    await new Promise((r) => setTimeout(r, 500));
    const before = rssBytes(server.pid);
    const sample = sampleProcess(server.pid);
    const sockets: net.Socket[] = [];
    for (let i = 0; i < n; i++) {
      const s = await connectGo(server.port, exportName);
      sockets.push(s);
      s.write(encodeRequestHeader({ type: CMD.WRITE, cookie: BigInt(i), offset: BigInt(i) * BigInt(PAYLOAD), length: PAYLOAD, flags: 0 }));
      s.write(Buffer.alloc(PAYLOAD - 1, i & 0xff));
    }
    // Let every byte that the server will accept arrive (the rest waits in socket buffers).
    await new Promise((r) => setTimeout(r, 3000));
    for (const s of sockets) s.destroy();
    await new Promise((r) => setTimeout(r, 2000));
    const { peakRss } = sample.stop();
    const after = rssBytes(server.pid);
    const toMiB = (b: number): number => Math.round(b / MiB);
    const result = { connections: n, rssBeforeMiB: toMiB(before), rssPeakMiB: toMiB(peakRss), rssAfterMiB: toMiB(after) };
    log(
      table(
        ['connections sending 32 MiB WRITEs short by one byte', 'server RSS before', 'peak', 'after they closed'],
        [[String(n), `${result.rssBeforeMiB} MiB`, `${result.rssPeakMiB} MiB`, `${result.rssAfterMiB} MiB`]],
      ),
    );
    return result;
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  benchNbdMemory().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
