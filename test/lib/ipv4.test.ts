import { describe, expect, it } from 'vitest';
import { broadcastAddress, bytesToIp, ipToBytes, ipToNumber, numberToIp, plainAddress, tryIpToBytes } from '../../src/lib/ipv4.js';

describe('IPv4 conversions', () => {
  it('a dotted quad becomes its 4 bytes and back', () => {
    expect([...ipToBytes('192.168.50.7')]).toEqual([192, 168, 50, 7]);
    expect([...ipToBytes('0.0.0.0')]).toEqual([0, 0, 0, 0]);
    expect([...ipToBytes('255.255.255.255')]).toEqual([255, 255, 255, 255]);
    expect(bytesToIp(Uint8Array.from([10, 0, 0, 5]))).toBe('10.0.0.5');
    for (const ip of ['10.1.2.3', '172.16.254.1', '1.0.0.255']) expect(bytesToIp(ipToBytes(ip))).toBe(ip);
  });

  it('reads the 4 bytes at an offset (a field inside a packet)', () => {
    const packet = Uint8Array.from([0, 0, 10, 20, 30, 40, 99]);
    expect(bytesToIp(packet, 2)).toBe('10.20.30.40');
  });

  it('a dotted quad becomes an unsigned 32-bit number and back', () => {
    expect(ipToNumber('0.0.0.0')).toBe(0);
    expect(ipToNumber('0.0.1.0')).toBe(256);
    expect(ipToNumber('192.168.50.1')).toBe(0xc0a83201);
    // Unsigned: the high bit set must not come out negative.
    expect(ipToNumber('255.255.255.255')).toBe(0xffffffff);
    expect(numberToIp(0xc0a83201)).toBe('192.168.50.1');
    expect(numberToIp(0)).toBe('0.0.0.0');
    expect(numberToIp(0xffffffff)).toBe('255.255.255.255');
  });

  it('numberToIp takes the results of bitwise arithmetic as they are', () => {
    // Broadcast of 192.168.50.0/24 computed the way the lease pool does; `|` and `~` yield signed numbers.
    const net = ipToNumber('192.168.50.0');
    const mask = ipToNumber('255.255.255.0');
    expect(net | ~mask).toBeLessThan(0);
    expect(numberToIp(net | ~mask)).toBe('192.168.50.255');
    expect(numberToIp(-1)).toBe('255.255.255.255');
  });

  it('orders addresses numerically, not as text', () => {
    expect(ipToNumber('10.0.0.9')).toBeLessThan(ipToNumber('10.0.0.10'));
    expect(ipToNumber('9.255.255.255')).toBeLessThan(ipToNumber('10.0.0.0'));
    expect(ipToNumber('10.0.1.0') - ipToNumber('10.0.0.0')).toBe(256);
  });

  it('anything but a dotted quad of 0-255 is not an address', () => {
    for (const bad of ['', '10.0.0', '10.0.0.0.1', '10.0.0.256', '300.1.1.1', '10.0.0.-1', 'a.b.c.d', ' 10.0.0.1', '10.0.0.1 ', '10.0.0.1/24', '::1', '::ffff:10.0.0.1', '1234.0.0.1']) {
      expect(tryIpToBytes(bad), bad).toBeUndefined();
      expect(() => ipToBytes(bad), bad).toThrow(RangeError);
      expect(() => ipToNumber(bad), bad).toThrow(RangeError);
    }
  });

  it('the RangeError names the value and says what to fix', () => {
    expect(() => ipToBytes('10.0.0.300')).toThrow('"10.0.0.300" is not a dotted-quad IPv4 address; fix the configuration value');
  });

  it('tryIpToBytes returns a fresh buffer each time (callers may keep or change it)', () => {
    const a = tryIpToBytes('10.0.0.1');
    const b = tryIpToBytes('10.0.0.1');
    expect(a).toBeDefined();
    expect(a).not.toBe(b);
    expect(a!.equals(b!)).toBe(true);
  });
});

describe('broadcastAddress', () => {
  it('sets every host bit of the subnet the address is in', () => {
    expect(broadcastAddress('192.168.50.7', '255.255.255.0')).toBe('192.168.50.255');
    expect(broadcastAddress('10.1.2.3', '255.0.0.0')).toBe('10.255.255.255');
    expect(broadcastAddress('172.16.5.130', '255.255.255.128')).toBe('172.16.5.255');
    expect(broadcastAddress('172.16.5.100', '255.255.255.128')).toBe('172.16.5.127');
    expect(broadcastAddress('192.168.1.1', '255.255.255.255')).toBe('192.168.1.1');
    expect(broadcastAddress('192.168.1.1', '0.0.0.0')).toBe('255.255.255.255');
  });
});

describe('plainAddress', () => {
  it('strips the IPv4-mapped IPv6 prefix and leaves everything else alone', () => {
    expect(plainAddress('::ffff:192.168.50.7')).toBe('192.168.50.7');
    expect(plainAddress('192.168.50.7')).toBe('192.168.50.7');
    expect(plainAddress('fe80::1')).toBe('fe80::1');
  });
});
