import { describe, expect, it } from 'vitest';
import {
  TftpParseError,
  decodePacket,
  encodeAck,
  encodeData,
  encodeError,
  encodeOack,
  encodeRequest,
  tryDecodePacket,
} from '../../../src/pxe/tftp/codec.js';
import { negotiateRead } from '../../../src/pxe/tftp/negotiate.js';
import { splitRequestName } from '../../../src/pxe/tftp/paths.js';
import { prng } from './helpers.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('TFTP codec', () => {
  it('decodes an RRQ with options, lower-casing mode and option names', () => {
    const buf = Buffer.from('\x00\x01pxelinux.0\x00OCTET\x00TSize\x000\x00blksize\x001468\x00', 'latin1');
    const p = decodePacket(buf);
    expect(p).toEqual({ op: 'RRQ', filename: 'pxelinux.0', mode: 'octet', options: new Map([['tsize', '0'], ['blksize', '1468']]) });
  });

  it('round-trips every packet type', () => {
    const opts = new Map([['blksize', '1468'], ['windowsize', '8']]);
    expect(decodePacket(encodeRequest('RRQ', 'a/b', 'octet', opts))).toEqual({ op: 'RRQ', filename: 'a/b', mode: 'octet', options: opts });
    expect(decodePacket(encodeRequest('WRQ', 'x', 'netascii'))).toEqual({ op: 'WRQ', filename: 'x', mode: 'netascii', options: new Map() });
    expect(decodePacket(encodeAck(65535))).toEqual({ op: 'ACK', block: 65535 });
    const d = decodePacket(encodeData(7, Buffer.from('hello')));
    expect(d.op === 'DATA' && d.block === 7 && d.data.toString() === 'hello').toBe(true);
    expect(decodePacket(encodeError(1, 'File not found'))).toEqual({ op: 'ERROR', code: 1, message: 'File not found' });
    expect(decodePacket(encodeOack(opts))).toEqual({ op: 'OACK', options: opts });
    expect(encodeAck(258)).toEqual(hex('0004 0102'));
    expect(encodeError(2, 'no\u00e9')).toEqual(Buffer.from('\x00\x05\x00\x02no?\x00', 'latin1'));
  });

  it('rejects malformed packets with a typed error kind', () => {
    const cases: Array<[Buffer, string]> = [
      [hex(''), 'too-short'],
      [hex('00'), 'too-short'],
      [hex('0009'), 'unknown-opcode'],
      [hex('0000'), 'unknown-opcode'],
      [Buffer.from('\x00\x01file', 'latin1'), 'missing-terminator'],
      [Buffer.from('\x00\x01file\x00', 'latin1'), 'missing-terminator'],
      [Buffer.from('\x00\x01\x00octet\x00', 'latin1'), 'empty-filename'],
      [Buffer.from('\x00\x01f\x00\x00', 'latin1'), 'empty-mode'],
      [Buffer.from('\x00\x01f\x00octet\x00blksize\x00', 'latin1'), 'option-without-value'],
      [Buffer.from('\x00\x01f\x00octet\x00\x00x\x00', 'latin1'), 'empty-option-name'],
      [Buffer.from('\x00\x01f\x00octet\x00a\x001\x00A\x002\x00', 'latin1'), 'duplicate-option'],
      [hex('0004 00'), 'wrong-length'],
      [hex('0004 000100'), 'wrong-length'],
      [hex('0003 00'), 'too-short'],
      [hex('0005 00'), 'too-short'],
    ];
    for (const [buf, kind] of cases) {
      const r = tryDecodePacket(buf);
      expect(r.ok, buf.toString('hex')).toBe(false);
      if (!r.ok) expect(r.error.kind, buf.toString('hex')).toBe(kind);
      expect(() => decodePacket(buf)).toThrow(TftpParseError);
    }
  });

  it('refuses to encode values that cannot be on the wire', () => {
    expect(() => encodeAck(65536)).toThrow(RangeError);
    expect(() => encodeAck(-1)).toThrow(RangeError);
    expect(() => encodeRequest('RRQ', 'a\0b', 'octet')).toThrow(RangeError);
    expect(() => encodeRequest('RRQ', '', 'octet')).toThrow(RangeError);
  });

  it('survives 100 000 seeded random and mutated packets', () => {
    const rand = prng(0x7f7f);
    const seeds = [
      encodeRequest('RRQ', 'undionly.kpxe', 'octet', new Map([['tsize', '0'], ['blksize', '1468'], ['windowsize', '8']])),
      encodeRequest('WRQ', 'x', 'netascii'),
      encodeAck(1),
      encodeData(3, Buffer.alloc(20, 1)),
      encodeError(8, 'abort'),
      encodeOack(new Map([['tsize', '123']])),
    ];
    let ok = 0;
    let bad = 0;
    for (let i = 0; i < 100_000; i++) {
      let buf: Buffer;
      if (i % 3 === 0) {
        buf = Buffer.alloc(Math.floor(rand() * 80));
        for (let j = 0; j < buf.length; j++) buf[j] = rand() < 0.3 ? 0 : Math.floor(rand() * 256);
        if (buf.length >= 2 && rand() < 0.7) buf.writeUInt16BE(Math.floor(rand() * 8), 0);
      } else {
        const base = seeds[Math.floor(rand() * seeds.length)];
        buf = Buffer.from(base);
        const flips = 1 + Math.floor(rand() * 4);
        for (let f = 0; f < flips && buf.length > 0; f++) {
          const at = Math.floor(rand() * buf.length);
          const r = rand();
          if (r < 0.5) buf[at] = Math.floor(rand() * 256);
          else if (r < 0.7) buf[at] = 0;
          else if (r < 0.85) buf = buf.subarray(0, at);
          else buf = Buffer.concat([buf, Buffer.from([Math.floor(rand() * 256), 0])]);
        }
      }
      // Any exception other than a TftpParseError escapes tryDecodePacket and fails the test.
      const res = tryDecodePacket(buf);
      if (res.ok) {
        ok++;
        const p = res.packet;
        if (p.op === 'RRQ' || p.op === 'WRQ') {
          // Whatever parses must survive the server's own policy code too.
          splitRequestName(p.filename);
          negotiateRead(p.options, 1000, { maxBlksize: 65464, maxWindowsize: 64, defaultTimeoutMs: 1000 });
        }
      } else bad++;
    }
    expect(ok).toBeGreaterThan(1000);
    expect(bad).toBeGreaterThan(1000);
  });
});

describe('option negotiation', () => {
  const limits = { maxBlksize: 65464, maxWindowsize: 64, defaultTimeoutMs: 1000 };
  it('grants sane options, clamps large ones, drops nonsense', () => {
    const n = negotiateRead(new Map([['blksize', '99999'], ['tsize', '0'], ['timeout', '3'], ['windowsize', '1000'], ['foo', 'bar']]), 4242, limits);
    expect(n).toEqual({
      blksize: 65464,
      windowsize: 64,
      timeoutMs: 3000,
      oack: new Map([['blksize', '65464'], ['timeout', '3'], ['tsize', '4242'], ['windowsize', '64']]),
    });
    const bad = negotiateRead(new Map([['blksize', '7'], ['timeout', '0'], ['windowsize', '-1'], ['tsize', 'x']]), 1, limits);
    expect(bad).toEqual({ blksize: 512, windowsize: 1, timeoutMs: 1000, oack: new Map() });
    expect(negotiateRead(new Map([['blksize', '1e3']]), 1, limits).oack.size).toBe(0);
  });
});

describe('request name rules', () => {
  it('splits safe names and refuses traversal and odd bytes', () => {
    expect(splitRequestName('/boot//x/./y.efi')).toEqual({ ok: true, segments: ['boot', 'x', 'y.efi'] });
    expect(splitRequestName('boot\\y.efi')).toEqual({ ok: true, segments: ['boot', 'y.efi'] });
    expect(splitRequestName('a/../../b')).toMatchObject({ ok: false, reason: 'forbidden' });
    expect(splitRequestName('a\x00b')).toMatchObject({ ok: false, reason: 'bad-name' });
    expect(splitRequestName('/')).toMatchObject({ ok: false, reason: 'bad-name' });
    expect(splitRequestName('x'.repeat(2000))).toMatchObject({ ok: false, reason: 'bad-name' });
  });
});
