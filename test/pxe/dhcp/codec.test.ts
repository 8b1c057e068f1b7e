import { describe, expect, it } from 'vitest';
import {
  decodeClientUuid,
  decodeEncapsulated,
  decodeUserClass,
  describeRequest,
  encodeDhcpPacket,
  encodeUserClassRfc3004,
  parseDhcpPacket,
  type DhcpPacket,
} from '../../../src/pxe/dhcp/index.js';
import { httpBootDiscover, ipxeBiosDiscover, opt, ovmfDiscover, paddedPxeDiscover, rawPacket, udhcpcDiscover } from './packets.js';

const MAC = '52:54:00:12:34:56';

function parseOk(buf: Buffer): DhcpPacket {
  const r = parseDhcpPacket(buf);
  if (!r.ok) throw new Error(`expected a packet, got ${r.error.code}: ${r.error.message}`);
  return r.packet;
}

describe('parse captured-style client packets', () => {
  it('SeaBIOS/iPXE BIOS DISCOVER', () => {
    const p = parseOk(ipxeBiosDiscover(0xdeadbeef, MAC));
    expect(p.op).toBe(1);
    expect(p.xid).toBe(0xdeadbeef);
    expect(p.flags).toBe(0x8000);
    const r = describeRequest(p);
    expect(r.mac).toBe(MAC);
    expect(r.messageType).toBe(1);
    expect(r.vendorClass).toBe('PXEClient:Arch:00000:UNDI:002001');
    expect(r.userClasses).toEqual(['iPXE']);
    expect(r.arch).toBe(0);
    expect(r.ndi).toEqual({ type: 1, major: 2, minor: 1 });
    expect(r.maxMessageSize).toBe(1472);
    expect(r.isPxe).toBe(true);
    expect(r.isIpxe).toBe(true);
    expect(r.ipxeOptions?.get(0xeb)).toEqual(Buffer.from([1, 0, 0]));
    // 61 = htype + chaddr is the same identity as no option 61 (PXE ROM, then iPXE).
    expect(r.clientKey).toBe(`hw:1:${MAC}`);
    expect(r.parameterList).toContain(175);
    expect(decodeClientUuid(r.uuidOption)).toBe('4c4c4544-004a-1080-8035-b2c04f4e3531');
  });

  it('OVMF DISCOVER', () => {
    const r = describeRequest(parseOk(ovmfDiscover(7, MAC)));
    expect(r.vendorClass).toBe('PXEClient:Arch:00007:UNDI:003000');
    expect(r.arch).toBe(7);
    expect(r.archList).toEqual([7]);
    expect(r.isPxe).toBe(true);
    expect(r.isIpxe).toBe(false);
    expect(r.userClasses).toEqual([]);
    expect(r.clientKey).toBe(`hw:1:${MAC}`);
    expect(r.uuidOption?.length).toBe(17);
  });

  it('udhcpc DISCOVER is not a PXE client', () => {
    const r = describeRequest(parseOk(udhcpcDiscover(9, MAC)));
    expect(r.messageType).toBe(1);
    expect(r.vendorClass).toBe('udhcp 1.35.0');
    expect(r.isPxe).toBe(false);
    expect(r.isIpxe).toBe(false);
    expect(r.parameterList).toEqual([1, 3, 6, 12, 15, 28, 42]);
  });

  it('pad bytes between options and option 60 in the parameter list', () => {
    const r = describeRequest(parseOk(paddedPxeDiscover(10, MAC)));
    expect(r.parameterList).toEqual([1, 3, 43, 60, 66, 67]);
    expect(r.vendorClass).toBe('PXEClient:Arch:00000:UNDI:002001');
    expect(r.archList).toEqual([0]);
    expect(r.isPxe).toBe(true);
  });

  it('HTTP boot client', () => {
    const r = describeRequest(parseOk(httpBootDiscover(11, MAC)));
    expect(r.arch).toBe(16);
    expect(r.isHttpClient).toBe(true);
    expect(r.isPxe).toBe(true);
  });

  it('arch from vendor class when option 93 is missing', () => {
    const r = describeRequest(parseOk(rawPacket({ xid: 1, mac: MAC, options: [...opt(53, [1]), ...opt(60, 'PXEClient:Arch:00011:UNDI:003000'), 255] })));
    expect(r.arch).toBe(11);
  });
});

describe('options', () => {
  it('user class: RFC 3004 form and bare iPXE text', () => {
    expect(decodeUserClass(Buffer.from('iPXE'))).toEqual(['iPXE']);
    expect(decodeUserClass(encodeUserClassRfc3004(['iPXE']))).toEqual(['iPXE']);
    expect(decodeUserClass(encodeUserClassRfc3004(['a', 'gPXE']))).toEqual(['a', 'gPXE']);
    // Length byte claims more than exists: it is text, not RFC 3004.
    expect(decodeUserClass(Buffer.from([9, 0x41]))).toEqual(['\x09A']);
  });

  it('RFC 3004 user class in a packet marks iPXE', () => {
    const r = describeRequest(
      parseOk(rawPacket({ xid: 1, mac: MAC, options: [...opt(53, [1]), ...opt(77, [4, ...Buffer.from('iPXE')]), ...opt(60, 'PXEClient'), 255] })),
    );
    expect(r.userClasses).toEqual(['iPXE']);
    expect(r.isIpxe).toBe(true);
  });

  it('option 175 alone marks iPXE', () => {
    const r = describeRequest(parseOk(rawPacket({ xid: 1, mac: MAC, options: [...opt(53, [1]), ...opt(175, [0x13, 1, 1]), 255] })));
    expect(r.isIpxe).toBe(true);
  });

  it('encapsulated options with a sub-option past the end are rejected as a whole', () => {
    expect(decodeEncapsulated(Buffer.from([6, 1, 8, 255]))?.get(6)).toEqual(Buffer.from([8]));
    expect(decodeEncapsulated(Buffer.from([6, 5, 8]))).toBeUndefined();
  });

  it('a client id other than htype+MAC is the lease identity', () => {
    const r = describeRequest(parseOk(rawPacket({ xid: 1, mac: MAC, options: [...opt(53, [1]), ...opt(61, [0, ...Buffer.from('host-7')]), 255] })));
    expect(r.clientKey).toBe(`id:00${Buffer.from('host-7').toString('hex')}`);
  });

  it('malformed option values read as absent', () => {
    const r = describeRequest(
      parseOk(rawPacket({ xid: 1, mac: MAC, options: [...opt(53, [1, 2]), ...opt(50, [10, 0, 0]), ...opt(93, [0]), ...opt(57, [1]), 255] })),
    );
    expect(r.messageType).toBeUndefined();
    expect(r.requestedIp).toBeUndefined();
    expect(r.archList).toEqual([]);
    expect(r.maxMessageSize).toBeUndefined();
  });

  it('repeated options are concatenated (RFC 3396)', () => {
    const p = parseOk(rawPacket({ xid: 1, mac: MAC, options: [...opt(53, [1]), ...opt(55, [1, 3]), ...opt(55, [6]), 255] }));
    expect(describeRequest(p).parameterList).toEqual([1, 3, 6]);
  });

  it('overload: options in the file and sname fields', () => {
    const buf = rawPacket({ xid: 1, mac: MAC, options: [...opt(53, [1]), ...opt(52, [3]), 255] });
    Buffer.from([...opt(60, 'PXEClient'), 255]).copy(buf, 108);
    Buffer.from([...opt(12, 'host1'), 255]).copy(buf, 44);
    const p = parseOk(buf);
    const r = describeRequest(p);
    expect(r.vendorClass).toBe('PXEClient');
    expect(r.hostname).toBe('host1');
    expect(p.file).toBe('');
    expect(p.sname).toBe('');
  });
});

describe('hostile input gives typed errors', () => {
  const good = ipxeBiosDiscover(1, MAC);
  const cases: [string, Buffer, string][] = [
    ['empty', Buffer.alloc(0), 'too-short'],
    ['truncated header', good.subarray(0, 100), 'too-short'],
    ['header without cookie', good.subarray(0, 239), 'too-short'],
    ['bad op', Buffer.concat([Buffer.from([7]), good.subarray(1)]), 'bad-op'],
    ['huge hlen', (() => { const b = Buffer.from(good); b[2] = 200; return b; })(), 'bad-hlen'],
    ['no magic cookie', (() => { const b = Buffer.from(good); b.writeUInt32BE(0x01020304, 236); return b; })(), 'no-magic-cookie'],
    ['option runs past the end', rawPacket({ xid: 1, mac: MAC, options: [53, 1, 1, 60, 200, 0x50, 0x58] }), 'option-overrun'],
    ['option with no length byte', rawPacket({ xid: 1, mac: MAC, options: [53, 1, 1, 60] }), 'option-overrun'],
    ['bad overload value', rawPacket({ xid: 1, mac: MAC, options: [...opt(52, [9]), 255] }), 'bad-overload'],
    ['overloaded file field overrun', (() => { const b = rawPacket({ xid: 1, mac: MAC, options: [...opt(52, [1]), 255] }); b[108] = 60; b[109] = 250; return b; })(), 'option-overrun'],
  ];
  for (const [name, buf, code] of cases) {
    it(name, () => {
      const r = parseDhcpPacket(buf);
      expect(r.ok).toBe(false);
      if (!r.ok) {
        expect(r.error.code).toBe(code);
        expect(r.error.kind).toBe('dhcp-parse-error');
        expect(r.error.message.length).toBeGreaterThan(10);
      }
    });
  }

  it('a missing END is tolerated when options end exactly at the packet end', () => {
    const r = parseDhcpPacket(rawPacket({ xid: 1, mac: MAC, options: [...opt(53, [1])] }));
    expect(r.ok).toBe(true);
  });

  it('a parse of a slice of a larger buffer reads only the slice', () => {
    const inner = ipxeBiosDiscover(5, MAC);
    const big = Buffer.concat([Buffer.from([1, 2, 3]), inner, Buffer.from([60, 200])]);
    const r = parseDhcpPacket(big.subarray(3, 3 + inner.length));
    expect(r.ok).toBe(true);
  });
});

describe('encode', () => {
  it('pads replies to 300 bytes and round-trips', () => {
    const buf = encodeDhcpPacket({
      op: 2,
      xid: 0x01020304,
      chaddr: Buffer.from([1, 2, 3, 4, 5, 6]),
      siaddr: '10.0.0.1',
      file: 'undionly.kpxe',
      options: [{ code: 53, data: Buffer.from([2]) }, { code: 54, data: Buffer.from([10, 0, 0, 1]) }],
    });
    expect(buf.length).toBe(300);
    expect(buf.readUInt32BE(236)).toBe(0x63825363);
    const p = parseOk(buf);
    expect(p.op).toBe(2);
    expect(p.siaddr).toBe('10.0.0.1');
    expect(p.file).toBe('undionly.kpxe');
    expect(p.chaddr).toEqual(Buffer.from([1, 2, 3, 4, 5, 6]));
    expect(p.options.get(54)).toEqual(Buffer.from([10, 0, 0, 1]));
    // END right after the last option, then zero padding.
    expect(buf[240 + 3 + 6]).toBe(255);
  });

  it('splits options longer than 255 bytes and the parser joins them', () => {
    const long = Buffer.alloc(600, 0x41);
    const p = parseOk(encodeDhcpPacket({ op: 2, xid: 1, chaddr: Buffer.alloc(6), options: [{ code: 67, data: long }] }));
    expect(p.options.get(67)).toEqual(long);
  });

  it('refuses values that cannot be encoded', () => {
    expect(() => encodeDhcpPacket({ op: 2, xid: 1, chaddr: Buffer.alloc(17), options: [] })).toThrow(RangeError);
    expect(() => encodeDhcpPacket({ op: 2, xid: 1, chaddr: Buffer.alloc(6), yiaddr: '10.0.0.256', options: [] })).toThrow(/dotted-quad/);
    expect(() => encodeDhcpPacket({ op: 2, xid: 1, chaddr: Buffer.alloc(6), file: 'x'.repeat(128), options: [] })).toThrow(/file/);
    expect(() => encodeDhcpPacket({ op: 2, xid: 1, chaddr: Buffer.alloc(6), options: [{ code: 255, data: Buffer.alloc(0) }] })).toThrow(RangeError);
  });
});
