import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, mkdir, readFile, rm, symlink, writeFile, copyFile, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { TftpServer, type TransferInfo } from '../../../src/pxe/tftp/server.js';
import { ErrorCode, decodePacket, encodeAck, encodeRequest } from '../../../src/pxe/tftp/codec.js';
import { bindSocket, exchange, fetchFile, prng, run } from './helpers.js';
import { waitFor } from '../../lib/wait.js';

const LOADER = '/usr/lib/ipxe/undionly.kpxe';

interface LogLine {
  level: number;
  msg: string;
  file?: string;
  mac?: string;
}

const PC_MAC = '52:54:00:aa:bb:cc';

describe('TftpServer against real clients', () => {
  let root: string;
  let out: string;
  let server: TftpServer;
  let port: number;
  const transfers: TransferInfo[] = [];
  const logs: LogLine[] = [];
  let loader: Buffer;

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'nctftp-root-'));
    out = await mkdtemp(path.join(tmpdir(), 'nctftp-out-'));
    await copyFile(LOADER, path.join(root, 'undionly.kpxe'));
    loader = await readFile(LOADER);
    await mkdir(path.join(root, 'sub'));
    await writeFile(path.join(root, 'sub', 'exact.bin'), Buffer.alloc(1024, 7)); // exact multiple of 512
    await writeFile(path.join(root, 'empty.bin'), Buffer.alloc(0));
    await symlink('/etc/passwd', path.join(root, 'escape'));
    await symlink('/etc', path.join(root, 'etcdir'));
    await symlink('undionly.kpxe', path.join(root, 'alias.kpxe'));
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const line of chunk.toString().split('\n').filter(Boolean)) logs.push(JSON.parse(line) as LogLine);
        cb();
      },
    });
    server = new TftpServer({
      root,
      port: 0,
      bindAddress: '127.0.0.1',
      logger: pino({ level: 'debug' }, sink),
      timeoutMs: 100,
      retries: 4,
      onTransfer: (info) => transfers.push(info),
      macOf: (address) => (address === '127.0.0.1' ? PC_MAC : undefined),
    });
    await server.start();
    port = server.address().port;
  });

  afterAll(async () => {
    await server?.stop();
    await rm(root, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  });

  it('serves undionly.kpxe byte-exact to tftp-hpa', async () => {
    const dest = path.join(out, 'hpa.kpxe');
    const r = await run('tftp', ['127.0.0.1', String(port), '-m', 'binary', '-c', 'get', 'undionly.kpxe', dest]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect((await readFile(dest)).equals(loader)).toBe(true);
    // A technician follows one PC's boot by its MAC: both ends of the transfer name it.
    const mine = logs.filter((l) => l.file === 'undionly.kpxe');
    expect(mine.map((l) => [l.msg, l.mac])).toEqual([
      ['tftp transfer start', PC_MAC],
      ['tftp transfer end', PC_MAC],
    ]);
  });

  it('serves byte-exact to atftp with blksize 1468 and windowsize 8', async () => {
    const dest = path.join(out, 'atftp.kpxe');
    const r = await run('atftp', ['--option', 'blksize 1468', '--option', 'windowsize 8', '-g', '-r', 'undionly.kpxe', '-l', dest, '127.0.0.1', String(port)]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect((await readFile(dest)).equals(loader)).toBe(true);
    const info = [...transfers].reverse().find((t) => t.file === 'undionly.kpxe');
    expect(info?.blksize).toBe(1468);
    expect(info?.windowsize).toBe(8);
    expect(info?.status).toBe('complete');
  });

  it('serves byte-exact to curl, default and --tftp-blksize', async () => {
    for (const extra of [[], ['--tftp-blksize', '1400']]) {
      const dest = path.join(out, `curl${extra.length}.kpxe`);
      const r = await run('curl', ['-s', '-S', ...extra, `tftp://127.0.0.1:${port}/undionly.kpxe`, '-o', dest]);
      expect(r.code, r.stderr).toBe(0);
      expect((await readFile(dest)).equals(loader)).toBe(true);
    }
  });

  it('serves empty files, exact block multiples, subdirectories, leading slash and symlinks inside the root', async () => {
    const empty = await fetchFile({ port, file: 'empty.bin' });
    expect(empty.error).toBeUndefined();
    expect(empty.data.length).toBe(0);
    const exact = await fetchFile({ port, file: 'sub/exact.bin' });
    expect(exact.data.equals(Buffer.alloc(1024, 7))).toBe(true);
    expect(exact.dataPackets).toBe(3); // 512 + 512 + the empty terminator
    expect((await fetchFile({ port, file: '/undionly.kpxe' })).data.equals(loader)).toBe(true);
    expect((await fetchFile({ port, file: 'alias.kpxe' })).data.equals(loader)).toBe(true);
    expect((await fetchFile({ port, file: 'undionly.kpxe', mode: 'netascii' })).data.equals(loader)).toBe(true);
  });

  it('refuses traversal, escapes, odd names, writes and missing files with the right codes', async () => {
    const cases: Array<[string, number]> = [
      ['../etc/passwd', ErrorCode.AccessViolation],
      ['sub/../../etc/passwd', ErrorCode.AccessViolation],
      ['..\\etc\\passwd', ErrorCode.AccessViolation],
      ['escape', ErrorCode.AccessViolation],
      ['etcdir/passwd', ErrorCode.AccessViolation],
      ['/etc/passwd', ErrorCode.FileNotFound], // taken relative to the root, which has no etc/
      ['bad\x01name', ErrorCode.AccessViolation],
      ['caf\xe9', ErrorCode.AccessViolation],
      ['nope.bin', ErrorCode.FileNotFound],
      ['sub', ErrorCode.FileNotFound],
    ];
    for (const [name, code] of cases) {
      const r = await fetchFile({ port, file: name });
      expect(r.error?.code, name).toBe(code);
      expect(r.data.length, name).toBe(0);
    }
    const passwd = await readFile('/etc/passwd');
    const curl = await run('curl', ['-s', `tftp://127.0.0.1:${port}/../etc/passwd`, '-o', path.join(out, 'pw')]);
    expect(curl.code).not.toBe(0);
    const got = await readFile(path.join(out, 'pw')).catch(() => Buffer.alloc(0));
    expect(got.equals(passwd)).toBe(false);

    const wrq = await exchange(encodeRequest('WRQ', 'upload.bin', 'octet'), port);
    expect(wrq && decodePacket(wrq.msg)).toMatchObject({ op: 'ERROR', code: ErrorCode.AccessViolation });
    const put = await run('tftp', ['127.0.0.1', String(port), '-m', 'binary', '-c', 'put', LOADER, 'upload.bin']);
    expect(put.stdout + put.stderr).toMatch(/read-only|Access violation/i);
    await expect(readFile(path.join(root, 'upload.bin'))).rejects.toThrow();

    const mail = await exchange(encodeRequest('RRQ', 'undionly.kpxe', 'mail'), port);
    expect(mail && decodePacket(mail.msg)).toMatchObject({ op: 'ERROR', code: ErrorCode.IllegalOperation });
  });

  it('treats the edk2 tsize probe (OACK, error 8, request again) as normal', async () => {
    const before = transfers.length;
    const logsBefore = logs.length;
    const probe = await fetchFile({ port, file: 'undionly.kpxe', options: { tsize: '0', blksize: '1468' }, abortAfterOack: true });
    expect(probe.oack?.get('tsize')).toBe(String(loader.length));
    const full = await fetchFile({ port, file: 'undionly.kpxe', options: { tsize: '0', blksize: '1468' } });
    expect(full.error).toBeUndefined();
    expect(full.data.equals(loader)).toBe(true);
    await waitFor('both transfers to be logged', () => transfers.length >= before + 2, { timeoutMs: 5000 });
    const [first, second] = transfers.slice(before);
    expect(first).toMatchObject({ status: 'client-abort', endedAfterOack: true, clientError: { code: 8 } });
    expect(second).toMatchObject({ status: 'complete', size: loader.length });
    const warnings = logs.slice(logsBefore).filter((l) => l.level >= 40);
    expect(warnings).toEqual([]);
  });

  it('answers a wrong TID with error 5 and the real transfer still completes', async () => {
    const intruder = await bindSocket();
    const intruderGot: { msg: Buffer; from: number }[] = [];
    intruder.on('message', (msg, rinfo) => intruderGot.push({ msg, from: rinfo.port }));
    let serverTid = 0;
    const r = await fetchFile({
      port,
      file: 'undionly.kpxe',
      onTid: (tid) => {
        serverTid = tid;
        intruder.send(encodeAck(1), tid, '127.0.0.1');
      },
    });
    await waitFor('an answer to the intruder', () => intruderGot.length > 0, { timeoutMs: 5000 });
    intruder.close();
    expect(decodePacket(intruderGot[0].msg)).toMatchObject({ op: 'ERROR', code: ErrorCode.UnknownTransferId });
    // From the transfer's own port, as RFC 1350 §4 has it; not from the request port or a third one.
    expect(intruderGot[0].from).toBe(serverTid);
    expect(r.error).toBeUndefined();
    expect(r.data.equals(loader)).toBe(true);
  });

  it('survives dropped and duplicated ACKs without a Sorcerer\'s Apprentice avalanche', async () => {
    for (const [windowsize, seed] of [[1, 11], [1, 12], [4, 13]] as const) {
      const r = await fetchFile({
        port,
        file: 'undionly.kpxe',
        options: windowsize > 1 ? { windowsize: String(windowsize) } : {},
        dropAck: 0.1,
        dupAck: 0.3,
        seed,
        timeoutMs: 300,
      });
      expect(r.error).toBeUndefined();
      expect(r.data.equals(loader)).toBe(true);
      // 146 blocks. Duplicate ACKs must cost nothing; each dropped ACK costs at most one window.
      // With the bug every duplicate re-sends data and the count roughly doubles.
      const limit = r.blocks * (1 + 0.1 * windowsize * 2) + 10;
      expect(r.dataPackets, `windowsize ${windowsize}`).toBeLessThanOrEqual(limit);
      await waitFor('the transfer to be logged', () => transfers.some((t) => t.client.port === r.clientPort), { timeoutMs: 5000 });
      const info = transfers.find((t) => t.client.port === r.clientPort);
      expect(info?.status).toBe('complete');
      expect(info?.duplicateAcks).toBeGreaterThan(0);
    }
  });

  it('serves many transfers at once', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => fetchFile({ port, file: 'undionly.kpxe', options: { blksize: String(512 + i * 50) } })));
    for (const r of results) expect(r.data.equals(loader)).toBe(true);
  });

  it('wraps block numbers past 65535 (33 MB at blksize 512, tftp-hpa)', async () => {
    const size = 65536 * 512 + 1000;
    const big = path.join(root, 'big.bin');
    const rand = prng(7);
    const content = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4) content.writeUInt32LE(Math.floor(rand() * 0xffffffff), i);
    const fh = await open(big, 'w');
    await fh.write(content);
    await fh.close();
    const dest = path.join(out, 'big.bin');
    const r = await run('tftp', ['127.0.0.1', String(port), '-m', 'binary', '-c', 'get', 'big.bin', dest], { timeoutMs: 110_000 });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect((await readFile(dest)).equals(content)).toBe(true);
    const info = [...transfers].reverse().find((t) => t.file === 'big.bin');
    expect(info).toMatchObject({ status: 'complete', blocks: 65538, size });
  });
});
