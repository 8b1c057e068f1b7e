/** Hostile and malformed input over raw sockets; after each, the server must still serve a real client. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryExport } from './memory-export.js';
import { CMD, CMD_FLAG, ERRNO, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, INFO, OPT, REP, REPLY_TYPE } from '../../src/nbd/protocol.js';
import {
  RawClient,
  goData,
  optionBytes,
  rawGo,
  rawGreet,
  rawSimpleRead,
  readChunk,
  readOptionReply,
  readSimpleReply,
  request,
  run,
  startServer,
  type Started,
} from './helpers.js';
import { prng } from '../lib/prng.js';

const SIZE = 1024 * 1024;
const pattern = Buffer.alloc(SIZE);
for (let i = 0; i < SIZE; i++) pattern[i] = (i * 31 + 7) & 0xff;

describe('hostile input', () => {
  let s: Started;
  const ro = new MemoryExport({ size: SIZE, data: pattern, readOnly: true });
  const rw = new MemoryExport({ size: SIZE });
  const aligned = new MemoryExport({ size: SIZE, blockSizes: { minimum: 512, preferred: 4096, maximum: 65536 } });

  beforeAll(async () => {
    s = await startServer({ ro, rw, aligned });
  });
  afterAll(async () => {
    await s.server.close();
  });

  /** The server still serves a real client correctly. */
  async function stillServes(): Promise<void> {
    const r = await run('nbdinfo', ['--json', s.url('ro')]);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { exports: Array<{ 'export-size': number }> }).exports[0]['export-size']).toBe(SIZE);
    const { c } = await rawGo(s.port, 'ro');
    expect((await rawSimpleRead(c, 4096, 4096)).equals(pattern.subarray(4096, 8192))).toBe(true);
    c.destroy();
  }

  it('greets with fixed newstyle and NO_ZEROES', async () => {
    const c = await RawClient.connect(s.port);
    const flags = await rawGreet(c);
    expect(flags).toBe(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    c.destroy();
  });

  it('random bytes close that connection only', async () => {
    const c = await RawClient.connect(s.port);
    await c.read(18);
    c.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(3)));
    await c.waitClosed();
    await stillServes();
  });

  it('unknown client flags close the connection', async () => {
    const c = await RawClient.connect(s.port);
    await c.read(18);
    c.write(Buffer.from([0, 0, 0, 0x80]));
    await c.waitClosed();
    await stillServes();
  });

  it('commands before the handshake ends are treated as garbage', async () => {
    const c = await RawClient.connect(s.port);
    await rawGreet(c);
    c.write(request(CMD.READ, 1n, 0n, 512));
    await c.waitClosed();
    await stillServes();
  });

  it('truncated option and request headers do not disturb the server', async () => {
    const c1 = await RawClient.connect(s.port);
    await rawGreet(c1);
    c1.write(optionBytes(OPT.GO, goData('ro')).subarray(0, 10));
    c1.destroy();
    const { c: c2 } = await rawGo(s.port, 'rw');
    c2.write(request(CMD.WRITE, 1n, 0n, 4096).subarray(0, 20));
    c2.destroy();
    await rw.waitForDetach(1);
    const d = rw.events.filter((e) => e.kind === 'detach').at(-1);
    expect(d?.kind === 'detach' && d.info.clean).toBe(false);
    await stillServes();
  });

  it('option length 0xFFFFFFFF gets ERR_TOO_BIG and a close, without allocating it', async () => {
    const c = await RawClient.connect(s.port);
    await rawGreet(c);
    c.write(optionBytes(OPT.GO, Buffer.alloc(0), 0xffffffff));
    const r = await readOptionReply(c);
    expect(r.type).toBe(REP.ERR_TOO_BIG);
    expect(r.data.toString()).toMatch(/exceeds the limit/);
    await c.waitClosed();
    await stillServes();
  });

  it('unknown option → ERR_UNSUP, STARTTLS and LIST → ERR_POLICY, then GO still works', async () => {
    const c = await RawClient.connect(s.port);
    await rawGreet(c);
    c.write(optionBytes(0x4242, Buffer.from('whatever')));
    expect((await readOptionReply(c)).type).toBe(REP.ERR_UNSUP);
    c.write(optionBytes(OPT.STARTTLS));
    expect((await readOptionReply(c)).type).toBe(REP.ERR_POLICY);
    c.write(optionBytes(OPT.LIST));
    const list = await readOptionReply(c);
    expect(list.type).toBe(REP.ERR_POLICY);
    expect(list.data.toString()).toMatch(/secret/);
    c.write(optionBytes(OPT.GO, goData('nope')));
    const unk = await readOptionReply(c);
    expect(unk.type).toBe(REP.ERR_UNKNOWN);
    expect(unk.data.toString()).toBe('no export named "nope"');
    c.write(optionBytes(OPT.GO, Buffer.from([0, 0, 0, 9, 1]))); // name length past the data
    expect((await readOptionReply(c)).type).toBe(REP.ERR_INVALID);
    c.write(optionBytes(OPT.GO, goData('ro', [INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE])));
    const infos: number[] = [];
    for (;;) {
      const r = await readOptionReply(c);
      if (r.type === REP.ACK) break;
      expect(r.type).toBe(REP.INFO);
      infos.push(r.data.readUInt16BE(0));
    }
    expect(infos.sort()).toEqual([INFO.EXPORT, INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE]);
    expect((await rawSimpleRead(c, 0, 16)).equals(pattern.subarray(0, 16))).toBe(true);
    c.destroy();
  });

  it('NBD_OPT_ABORT is acknowledged and the connection closes', async () => {
    const c = await RawClient.connect(s.port);
    await rawGreet(c);
    c.write(optionBytes(OPT.ABORT));
    expect((await readOptionReply(c)).type).toBe(REP.ACK);
    await c.waitClosed();
  });

  it('bad requests get the spec error and the connection survives (simple replies)', async () => {
    const { c } = await rawGo(s.port, 'ro');
    const cases: Array<[Buffer, number]> = [
      [request(CMD.READ, 1n, 0n, 0xffffffff), ERRNO.EINVAL],
      [request(CMD.READ, 2n, 0xfffffffffffffe00n, 1024), ERRNO.EINVAL],
      [request(CMD.READ, 3n, BigInt(SIZE - 10), 20), ERRNO.EINVAL],
      [request(CMD.READ, 4n, 0n, 512, 0x8000), ERRNO.EINVAL],
      [request(CMD.READ, 5n, 0n, 512, CMD_FLAG.DF), ERRNO.EINVAL], // DF needs structured replies
      [request(99, 6n, 0n, 512), ERRNO.EINVAL],
      [request(CMD.TRIM, 7n, 0n, 512), ERRNO.EPERM],
      [request(CMD.WRITE_ZEROES, 8n, 0n, 512), ERRNO.EPERM],
      [request(CMD.BLOCK_STATUS, 9n, 0n, 512), ERRNO.EINVAL], // no meta context selected
      [request(CMD.FLUSH, 10n, 5n, 0), ERRNO.EINVAL],
    ];
    for (const [req, errno] of cases) {
      c.write(req);
      const r = await readSimpleReply(c);
      expect(r.errno).toBe(errno);
    }
    // A write to the read-only export: EPERM, and its payload is consumed, not parsed as requests.
    const payload = request(CMD.DISC, 0n, 0n, 0); // bytes that would end the session if misparsed
    c.write(Buffer.concat([request(CMD.WRITE, 11n, 0n, payload.length), payload]));
    expect(await readSimpleReply(c)).toEqual({ errno: ERRNO.EPERM, cookie: 11n });
    expect((await rawSimpleRead(c, 100, 50)).equals(pattern.subarray(100, 150))).toBe(true);
    c.destroy();
    await stillServes();
  });

  it('writes beyond the end get ENOSPC; misaligned requests EINVAL', async () => {
    const { c } = await rawGo(s.port, 'aligned');
    c.write(Buffer.concat([request(CMD.WRITE, 1n, BigInt(SIZE - 512), 1024), Buffer.alloc(1024, 1)]));
    expect(await readSimpleReply(c)).toEqual({ errno: ERRNO.ENOSPC, cookie: 1n });
    c.write(Buffer.concat([request(CMD.WRITE, 2n, 0xffffffffffffff00n, 512), Buffer.alloc(512, 1)]));
    expect(await readSimpleReply(c)).toEqual({ errno: ERRNO.ENOSPC, cookie: 2n });
    c.write(request(CMD.WRITE_ZEROES, 3n, BigInt(SIZE), 512));
    expect(await readSimpleReply(c)).toEqual({ errno: ERRNO.ENOSPC, cookie: 3n });
    c.write(Buffer.concat([request(CMD.WRITE, 4n, 100n, 512), Buffer.alloc(512, 1)]));
    expect(await readSimpleReply(c)).toEqual({ errno: ERRNO.EINVAL, cookie: 4n });
    c.write(request(CMD.READ, 5n, 0n, 65536 + 512));
    expect(await readSimpleReply(c)).toEqual({ errno: ERRNO.EINVAL, cookie: 5n });
    c.write(Buffer.concat([request(CMD.WRITE, 6n, 512n, 512), Buffer.alloc(512, 9)]));
    expect(await readSimpleReply(c)).toEqual({ errno: 0, cookie: 6n });
    expect(aligned.contents().subarray(0, 1536).equals(Buffer.concat([Buffer.alloc(512), Buffer.alloc(512, 9), Buffer.alloc(512)]))).toBe(true);
    c.destroy();
  });

  it('structured replies: oversize read → EOVERFLOW error chunk, errors carry messages', async () => {
    const { c: a } = await rawGo(s.port, 'aligned', { structured: true });
    a.write(request(CMD.READ, 1n, 0n, 131072));
    const e = await readChunk(a);
    expect(e.type).toBe(REPLY_TYPE.ERROR);
    expect(e.payload.readUInt32BE(0)).toBe(ERRNO.EOVERFLOW);
    expect(e.cookie).toBe(1n);
    a.destroy();
    const { c } = await rawGo(s.port, 'ro', { structured: true });
    c.write(request(CMD.READ, 1n, 0n, 0xffffffff));
    expect((await readChunk(c)).payload.readUInt32BE(0)).toBe(ERRNO.EINVAL);
    c.write(request(CMD.READ, 2n, 0xfffffffffffffff0n, 0x20));
    const o = await readChunk(c);
    expect(o.payload.readUInt32BE(0)).toBe(ERRNO.EINVAL);
    expect(o.payload.subarray(6).toString()).toMatch(/beyond the export size/);
    c.write(request(CMD.READ, 3n, 10n, 20));
    const d = await readChunk(c);
    expect(d.type).toBe(REPLY_TYPE.OFFSET_DATA);
    expect(d.flags & 1).toBe(1);
    expect(d.payload.readBigUInt64BE(0)).toBe(10n);
    expect(d.payload.subarray(8).equals(pattern.subarray(10, 30))).toBe(true);
    c.destroy();
  });

  it('a WRITE with payload length 0xFFFFFFFF closes that connection only', async () => {
    const { c } = await rawGo(s.port, 'rw');
    c.write(request(CMD.WRITE, 1n, 0n, 0xffffffff));
    c.write(Buffer.alloc(65536, 0xee));
    await c.waitClosed();
    await stillServes();
  });

  it('bad request magic in transmission closes that connection only', async () => {
    const { c } = await rawGo(s.port, 'ro');
    c.write(Buffer.alloc(28, 0x41));
    await c.waitClosed();
    await stillServes();
  });

  it('survives a seeded fuzz loop of random request streams', async () => {
    const rnd = prng(0xc0ffee);
    const int = (n: number): number => Math.floor(rnd() * n);
    const fuzzClient = async (): Promise<RawClient> => {
      const structured = int(2) === 0;
      return (await rawGo(s.port, int(2) === 0 ? 'rw' : 'ro', { structured, meta: structured && int(2) === 0 })).c;
    };
    const ROUNDS = 2000;
    for (let round = 0; round < ROUNDS; round++) {
      const mode = int(4);
      const c = mode === 0 ? await RawClient.connect(s.port) : await fuzzClient();
      const parts: Buffer[] = [];
      const n = 1 + int(6);
      for (let i = 0; i < n; i++) {
        const kind = int(5);
        if (kind === 0) {
          const junk = Buffer.alloc(int(64));
          for (let j = 0; j < junk.length; j++) junk[j] = int(256);
          parts.push(junk);
        } else {
          // Plausible requests with hostile fields: any type, flags, offsets near the end or 2^64, odd lengths.
          const type = int(10);
          const offsets = [0n, BigInt(int(SIZE)), BigInt(SIZE), 0xffffffffffffffffn - BigInt(int(4096))];
          const lengths = [0, int(4096), SIZE, 0xffffffff, int(70000)];
          const len = lengths[int(lengths.length)];
          parts.push(request(type, BigInt(round), offsets[int(offsets.length)], len, int(2) === 0 ? 0 : int(65536)));
          if (type === CMD.WRITE && len <= 70000) parts.push(Buffer.alloc(int(2) === 0 ? len : int(len + 1), 0x5a));
        }
      }
      c.write(Buffer.concat(parts));
      // Half-close and wait for the server to finish with the stream: it answers, ignores or hangs up.
      c.socket.end();
      await c.waitClosed();
    }
    // Every connection that attached was detached exactly once.
    for (const e of [ro, rw]) {
      const attaches = e.events.filter((x) => x.kind === 'attach').length;
      await e.waitForDetach(attaches);
      expect(e.events.filter((x) => x.kind === 'detach').length).toBe(attaches);
    }
    await stillServes();
    const d = await run('nbdinfo', ['--map', s.url('rw')]);
    expect(d.code, d.stderr).toBe(0);
  });
});
