import { describe, expect, it } from 'vitest';
import { plainAddress } from '../../src/lib/ipv4.js';

describe('plainAddress', () => {
  it('turns IPv4-mapped IPv6 into IPv4 and leaves other addresses alone', () => {
    expect(plainAddress('::ffff:10.0.0.5')).toBe('10.0.0.5');
    expect(plainAddress('10.0.0.5')).toBe('10.0.0.5');
    expect(plainAddress('fd00::5')).toBe('fd00::5');
    expect(plainAddress('::1')).toBe('::1');
  });
});
