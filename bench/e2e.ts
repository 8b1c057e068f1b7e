/**
 * Boot and imaging timings in real VMs (QEMU under TCG), against the real `netclone serve` in a private
 * network namespace, with the real thin client (boot/dist). Built on the end-to-end test lab
 * (test/e2e/lab.ts): namespaces `nce2e-*`, every process killed by PID, namespaces deleted, also on failure.
 *
 * Each repetition:
 *   capture: a BIOS PC (SeaBIOS, e1000 iPXE ROM → undionly.kpxe → script → client) captures a 512 MiB
 *            disk with ~30 % data (half text-like, half random, the rest zeros) into image "bench";
 *   deploy:  a UEFI PC (OVMF q35, virtio-net without ROM → snponly.efi → script → client) deploys it
 *            onto a blank NVMe disk, which is then compared with the source.
 * Every repetition uses a new disk (new seed), so no capture dedups against the previous one.
 *
 * Times are from QEMU's spawn. "Client ready" = the server logged 'client fetched its task'. The transfer
 * time is the server's view of the NBD connection (attach → detach), i.e. nbdcopy's run as the server sees
 * it; task time is the task's startedAt → finishedAt (for deploy, it includes the client's read-back check).
 *
 * Under TCG every guest instruction is emulated: these numbers are 10–50× below real hardware, for
 * tracking regressions in the boot chain and the client, not for claims about real PCs.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, statSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { buildDisk, MiB } from '../test/e2e/disks.js';
import { artifactsDir, Lab, repoRoot, type NetcloneServer } from '../test/e2e/lab.js';
import { makeDisk, type DiskLayout } from './lib/disk.js';
import { fixed, mbps, median, table } from './lib/format.js';
import { machineInfo, type MachineInfo } from './lib/proc.js';
import { MILESTONE_ORDER, serverMarks, SerialWatch, type Firmware, type Mark } from './lib/vm-timeline.js';

export interface E2eBenchOptions {
  /** Repetitions of capture+deploy (default 2; NETCLONE_BENCH_E2E_REPS overrides). */
  readonly reps?: number;
  /** Disk size in MiB (default 512; NETCLONE_BENCH_E2E_MIB overrides). */
  readonly diskMiB?: number;
  readonly log?: (line: string) => void;
}

export interface TransferTimes {
  readonly diskSize: number;
  /** Non-zero bytes of the source disk as the generator wrote them. */
  readonly sourceDataBytes: number;
  /** The image version's dataBytes (1 MiB chunks that are not all zero). */
  readonly imageDataBytes: number;
  /** The task's result.bytesOnWire: data bytes only; zero runs (WRITE_ZEROES, holes) are not counted. */
  readonly bytesOnWire: number;
  /** Server's NBD attach → detach. */
  readonly nbdSeconds: number | null;
  /** Serial "capturing/deploying" → "capture done"/"verifying" as seen on the host. */
  readonly serialCopySeconds: number | null;
  /** Task startedAt (running) → finishedAt (done). */
  readonly taskSeconds: number | null;
  /** Deploy only: serial "verifying" → "verified" (the client's sha256 read-back). */
  readonly verifySeconds: number | null;
  /** diskSize / nbdSeconds, MB/s (10^6 bytes). */
  readonly diskMBps: number | null;
  /** bytesOnWire / nbdSeconds, MB/s. */
  readonly wireMBps: number | null;
}

export interface VmRun {
  readonly rep: number;
  readonly kind: 'capture' | 'deploy';
  readonly firmware: Firmware;
  /** Milestones in seconds after QEMU's spawn (null: not seen), server and serial merged in time order. */
  readonly milestones: ReadonlyArray<{ readonly name: string; readonly source: 'server' | 'serial'; readonly seconds: number | null }>;
  readonly clientReadySeconds: number | null;
  /** QEMU spawn → QEMU exit (the client reboots at the end; -no-reboot turns that into an exit). */
  readonly totalSeconds: number;
  readonly transfer: TransferTimes;
}

export interface E2eBenchResult {
  readonly date: string;
  readonly machine: MachineInfo & { readonly qemu: string };
  /** Sizes of the thin client served (boot/dist): boot time depends on them. */
  readonly client: { readonly vmlinuzBytes: number; readonly initrdBytes: number };
  readonly reps: number;
  readonly disk: Omit<DiskLayout, 'path' | 'ms' | 'sha256'>;
  readonly runs: VmRun[];
  /** Medians over repetitions: client-ready seconds per firmware, transfer MB/s per kind. */
  readonly biosReadyS: number;
  readonly uefiReadyS: number;
  readonly captureMBps: number;
  readonly deployMBps: number;
  readonly seconds: number;
}

interface TaskJson {
  id: string;
  state: string;
  reason: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  result: { version: number | null; digest: string | null; bytesOnWire: number } | null;
}

interface ImageJson {
  versions: Array<{ version: number; digest: string; dataBytes: number }>;
}

const SOURCE_MAC = '52:54:00:e2:be:01';
const TARGET_MAC = '52:54:00:e2:be:02';
const IMAGE = 'bench';
const VM_CAP_MS = 15 * 60_000;

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name}=${v}: expected a positive integer`);
  return n;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) h.update(chunk as Buffer);
  return h.digest('hex');
}

const secondsBetween = (a: number | null | undefined, b: number | null | undefined): number | null =>
  a == null || b == null ? null : (b - a) / 1000;

const markAt = (marks: readonly Mark[], name: string): number | null => marks.find((m) => m.name === name)?.at ?? null;

const isoMs = (s: string | null): number | null => (s ? Date.parse(s) : null);

/** Boots one VM with its disk, waits for it to finish its task and power off, and collects the timings. */
async function runVm(lab: Lab, server: NetcloneServer, rep: number, kind: 'capture' | 'deploy', diskPath: string, layout: DiskLayout, log: (l: string) => void): Promise<VmRun> {
  const firmware: Firmware = kind === 'capture' ? 'bios' : 'uefi';
  const mac = kind === 'capture' ? SOURCE_MAC : TARGET_MAC;
  const task = await lab.cliJson<TaskJson>(['task', kind, mac, '--image', IMAGE]);
  const mark = server.entries().length;
  const spawnedAt = Date.now();
  const vm = lab.startVm({
    name: `${kind}-${firmware}-${rep}`,
    firmware,
    mac,
    disk: kind === 'capture' ? { path: diskPath, bus: 'ahci', serial: 'NCBENCHSRC' } : { path: diskPath, bus: 'nvme', serial: 'NCBENCHTGT' },
  });
  const watch = new SerialWatch(() => vm.serial());
  let code: number | null;
  try {
    code = await vm.finished(VM_CAP_MS);
  } finally {
    await vm.kill();
  }
  const endedAt = Date.now();
  const serialMarks = watch.stop();
  const done = await lab.cliJson<TaskJson>(['task', 'show', task.id]);
  if (code !== 0 || done.state !== 'done') {
    throw new Error(`${kind} VM (${firmware}) exited ${code}, task ${done.state}${done.reason ? `: ${done.reason}` : ''}\n${vm.serial().slice(-3000)}`);
  }
  const sMarks = serverMarks(server.since(mark), mac, firmware);
  const all = [...sMarks, ...serialMarks]
    .map((m) => ({ name: m.name, source: m.source, seconds: m.at === null ? null : (m.at - spawnedAt) / 1000 }))
    .sort((a, b) => (a.seconds ?? Infinity) - (b.seconds ?? Infinity));

  const image = await lab.cliJson<ImageJson>(['image', 'show', IMAGE]);
  const version = image.versions.find((v) => v.version === done.result?.version);
  const nbdSeconds = secondsBetween(markAt(sMarks, 'NBD attached'), markAt(sMarks, 'NBD detached'));
  const bytesOnWire = done.result?.bytesOnWire ?? NaN;
  const transfer: TransferTimes = {
    diskSize: layout.size,
    sourceDataBytes: layout.textBytes + layout.randomBytes,
    imageDataBytes: version?.dataBytes ?? NaN,
    bytesOnWire,
    nbdSeconds,
    serialCopySeconds: secondsBetween(markAt(serialMarks, 'copy start'), markAt(serialMarks, 'copy end')),
    taskSeconds: secondsBetween(isoMs(done.startedAt), isoMs(done.finishedAt)),
    verifySeconds: kind === 'deploy' ? secondsBetween(markAt(serialMarks, 'copy end'), markAt(serialMarks, 'verified')) : null,
    diskMBps: nbdSeconds ? mbps(layout.size, nbdSeconds * 1000) : null,
    wireMBps: nbdSeconds ? mbps(bytesOnWire, nbdSeconds * 1000) : null,
  };
  const run: VmRun = {
    rep,
    kind,
    firmware,
    milestones: all,
    clientReadySeconds: all.find((m) => m.name === 'task fetched')?.seconds ?? null,
    totalSeconds: (endedAt - spawnedAt) / 1000,
    transfer,
  };
  log(`  ${kind} (${firmware}) rep ${rep}: client ready ${fixed(run.clientReadySeconds ?? NaN, 1)} s, NBD ${fixed(nbdSeconds ?? NaN, 1)} s` +
    ` (${fixed(transfer.diskMBps ?? NaN, 1)} MB/s of disk), ${fixed(bytesOnWire / MiB, 1)} MiB on the wire, VM total ${fixed(run.totalSeconds, 1)} s`);
  return run;
}

const rank = (name: string): number => {
  const i = MILESTONE_ORDER.indexOf(name);
  return i < 0 ? MILESTONE_ORDER.length : i;
};

const s1 = (x: number | null | undefined): string => (x == null ? '—' : x.toFixed(1));

function milestoneTable(runs: readonly VmRun[]): string {
  const names: string[] = [];
  for (const r of runs) for (const m of r.milestones) if (!names.includes(m.name)) names.push(m.name);
  names.sort((a, b) => rank(a) - rank(b));
  const header = ['milestone (s after QEMU spawn)', 'from', ...runs.map((r) => `${r.firmware} ${r.kind} #${r.rep}`)];
  const rows = names.map((n) => {
    const src = runs.flatMap((r) => r.milestones).find((m) => m.name === n)?.source ?? '';
    return [n, src, ...runs.map((r) => s1(r.milestones.find((m) => m.name === n)?.seconds))];
  });
  rows.push(['VM exit', 'host', ...runs.map((r) => s1(r.totalSeconds))]);
  return table(header, rows);
}

function transferTable(runs: readonly VmRun[]): string {
  const m = (b: number): string => (Number.isFinite(b) ? (b / MiB).toFixed(1) : '—');
  return table(
    ['run', 'disk MiB', 'source data MiB', 'image data MiB', 'on wire MiB', 'NBD s', 'disk MB/s', 'wire MB/s', 'serial copy s', 'task s', 'verify s'],
    runs.map((r) => {
      const t = r.transfer;
      return [`${r.firmware} ${r.kind} #${r.rep}`, m(t.diskSize), m(t.sourceDataBytes), m(t.imageDataBytes), m(t.bytesOnWire), s1(t.nbdSeconds),
        s1(t.diskMBps), s1(t.wireMBps), s1(t.serialCopySeconds), s1(t.taskSeconds), s1(t.verifySeconds)];
    }),
  );
}

function qemuVersion(): string {
  try {
    return execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0].trim();
  } catch {
    return 'qemu-system-x86_64 not installed';
  }
}

export async function benchE2e(opts: E2eBenchOptions = {}): Promise<E2eBenchResult> {
  const reps = opts.reps ?? envInt('NETCLONE_BENCH_E2E_REPS') ?? 2;
  const size = (opts.diskMiB ?? envInt('NETCLONE_BENCH_E2E_MIB') ?? 512) * MiB;
  const log = opts.log ?? ((l: string): void => console.log(l));
  const t0 = performance.now();
  const date = new Date().toISOString();
  const machine = { ...machineInfo(), qemu: qemuVersion() };
  const dist = join(repoRoot, 'boot', 'dist');
  const clientSizes = { vmlinuzBytes: statSync(join(dist, 'vmlinuz')).size, initrdBytes: statSync(join(dist, 'initrd.img')).size };
  const client = `vmlinuz ${fixed(clientSizes.vmlinuzBytes / 1e6, 1)} MB, initrd ${fixed(clientSizes.initrdBytes / 1e6, 1)} MB`;
  log(`VM boot and imaging under TCG: ${reps} repetition(s), ${size / MiB} MiB disk; one VM at a time`);

  const lab = await Lab.create('bench-e2e');
  // Ctrl-C must not leave namespaces and VMs behind: close the lab, then leave.
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: stopping the VMs and the server, deleting the namespace`);
    void lab.close().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const runs: VmRun[] = [];
  let layout: DiskLayout | undefined;
  try {
    const server = await lab.startServer('full', 'server', ['--menu-timeout', '2']);
    await lab.cliJson(['host', 'add', SOURCE_MAC]);
    for (let rep = 1; rep <= reps; rep++) {
      const source = join(lab.tmp, 'source.raw');
      await rm(source, { force: true });
      layout = await makeDisk(source, { size, zeroFraction: 0.7, textFraction: 0.15, seed: 20250700 + rep });
      log(`  rep ${rep}: source disk ${size / MiB} MiB, ${fixed((layout.textBytes + layout.randomBytes) / MiB, 0)} MiB data ` +
        `(${fixed(layout.textBytes / MiB, 0)} text, ${fixed(layout.randomBytes / MiB, 0)} random), ${layout.extents} extents`);
      runs.push(await runVm(lab, server, rep, 'capture', source, layout, log));

      const target = join(lab.tmp, 'target.raw');
      await rm(target, { force: true });
      buildDisk(target, size);
      runs.push(await runVm(lab, server, rep, 'deploy', target, layout, log));
      const got = await sha256File(target);
      if (got !== layout.sha256) throw new Error(`deployed disk differs from the source (sha256 ${got}, expected ${layout.sha256})`);
      await rm(target, { force: true });
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await lab.close();
  }

  const pick = (kind: 'capture' | 'deploy'): VmRun[] => runs.filter((r) => r.kind === kind);
  const med = (xs: ReadonlyArray<number | null>): number => median(xs.filter((x): x is number => x !== null));
  const result: E2eBenchResult = {
    date,
    machine,
    client: clientSizes,
    reps,
    disk: layout
      ? { size: layout.size, zeroBytes: layout.zeroBytes, textBytes: layout.textBytes, randomBytes: layout.randomBytes, extents: layout.extents }
      : { size, zeroBytes: NaN, textBytes: NaN, randomBytes: NaN, extents: NaN },
    runs,
    biosReadyS: med(pick('capture').map((r) => r.clientReadySeconds)),
    uefiReadyS: med(pick('deploy').map((r) => r.clientReadySeconds)),
    captureMBps: med(pick('capture').map((r) => r.transfer.diskMBps)),
    deployMBps: med(pick('deploy').map((r) => r.transfer.diskMBps)),
    seconds: (performance.now() - t0) / 1000,
  };
  log('');
  log(milestoneTable(runs));
  log('');
  log(transferTable(runs));
  log('');
  log(`client ready (median): BIOS ${fixed(result.biosReadyS, 1)} s, UEFI ${fixed(result.uefiReadyS, 1)} s; ` +
    `capture ${fixed(result.captureMBps, 1)} MB/s, deploy ${fixed(result.deployMBps, 1)} MB/s of disk (NBD attach → detach)`);
  const resultsFile = join(artifactsDir, 'bench-e2e.results.json');
  writeFileSync(resultsFile, `${JSON.stringify(result, null, 2)}\n`);
  log(`machine: ${machine.cores} cores, ${machine.cpuModel}, ${machine.qemu}; client: ${client}`);
  log(`logs and serial consoles: test-artifacts/e2e/bench-e2e.*.log; results: ${resultsFile}`);
  return result;
}

export function summarizeE2e(r: E2eBenchResult): string {
  return `ready BIOS ${fixed(r.biosReadyS, 1)} s, UEFI ${fixed(r.uefiReadyS, 1)} s; capture ${fixed(r.captureMBps, 1)} MB/s, deploy ${fixed(r.deployMBps, 1)} MB/s (TCG)`;
}
