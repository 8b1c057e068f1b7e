import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { TftpServer, type TransferInfo } from '../../../src/pxe/tftp/server.js';
import { encodeAck, encodeData, encodeError, encodeRequest } from '../../../src/pxe/tftp/codec.js';
import { nullLogger } from '../../../src/lib/log.js';
import { bindSocket, fetchFile, prng, run } from './helpers.js';

describe('live TFTP server under hostile traffic', () => {
  let root: string;
  let server: TftpServer;
  let port: number;
  const ended: TransferInfo[] = [];

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'nctftp-fuzz-'));
    await copyFile('/usr/lib/ipxe/undionly.kpxe', path.join(root, 'undionly.kpxe'));
    server = new TftpServer({ root, port: 0, bindAddress: '127.0.0.1', logger: nullLogger(), timeoutMs: 30, retries: 1, onTransfer: (i) => ended.push(i) });
    await server.start();
    port = server.address().port;
  });

  afterAll(async () => {
    await server?.stop();
    await rm(root, { recursive: true, force: true });
  });

  it('takes 5000 random and mutated datagrams, then still serves a real client', async () => {
    const rand = prng(0xbeef);
    const templates = [
      encodeRequest('RRQ', 'undionly.kpxe', 'octet', new Map([['blksize', '1468'], ['tsize', '0'], ['windowsize', '4']])),
      encodeRequest('RRQ', '../../etc/passwd', 'octet'),
      encodeRequest('WRQ', 'x', 'octet'),
      encodeAck(1),
      encodeData(1, Buffer.alloc(10)),
      encodeError(0, 'x'),
    ];
    const senders = await Promise.all(Array.from({ length: 8 }, () => bindSocket()));
    // Replies are drained so nothing backs up; a transfer port that answers gets stray packets too.
    const tids = new Set<number>();
    for (const s of senders) s.on('message', (_m, r) => r.port !== port && tids.add(r.port));
    for (let i = 0; i < 5000; i++) {
      let buf: Buffer;
      if (rand() < 0.3) {
        buf = Buffer.alloc(Math.floor(rand() * 600));
        for (let j = 0; j < buf.length; j++) buf[j] = Math.floor(rand() * 256);
      } else {
        buf = Buffer.from(templates[Math.floor(rand() * templates.length)]);
        for (let f = 0; f < 3 && buf.length > 0; f++) if (rand() < 0.5) buf[Math.floor(rand() * buf.length)] = Math.floor(rand() * 256);
      }
      const s = senders[i % senders.length];
      const target = tids.size > 0 && rand() < 0.2 ? [...tids][Math.floor(rand() * tids.size)] : port;
      s.send(buf, target, '127.0.0.1');
      if (i % 200 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 500));
    for (const s of senders) s.close();

    const dest = path.join(root, 'out.kpxe');
    const r = await run('tftp', ['127.0.0.1', String(port), '-m', 'binary', '-c', 'get', 'undionly.kpxe', dest]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect((await readFile(dest)).equals(await readFile(path.join(root, 'undionly.kpxe')))).toBe(true);
    const again = await fetchFile({ port, file: 'undionly.kpxe', options: { blksize: '1468' } });
    expect(again.error).toBeUndefined();
    expect(tids.size).toBeGreaterThan(0); // the fuzz really did open transfers
    expect(ended.some((t) => t.status === 'timeout' || t.status === 'client-abort')).toBe(true);
  });
});
