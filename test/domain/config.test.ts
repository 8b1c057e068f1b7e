import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfigText, resolveConfig, parseDuration } from '../../src/domain/config.js';
import path from 'node:path';

describe('config', () => {
  it('has embedded defaults that run without any file or flag', () => {
    const c = resolveConfig({ data: '/tmp/nc-x' });
    expect(c.dataDir).toBe('/tmp/nc-x');
    expect(c.imagesDir).toBe('/tmp/nc-x/images');
    expect(c.nbdPort).toBe(10809);
    expect(c.dhcp).toBe('proxy');
    expect(c.keepVersions).toBe(3);
    expect(c.tftpPort).toBe(69);
  });

  it('parses key = value lines with comments, and flags win over the file', () => {
    const file = parseConfigText('# comment\n\nnbd-port = 1234   # trailing\ndhcp = off\nimages = /srv/img\n');
    const c = resolveConfig(file, { 'nbd-port': '4321', data: '/d' });
    expect(c.nbdPort).toBe(4321);
    expect(c.dhcp).toBe('off');
    expect(c.imagesDir).toBe(path.resolve('/srv/img'));
  });

  it('names the line of an unknown key or malformed line', () => {
    expect(() => parseConfigText('nbd-port = 1\nbogus = 2\n', 'f.conf')).toThrow(/f\.conf:2: unknown option "bogus"/);
    expect(() => parseConfigText('just words\n', 'f.conf')).toThrow(/f\.conf:1: expected "key = value"/);
  });

  it('rejects bad values instead of falling back to defaults', () => {
    expect(() => resolveConfig({ 'nbd-port': '70000' })).toThrow(ConfigError);
    expect(() => resolveConfig({ 'nbd-port': 'abc' })).toThrow(/not a port/);
    expect(() => resolveConfig({ dhcp: 'maybe' })).toThrow(/one of off, proxy, full/);
    expect(() => resolveConfig({ 'server-ip': '10.0.0.300' })).toThrow(/IPv4/);
    expect(() => resolveConfig({ dhcp: 'full' })).toThrow(/dhcp-range/);
    expect(() => resolveConfig({ dhcp: 'full', 'dhcp-range': '10.0.0.9-10.0.0.1' })).toThrow(/after end/);
    expect(() => resolveConfig({ 'keep-versions': '0' })).toThrow(/keep-versions/);
    expect(() => resolveConfig({ interface: 'eth0; rm -rf /' })).toThrow(/interface/);
    expect(() => resolveConfig({ 'tftp-busy-poll': 'sometimes' })).toThrow(/tftp-busy-poll.*yes or no/);
  });

  it('polls for TFTP ACKs by default; tftp-busy-poll = no turns it off', () => {
    expect(resolveConfig({}).tftpBusyPoll).toBe(true);
    expect(resolveConfig({ 'tftp-busy-poll': 'no' }).tftpBusyPoll).toBe(false);
  });

  it('boots x86-64 UEFI PCs with iPXE by default; uefi-boot = signed picks the signed chain, anything else is refused', () => {
    expect(resolveConfig().uefiBoot).toBe('ipxe');
    expect(resolveConfig(parseConfigText('uefi-boot = signed')).uefiBoot).toBe('signed');
    expect(() => resolveConfig({ 'uefi-boot': 'grub' })).toThrow(/uefi-boot: "grub" must be one of ipxe, signed/);
  });

  it('accepts a full-mode pool', () => {
    const c = resolveConfig({ dhcp: 'full', 'dhcp-range': '10.9.0.100-10.9.0.150', 'dhcp-dns': '10.9.0.1, 10.9.0.2', 'dhcp-router': '10.9.0.1' });
    expect(c.dhcpRange).toEqual({ start: '10.9.0.100', end: '10.9.0.150' });
    expect(c.dhcpDns).toEqual(['10.9.0.1', '10.9.0.2']);
  });

  it('parses durations', () => {
    expect(parseDuration('t', '90')).toBe(90);
    expect(parseDuration('t', '15m')).toBe(900);
    expect(parseDuration('t', '2h')).toBe(7200);
    expect(() => parseDuration('t', '0s')).toThrow();
    expect(() => parseDuration('t', '-5m')).toThrow();
    expect(() => parseDuration('t', '1y')).toThrow();
  });

  it('refuses a config file that is absurdly large', () => {
    expect(() => parseConfigText('#'.repeat(1_000_001))).toThrow(/larger than 1 MB/);
  });
});
