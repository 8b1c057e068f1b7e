import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot, runLib } from './helpers.js';
import { diskDigest } from '../lib/disk-digest.js';

const tmp = mkdtempSync(join(tmpdir(), 'ncclient-shell-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function put(path: string, content: string | Buffer): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
}

interface FakeDisk {
  name: string; devpath: string; sectors: number; removable?: boolean; lss?: number; pss?: number;
  rotational?: boolean; serialAttr?: string; deviceSerial?: string; vpdSerial?: string; model?: string;
}

/** Builds a sysfs-shaped tree: /block/NAME links into /devices/..., like the kernel's. */
function fakeSys(root: string, disks: FakeDisk[]): string {
  for (const d of disks) {
    const dev = join(root, 'devices', d.devpath, 'block', d.name);
    put(join(dev, 'size'), `${d.sectors}\n`);
    put(join(dev, 'removable'), d.removable ? '1\n' : '0\n');
    put(join(dev, 'queue', 'logical_block_size'), `${d.lss ?? 512}\n`);
    put(join(dev, 'queue', 'physical_block_size'), `${d.pss ?? d.lss ?? 512}\n`);
    put(join(dev, 'queue', 'rotational'), d.rotational ? '1\n' : '0\n');
    if (d.serialAttr !== undefined) put(join(dev, 'serial'), `${d.serialAttr}\n`);
    const parent = join(root, 'devices', d.devpath);
    mkdirSync(parent, { recursive: true });
    symlinkSync(relative(dev, parent), join(dev, 'device'));
    if (d.model !== undefined) put(join(parent, 'model'), `${d.model}   \n`);
    if (d.deviceSerial !== undefined) put(join(parent, 'serial'), `  ${d.deviceSerial}\n`);
    if (d.vpdSerial !== undefined) {
      put(join(parent, 'vpd_pg80'), Buffer.concat([Buffer.from([0, 0x80, 0, d.vpdSerial.length + 4]), Buffer.from(`    ${d.vpdSerial}`)]));
    }
    mkdirSync(join(root, 'block'), { recursive: true });
    symlinkSync(relative(join(root, 'block'), dev), join(root, 'block', d.name));
  }
  return root;
}

const virtio: FakeDisk = { name: 'vda', devpath: 'pci0000:00/0000:00:04.0/virtio1', sectors: 131072, serialAttr: 'XYZ123', rotational: true };
const sata: FakeDisk = { name: 'sda', devpath: 'pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0', sectors: 1953525168, vpdSerial: 'WD-WCC4N1234567', model: 'WDC WD10EZEX-08W', rotational: true };
const nvme: FakeDisk = { name: 'nvme0n1', devpath: 'pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0', sectors: 1000215216, deviceSerial: 'S4EWNX0N123456', model: 'Samsung SSD 970 EVO Plus 500GB' };
const usb: FakeDisk = { name: 'sdb', devpath: 'pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0', sectors: 62521344, vpdSerial: 'USB0001', model: 'Cruzer' };
const card: FakeDisk = { name: 'sdc', devpath: 'pci0000:00/0000:00:14.0/usb1/1-3/1-3:1.0/host7/target7:0:0/7:0:0:0', sectors: 0, removable: true };
const noise: FakeDisk[] = [
  { name: 'loop0', devpath: 'virtual', sectors: 2048 }, { name: 'ram0', devpath: 'virtual', sectors: 8192 },
  { name: 'sr0', devpath: 'pci0000:00/0000:00:01.1/ata2/host1/target1:0:0/1:0:0:0', sectors: 4096, removable: true },
  { name: 'zram0', devpath: 'virtual', sectors: 8192 }, { name: 'nbd0', devpath: 'virtual', sectors: 8192 },
];

let n = 0;
const tree = (disks: FakeDisk[]): string => fakeSys(join(tmp, `sys${n++}`), disks);

describe('disk discovery (disks.sh)', () => {
  it('lists whole disks and ignores ram, loop, optical, nbd, zram and empty readers', () => {
    const r = runLib('disk_list', { NC_SYS: tree([virtio, usb, card, ...noise]) });
    expect(r.stdout.split('\n').filter(Boolean).sort()).toEqual(['sdb', 'vda']);
  });

  it('derives transport, serial, model and sizes from sysfs', () => {
    const sys = tree([virtio, sata, nvme, usb]);
    const r = runLib('disks_json', { NC_SYS: sys });
    expect(r.status).toBe(0);
    const disks = JSON.parse(r.stdout) as Array<Record<string, unknown>>;
    const byName = Object.fromEntries(disks.map((d) => [d.name, d]));
    expect(byName.vda).toEqual({ name: 'vda', size: 131072 * 512, model: '', serial: 'XYZ123', logicalSectorSize: 512, physicalSectorSize: 512, rotational: true, removable: false, transport: 'virtio' });
    expect(byName.sda).toMatchObject({ transport: 'sata', serial: 'WD-WCC4N1234567', model: 'WDC WD10EZEX-08W', size: 1953525168 * 512 });
    expect(byName.nvme0n1).toMatchObject({ transport: 'nvme', serial: 'S4EWNX0N123456', rotational: false });
    expect(byName.sdb).toMatchObject({ transport: 'usb', serial: 'USB0001' });
  });
});

describe('target disk rule (choose_disk)', () => {
  it('takes the only internal disk, skipping USB and removable ones', () => {
    const r = runLib('choose_disk "" "" ""', { NC_SYS: tree([virtio, usb, card, ...noise]) });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('vda');
  });

  it('refuses when more than one internal disk is present and no serial is given', () => {
    const r = runLib('choose_disk "" "" ""', { NC_SYS: tree([sata, nvme, usb]) });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    // The message names exactly the two internal disks (the USB stick is not a candidate), in any order.
    const m = /^more than one internal disk \(([^)]*)\); set the disk serial in the task to choose one$/m.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    expect(m?.[1].split(' ').sort()).toEqual(['nvme0n1', 'sda']);
  });

  it('picks the disk with the task serial, even among several', () => {
    const sys = tree([sata, nvme, usb]);
    expect(runLib('choose_disk S4EWNX0N123456 "" ""', { NC_SYS: sys }).stdout.trim()).toBe('nvme0n1');
    expect(runLib('choose_disk WD-WCC4N1234567 "" ""', { NC_SYS: sys }).stdout.trim()).toBe('sda');
    const miss = runLib('choose_disk NOPE "" ""', { NC_SYS: sys });
    expect(miss.status).toBe(1);
    expect(miss.stderr).toContain("no disk has serial 'NOPE'");
  });

  it('refuses when no internal disk exists', () => {
    const r = runLib('choose_disk "" "" ""', { NC_SYS: tree([usb, ...noise]) });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('no internal disk found');
  });

  it('refuses a deploy onto a disk smaller than the image', () => {
    const sys = tree([virtio]);
    const ok = runLib(`choose_disk "" ${131072 * 512} 512`, { NC_SYS: sys });
    expect(ok.stdout.trim()).toBe('vda');
    const r = runLib(`choose_disk "" ${131072 * 512 + 512} 512`, { NC_SYS: sys });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('smaller than the image');
  });

  it('refuses a deploy onto a disk with another logical sector size', () => {
    const r = runLib('choose_disk "" 1048576 4096', { NC_SYS: tree([virtio]) });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('512-byte logical sectors but the image has 4096-byte sectors');
  });
});

describe('hardware report (hw.sh)', () => {
  it('builds valid JSON with DMI, disks and physical NICs only', () => {
    const sys = tree([virtio]);
    put(join(sys, 'class/dmi/id/sys_vendor'), 'Dell Inc.\n');
    put(join(sys, 'class/dmi/id/product_name'), 'OptiPlex "7010"\n');
    put(join(sys, 'class/dmi/id/product_serial'), 'ABC1234\n');
    put(join(sys, 'class/dmi/id/product_uuid'), '4c4c4544-0042-3410-8031-b4c04f313234\n');
    const nic = join(sys, 'devices/pci0000:00/0000:00:19.0/net/eno1');
    put(join(nic, 'address'), '00:11:22:33:44:55\n');
    put(join(nic, 'type'), '1\n');
    put(join(nic, 'speed'), '1000\n');
    put(join(sys, 'bus/pci/drivers/e1000e/.keep'), '');
    symlinkSync(relative(nic, join(sys, 'devices/pci0000:00/0000:00:19.0')), join(nic, 'device'));
    symlinkSync(relative(join(sys, 'devices/pci0000:00/0000:00:19.0'), join(sys, 'bus/pci/drivers/e1000e')), join(sys, 'devices/pci0000:00/0000:00:19.0/driver'));
    put(join(sys, 'devices/virtual/net/lo/type'), '772\n');
    mkdirSync(join(sys, 'class/net'), { recursive: true });
    symlinkSync(relative(join(sys, 'class/net'), nic), join(sys, 'class/net/eno1'));
    symlinkSync(relative(join(sys, 'class/net'), join(sys, 'devices/virtual/net/lo')), join(sys, 'class/net/lo'));
    const r = runLib('hardware_json', { NC_SYS: sys });
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      dmi: { vendor: 'Dell Inc.', model: 'OptiPlex "7010"', serial: 'ABC1234', uuid: '4c4c4544-0042-3410-8031-b4c04f313234' },
      disks: [{ name: 'vda', size: 67108864, model: '', serial: 'XYZ123', logicalSectorSize: 512, physicalSectorSize: 512, rotational: true, removable: false, transport: 'virtio' }],
      nics: [{ name: 'eno1', mac: '00:11:22:33:44:55', driver: 'e1000e', speed: 1000 }],
      // No /sys/firmware/efi: a BIOS PC, which has no Secure Boot.
      secureBoot: 'bios',
    });
  });

  it('reads Secure Boot from the SecureBoot EFI variable: its fifth byte, after the four attribute bytes', () => {
    const sys = tree([virtio]);
    const efivars = join(sys, 'firmware/efi/efivars');
    const variable = join(efivars, 'SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c');
    const secureBoot = (): unknown => (JSON.parse(runLib('hardware_json', { NC_SYS: sys }).stdout) as { secureBoot?: unknown }).secureBoot;
    mkdirSync(efivars, { recursive: true });
    // efivarfs not mounted (an empty directory): the state is unknown and left out of the report.
    expect(secureBoot()).toBeUndefined();
    put(join(efivars, 'Boot0000-8be4df61-93ca-11d2-aa0d-00e098032b8c'), Buffer.from([7, 0, 0, 0, 1]));
    // Mounted, but the firmware has no such variable (no Secure Boot support): off.
    expect(secureBoot()).toBe('off');
    put(variable, Buffer.from([6, 0, 0, 0, 1]));
    expect(secureBoot()).toBe('on');
    put(variable, Buffer.from([6, 0, 0, 0, 0]));
    expect(secureBoot()).toBe('off');
  });
});

describe('JSON helpers (json.sh)', () => {
  const task = '{"id":"t-42","kind":"deploy","image":"win \\"11\\" \\\\ base","diskSerial":null,"after":"poweroff",' +
    '"imageInfo":{"size":64424509440,"sectorSize":512,"chunkSize":4194304,"digest":"ab12"},"flag":true,"neg":-3}';
  const get = (key: string, json = task): { status: number | null; out: string } => {
    const r = runLib('json_get "$K" "$J"', { K: key, J: json });
    return { status: r.status, out: r.stdout };
  };

  it('extracts strings (with escapes), numbers, booleans and null from compact JSON', () => {
    expect(get('id')).toEqual({ status: 0, out: 't-42' });
    expect(get('kind').out).toBe('deploy');
    expect(get('image').out).toBe('win "11" \\ base');
    expect(get('diskSerial')).toEqual({ status: 0, out: '' });
    expect(get('flag').out).toBe('true');
    expect(get('neg').out).toBe('-3');
    expect(get('missing').status).toBe(1);
    expect(get('nbd', '{"nbd":"nbd://10.0.0.1:10809/capture-7"}').out).toBe('nbd://10.0.0.1:10809/capture-7');
    expect(get('message', '{"message":""}')).toEqual({ status: 0, out: '' });
  });

  it('extracts a nested flat object and its fields, not confusing size with chunkSize', () => {
    const r = runLib('o=$(json_object imageInfo "$J"); echo "$o"; json_get size "$o"; echo; json_get chunkSize "$o"', { J: task });
    expect(r.stdout.split('\n')).toEqual(['{"size":64424509440,"sectorSize":512,"chunkSize":4194304,"digest":"ab12"}', '64424509440', '4194304']);
    expect(runLib('json_object imageInfo "$J"', { J: '{"imageInfo":null}' }).stdout).toBe('');
  });

  it('escapes strings so the server can parse them', () => {
    const nasty = 'he said "no" \\ then\tleft\nnext line';
    const r = runLib('json_str "$V"', { V: nasty });
    expect(JSON.parse(r.stdout)).toBe(nasty);
  });
});

describe('read-back digest (image_digest)', () => {
  let file: string;
  let data: Buffer;
  beforeAll(() => {
    data = randomBytes(3 * 65536 + 12345);
    data.fill(0, 65536, 2 * 65536); // a zero chunk, like a hole deployed as zeroes
    file = join(tmp, 'disk.img');
    writeFileSync(file, data);
  });

  it('matches the definition for whole chunks and a shorter last chunk', () => {
    for (const [size, chunk] of [[data.length, 65536], [3 * 65536, 65536], [100000, 4096], [data.length, 4096], [data.length, 1 << 20]]) {
      const r = runLib(`image_digest "$F" ${size} ${chunk}`, { F: file });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout.trim()).toBe(diskDigest(data, size, chunk));
    }
  });

  it('rejects a bad chunk size', () => {
    const r = runLib('image_digest "$F" 100 0', { F: file });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('chunk size');
  });
});

describe('imaging agent run (nc_agent)', () => {
  let n = 0;
  /** Runs SCRIPT with nc_agent pointed at the fake agent; FAKE_* say how the fake behaves. */
  const withFakeAgent = (script: string, fake: Record<string, string>): ReturnType<typeof runLib> & { args: string[] } => {
    const dir = join(tmp, `agent${n++}`);
    mkdirSync(dir);
    const r = runLib(script, {
      NC_NODE: process.execPath, NC_AGENT: join(repoRoot, 'test', 'client', 'fixtures', 'fake-agent.mjs'),
      NC_AGENT_OUT: join(dir, 'out'), NC_AGENT_ERR: join(dir, 'err'), NC_SERVER: '10.0.0.1:8080', NC_TOKEN: 'tok-1',
      FAKE_AGENT_ARGS: join(dir, 'args.json'), ...fake,
    });
    return { ...r, args: JSON.parse(readFileSync(join(dir, 'args.json'), 'utf8')) as string[] };
  };
  const outcome = '{"ok":true,"digest":null,"examined":1048576,"sentChunks":1,"reusedChunks":0}';

  it('passes the contract\'s command line and keeps stdout (the outcome) apart from stderr (shown on the console)', () => {
    const r = withFakeAgent('nc_agent capture /dev/sda sda 1048576 512 "WD 1"; echo "rc=$?"; nc_agent_result', {
      FAKE_AGENT_STDERR: 'agent: PUT chunk 3 failed, retrying|agent: progress report not delivered', FAKE_AGENT_STDOUT: outcome,
    });
    expect(r.args).toEqual(['capture', '--server', 'http://10.0.0.1:8080', '--token', 'tok-1', '--disk', '/dev/sda', '--disk-name', 'sda',
      '--size', '1048576', '--sector-size', '512', '--serial', 'WD 1']);
    expect(r.stdout).toBe(`rc=0\n${outcome}\n`);
    // say() writes to stderr when no console is set up: each agent line reaches the technician as it comes.
    expect(r.stderr).toBe('netclone: agent: PUT chunk 3 failed, retrying\nnetclone: agent: progress report not delivered\n');
  });

  it('leaves --serial out when the disk has none', () => {
    const r = withFakeAgent('nc_agent deploy /dev/nvme0n1 nvme0n1 4096 4096 ""', { FAKE_AGENT_STDOUT: outcome });
    expect(r.status).toBe(0);
    expect(r.args).toEqual(['deploy', '--server', 'http://10.0.0.1:8080', '--token', 'tok-1', '--disk', '/dev/nvme0n1', '--disk-name', 'nvme0n1',
      '--size', '4096', '--sector-size', '4096']);
  });

  it('fails with the agent\'s exit status and gives its last stderr line as the reason', () => {
    const r = withFakeAgent('nc_agent capture /dev/sda sda 1048576 512 ""; echo "rc=$?"; nc_agent_error', {
      FAKE_AGENT_STDERR: 'agent: PUT chunk 3 failed, retrying|agent: commit refused: 2 chunks missing', FAKE_AGENT_EXIT: '1',
    });
    expect(r.stdout).toBe('rc=1\ncommit refused: 2 chunks missing');
  });

  it('says how the agent ended when it died without a reason', () => {
    const r = withFakeAgent('nc_agent capture /dev/sda sda 1048576 512 ""; echo "rc=$?"; nc_agent_error', { FAKE_AGENT_EXIT: '3', FAKE_AGENT_STDOUT: '' });
    expect(r.stdout).toBe('rc=1\nthe imaging agent exited with status 3 and gave no reason');
  });
});
