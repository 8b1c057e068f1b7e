/**
 * A PC whose deploy started writing its disk and did not finish is never sent to that disk on its
 * own: the boot policy says "unfinished", and the script for it says what happened, offers the
 * deploy again, and boots the disk only when a technician picks that item.
 */
import { describe, expect, it } from 'vitest';
import { decideBoot } from '../../src/domain/boot-policy.js';
import { scriptUnfinishedDeploy } from '../../src/pxe/ipxe-script.js';
import type { AddressCheck } from '../../src/domain/boot-addresses.js';
import type { HostRecord, TaskRecord } from '../../src/domain/database.js';
import { lintIpxe } from '../lib/ipxe-lint.js';

const host: HostRecord = {
  mac: '52:54:00:12:34:56', name: 'Desk 4', ip: null, firmware: 'bios', arch: null, vendorClass: null,
  firstSeen: '', lastSeen: '', registered: true, hardware: null, assignedImage: null, localBoot: null, efiLoader: 'snponly.efi',
};
const task = (kind: TaskRecord['kind'], state: TaskRecord['state'], started: boolean): TaskRecord => ({
  id: `t-${kind}-${state}`, kind, mac: host.mac, image: 'win11', state, createdAt: '', updatedAt: '',
  startedAt: started ? '2026-01-01T00:00:00.000Z' : null, finishedAt: null,
  reason: state === 'failed' ? 'the PC stopped responding: no word from its imaging client for 121 s during the transfer' : null,
  diskSerial: null, after: 'reboot', tokenHash: '', clientIp: null, disk: null,
  progress: { bytes: 0, total: 0, percent: 0, mbps: 0, etaSeconds: null }, result: null, log: [],
});
const opts = { defaultLocalBoot: 'exit' as const, biosUndionlyHop: true };
const req = { platform: 'efi' as const, chip: null, address: { confirmed: true } as AddressCheck };
const ctx = { httpBase: '10.0.0.1:8080', mac: host.mac, menuTimeoutSeconds: 10 };

describe('boot policy after a deploy that did not finish', () => {
  it('does not send the PC to its disk after a failed or cancelled deploy that had started', () => {
    for (const state of ['failed', 'cancelled'] as const) {
      const last = task('deploy', state, true);
      expect(decideBoot(host, undefined, req, opts, last)).toMatchObject({ kind: 'unfinished', deploy: last, active: false });
    }
  });

  it('does not send a PC that restarts during its deploy to its disk, but does during a capture', () => {
    const running = task('deploy', 'running', true);
    expect(decideBoot(host, running, req, opts, running)).toMatchObject({ kind: 'unfinished', active: true });
    expect(decideBoot(host, task('deploy', 'verifying', true), req, opts)).toMatchObject({ kind: 'unfinished', active: true });
    expect(decideBoot(host, task('capture', 'running', true), req, opts).kind).toBe('local');
  });

  it('gives the normal menu after a finished deploy or one that never touched the disk, and boots a new task', () => {
    expect(decideBoot(host, undefined, req, opts, task('deploy', 'done', true)).kind).toBe('menu');
    expect(decideBoot(host, undefined, req, opts, undefined).kind).toBe('menu');
    expect(decideBoot(host, task('deploy', 'queued', false), req, opts, task('deploy', 'failed', true)).kind).toBe('client');
  });
});

describe('the unfinished-deploy script', () => {
  const chooseLine = (script: string): string => script.split('\n').find((l) => l.startsWith('choose')) ?? '';

  it('says what happened, offers the deploy again, and boots the disk only when picked', () => {
    const script = scriptUnfinishedDeploy(ctx, 'sanboot', host, task('deploy', 'failed', true), false);
    expect(lintIpxe(script)).toEqual([]);
    expect(script).toContain('did not finish (failed)');
    expect(script).toContain('the PC stopped responding');
    expect(script).toMatch(/item retry +Deploy win11 again/);
    expect(script).toContain('param image win11');
    // No timeout, and the default asks the server again; the disk is its own label, reached by choice only.
    expect(chooseLine(script)).toBe('choose --default local selected || goto local');
    const lines = script.split('\n');
    const local = lines.indexOf(':local');
    const disk = lines.indexOf(':disk');
    expect(lines.slice(local, disk).join('\n')).toMatch(/^:local\necho [^\n]*\nchain http:\/\/10\.0\.0\.1:8080\/boot\/ipxe\?mac=/);
    expect(lines.slice(disk)).toContain('sanboot --no-describe --drive 0x80 || exit');
    expect(lines.filter((l) => /\bgoto disk\b/.test(l))).toEqual([]);
    expect(lines.slice(0, disk).some((l) => /^(sanboot|exit)\b/.test(l))).toBe(false);
  });

  it('while the server still counts the deploy as running, offers no retry and tells how it ends', () => {
    const script = scriptUnfinishedDeploy(ctx, 'exit', host, task('deploy', 'running', true), true);
    expect(lintIpxe(script)).toEqual([]);
    expect(script).toContain('still running on the server');
    expect(script).not.toContain('item retry');
    expect(chooseLine(script)).toBe('choose --default local selected || goto local');
  });
});
