/** Pure codec, validation and byte-queue tests. */
import { describe, expect, it } from 'vitest';
import { ByteQueue } from '../../src/nbd/byte-queue.js';
import {
  CMD,
  CMD_FLAG,
  ERRNO,
  IHAVEOPT,
  NBDMAGIC,
  REPLY_TYPE,
  decodeOptionHeader,
  decodeRequestHeader,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeOffsetDataHeader,
  encodeOffsetHoleChunk,
  encodeOptionReply,
  encodeRequestHeader,
  encodeServerGreeting,
  encodeSimpleReply,
  parseGoOption,
  parseMetaContextOption,
  truncateUtf8,
} from '../../src/nbd/protocol.js';
import { checkReadPieces, checkRequest, clampExtents, type TransmissionContext } from '../../src/nbd/validate.js';
import { goData, metaData } from './helpers.js';

const ctx: TransmissionContext = {
  size: 1 << 20,
  readOnly: false,
  structured: true,
  allocationContextId: 1,
  minimumBlock: 512,
  maximumPayload: 65536,
  trim: true,
  writeZeroes: true,
  fastZero: true,
  cache: true,
};
const req = (type: number, offset: bigint, length: number, flags = 0) =>
  decodeRequestHeader(encodeRequestHeader({ type, cookie: 1n, offset, length, flags }));

describe('protocol codec', () => {
  it('encodes the greeting and option replies', () => {
    const g = encodeServerGreeting(3);
    expect(g.readBigUInt64BE(0)).toBe(NBDMAGIC);
    expect(g.readBigUInt64BE(8)).toBe(IHAVEOPT);
    expect(g.readUInt16BE(16)).toBe(3);
    const r = encodeOptionReply(7, 1, Buffer.from('ab'));
    expect(r.toString('hex')).toBe('0003e889045565a9' + '00000007' + '00000001' + '00000002' + '6162');
    expect(encodeExportNameReply(4096, 1, true)).toHaveLength(10);
    expect(encodeExportNameReply(4096, 1, false)).toHaveLength(134);
    expect(encodeInfoExport(2 ** 40, 0x1cd).toString('hex')).toBe('0000' + '0000010000000000' + '01cd');
    expect(encodeInfoBlockSize(512, 4096, 65536).toString('hex')).toBe('0003' + '00000200' + '00001000' + '00010000');
  });

  it('decodes option and request headers', () => {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(IHAVEOPT);
    h.writeUInt32BE(7, 8);
    h.writeUInt32BE(0xffffffff, 12);
    expect(decodeOptionHeader(h)).toEqual({ magicOk: true, option: 7, length: 0xffffffff });
    const r = decodeRequestHeader(encodeRequestHeader({ type: CMD.WRITE, flags: 1, cookie: 0xdeadbeefcafef00dn, offset: 2n ** 64n - 1n, length: 0xffffffff }));
    expect(r).toEqual({ magicOk: true, flags: 1, type: CMD.WRITE, cookie: 0xdeadbeefcafef00dn, offset: 2n ** 64n - 1n, length: 0xffffffff });
    expect(decodeRequestHeader(Buffer.alloc(28)).magicOk).toBe(false);
  });

  it('encodes replies and chunks', () => {
    expect(encodeSimpleReply(22, 5n).toString('hex')).toBe('67446698' + '00000016' + '0000000000000005');
    const d = encodeOffsetDataHeader(9n, 4096, 100, true);
    expect(d.readUInt32BE(0)).toBe(0x668e33ef);
    expect(d.readUInt16BE(4)).toBe(1);
    expect(d.readUInt16BE(6)).toBe(REPLY_TYPE.OFFSET_DATA);
    expect(d.readUInt32BE(16)).toBe(108);
    expect(d.readBigUInt64BE(20)).toBe(4096n);
    const hole = encodeOffsetHoleChunk(9n, 0, 512, false);
    expect(hole.readUInt32BE(16)).toBe(12);
    expect(hole.readUInt32BE(28)).toBe(512);
    const e = encodeErrorChunk(9n, ERRNO.EIO, 'bad', true, 1024);
    expect(e.readUInt16BE(6)).toBe(REPLY_TYPE.ERROR_OFFSET);
    expect(e.readUInt32BE(16)).toBe(6 + 3 + 8);
    expect(e.subarray(26, 29).toString()).toBe('bad');
    expect(e.readBigUInt64BE(29)).toBe(1024n);
    const bs = encodeBlockStatusChunk(9n, 1, [{ length: 512, flags: 3 }, { length: 1024, flags: 0 }], true);
    expect(bs.readUInt32BE(16)).toBe(4 + 16);
    expect(bs.subarray(20).toString('hex')).toBe('00000001' + '00000200' + '00000003' + '00000400' + '00000000');
  });

  it('parses GO and meta-context options, rejecting malformed ones', () => {
    expect(parseGoOption(goData('disk', [0, 3]))).toEqual({ ok: true, value: { name: 'disk', infoRequests: [0, 3] } });
    expect(parseGoOption(Buffer.alloc(3)).ok).toBe(false);
    const bad = goData('disk', [3]);
    bad.writeUInt32BE(0xffffffff, 0);
    expect(parseGoOption(bad).ok).toBe(false);
    expect(parseGoOption(Buffer.concat([goData('x', [3]), Buffer.from([0])])).ok).toBe(false);
    expect(parseGoOption(goData('\u00e9')).ok).toBe(true);
    const badUtf8 = goData('ab');
    badUtf8[4] = 0xff;
    expect(parseGoOption(badUtf8).ok).toBe(false);
    expect(parseMetaContextOption(metaData('d', ['base:allocation', 'x-y:z']), 10)).toEqual({
      ok: true,
      value: { name: 'd', queries: ['base:allocation', 'x-y:z'] },
    });
    const trunc = metaData('d', ['base:allocation']);
    expect(parseMetaContextOption(trunc.subarray(0, trunc.length - 1), 10).ok).toBe(false);
    const many = metaData('d', []);
    many.writeUInt32BE(0xffffffff, 5);
    const r = parseMetaContextOption(many, 10);
    expect(r.ok === false && r.message).toMatch(/too many queries/);
  });

  it('truncates UTF-8 on a character boundary', () => {
    expect(truncateUtf8('aé', 2).toString()).toBe('a');
    expect(truncateUtf8('abc', 10).toString()).toBe('abc');
  });
});

describe('request validation', () => {
  it('accepts good requests and maps bad ones to the spec errno', () => {
    expect(checkRequest(req(CMD.READ, 512n, 4096), ctx)).toEqual({ ok: true, offset: 512 });
    const errno = (r: ReturnType<typeof checkRequest>): number => (r.ok ? 0 : r.errno);
    expect(errno(checkRequest(req(CMD.READ, 2n ** 64n - 512n, 1024), ctx))).toBe(ERRNO.EINVAL);
    expect(errno(checkRequest(req(CMD.WRITE, 2n ** 64n - 512n, 1024), ctx))).toBe(ERRNO.ENOSPC);
    expect(errno(checkRequest(req(CMD.WRITE_ZEROES, BigInt(ctx.size), 512), ctx))).toBe(ERRNO.ENOSPC);
    expect(errno(checkRequest(req(CMD.TRIM, BigInt(ctx.size), 512), ctx))).toBe(ERRNO.EINVAL);
    expect(errno(checkRequest(req(CMD.READ, 1n, 512), ctx))).toBe(ERRNO.EINVAL);
    expect(errno(checkRequest(req(CMD.READ, 0n, 65536 + 512), ctx))).toBe(ERRNO.EOVERFLOW);
    expect(errno(checkRequest(req(CMD.READ, 0n, 65536 + 512), { ...ctx, structured: false }))).toBe(ERRNO.EINVAL);
    expect(errno(checkRequest(req(CMD.WRITE, 0n, 65536 + 512), ctx))).toBe(ERRNO.EINVAL);
    expect(errno(checkRequest(req(CMD.WRITE, 0n, 512), { ...ctx, readOnly: true }))).toBe(ERRNO.EPERM);
    expect(errno(checkRequest(req(CMD.TRIM, 0n, 512), { ...ctx, readOnly: true }))).toBe(ERRNO.EPERM);
    expect(errno(checkRequest(req(CMD.READ, 0n, 512, CMD_FLAG.REQ_ONE), ctx))).toBe(ERRNO.EINVAL);
    expect(errno(checkRequest(req(CMD.WRITE_ZEROES, 0n, 512, CMD_FLAG.FAST_ZERO), { ...ctx, fastZero: false }))).toBe(ERRNO.EINVAL);
    expect(errno(checkRequest(req(CMD.BLOCK_STATUS, 0n, 512), { ...ctx, allocationContextId: undefined }))).toBe(ERRNO.EINVAL);
    expect(errno(checkRequest(req(CMD.BLOCK_STATUS, 0n, 512, CMD_FLAG.REQ_ONE), ctx))).toBe(0);
    expect(errno(checkRequest(req(42, 0n, 0), ctx))).toBe(ERRNO.EINVAL);
    // Large no-payload requests are fine as long as they are in range.
    expect(errno(checkRequest(req(CMD.WRITE_ZEROES, 0n, ctx.size), ctx))).toBe(0);
  });

  it('checks read pieces cover the request exactly', () => {
    const data = (offset: number, n: number) => ({ kind: 'data' as const, offset, data: Buffer.alloc(n) });
    expect(checkReadPieces([data(0, 10), { kind: 'hole', offset: 10, length: 6 }], 0, 16)).toHaveLength(2);
    expect(typeof checkReadPieces([data(0, 10)], 0, 16)).toBe('string');
    expect(typeof checkReadPieces([data(2, 16)], 0, 16)).toBe('string');
    expect(typeof checkReadPieces([data(0, 20)], 0, 16)).toBe('string');
  });

  it('clamps extents to the request, the export end and REQ_ONE', () => {
    const ext = [{ length: 4096, flags: 3 }, { length: 4096, flags: 0 }, { length: 4096, flags: 3 }];
    expect(clampExtents(ext, 0, 5000, 1 << 20, false)).toEqual([{ length: 4096, flags: 3 }, { length: 4096, flags: 0 }]);
    expect(clampExtents(ext, 0, 1000, 1 << 20, true)).toEqual([{ length: 1000, flags: 3 }]);
    expect(clampExtents(ext, 0, 10000, 6000, false)).toEqual([{ length: 4096, flags: 3 }, { length: 1904, flags: 0 }]);
    expect(typeof clampExtents([], 0, 10, 100, false)).toBe('string');
    expect(typeof clampExtents([{ length: 0, flags: 0 }], 0, 10, 100, false)).toBe('string');
  });
});

describe('ByteQueue', () => {
  it('takes across chunk boundaries and skips', () => {
    const q = new ByteQueue();
    q.push(Buffer.from('abc'));
    q.push(Buffer.from('defg'));
    q.push(Buffer.from('h'));
    expect(q.length).toBe(8);
    expect(q.take(2).toString()).toBe('ab');
    expect(q.peek(4).toString()).toBe('cdef');
    expect(q.take(0)).toHaveLength(0);
    expect(q.skip(3)).toBe(3);
    expect(q.take(3).toString()).toBe('fgh');
    expect(q.length).toBe(0);
  });

  it('hands out a payload as in-order views of the received chunks', () => {
    const q = new ByteQueue();
    const a = Buffer.from('abc');
    q.push(a);
    q.push(Buffer.from('defg'));
    q.push(Buffer.from('hij'));
    q.skip(1);
    const s = q.takeSlices(7);
    expect(s.map((b) => b.toString())).toEqual(['bc', 'defg', 'h']);
    expect(s[0].buffer).toBe(a.buffer); // a view, not a copy
    expect(q.length).toBe(2);
    expect(q.take(2).toString()).toBe('ij');
    expect(q.takeSlices(0)).toEqual([]);
  });
});
