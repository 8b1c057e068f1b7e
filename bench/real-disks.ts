/**
 * `npm run bench -- real-disks`: issue 12's measure. A Windows-like GPT disk (ESP FAT32, MSR, NTFS C:,
 * NTFS Recovery; test/lib/real-disks.ts) of BENCH_REAL_MIB MiB (4096 by default) with 10 % of it in
 * files on C: and every byte of free space random (a used PC's), against a whole appliance in a
 * child process, the agent compiled as the initramfs ships it and run on the host against files (it
 * reaches the partitions through read-only loop devices, so this bench runs as root):
 *  1. capture with --whole-disk (today's zero-skipping capture: the reference) and the default capture
 *     (used blocks from partclone's domain maps), into two images so that neither's chunks count as
 *     known to the other: bytes read from the disk (the agent's readBytes), bytes on the wire (the
 *     task's bytesOnWire), stored bytes (the store's unique chunk bytes of the image), wall time;
 *  2. deploy of the used-block version onto dirty disks (random bytes, no table) of the same size,
 *     1.5× larger (C: grows, Recovery moves to the end) and 0.75× smaller (the server first derives a
 *     fitted version: its time is the wait until the task's "fitted to it" note, and the difference
 *     to a second deploy onto another dirty disk of that size, which reuses the fitted version).
 * Each deployed disk is checked with checkDisk (sgdisk -v, fsck, every file, GUIDs and UUIDs) after
 * the timed runs. Temporary files live in one directory under the system's tmp (removed at the end,
 * also on failure); loop devices left on its files by a killed agent are detached.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { start, type RunResult, type Running } from '../test/lib/run.js';
import { buildTargetDisk, buildWindowsDisk, checkDisk, type BuiltDisk } from '../test/lib/real-disks.js';
import { ImageStore, type StoredImage } from '../src/imaging/image-store.js';
import { planRestore } from '../src/imaging/layout-plan.js';
import type { DiskLayout } from '../src/imaging/disk-layout.js';
import { nullLogger } from '../src/lib/log.js';
import { buildAgent } from './lib/agent-build.js';
import { ApplianceChild } from './lib/appliance-host.js';
import type { TaskView } from './lib/appliance-protocol.js';
import { fixed, table } from './lib/format.js';
import { cpuSeconds, machineInfo, sampleProcess, type MachineInfo } from './lib/proc.js';
import { bootToken, LOOPBACK_CLIENT, postResult } from './lib/thin-client.js';

const MiB = 1024 * 1024;
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const SEED = 1204;
const IMAGE_WHOLE = 'win-whole';
const IMAGE_USED = 'win-used';

/** The agent's result line (src/agent/run.ts). */
interface AgentLine {
  readonly digest: string | null;
  readonly examined: number;
  readonly readBytes: number;
  readonly freeChunks: number;
  readonly sentChunks: number;
  readonly reusedChunks: number;
}

/** One agent run through its task. */
export interface AgentRun {
  readonly what: string;
  readonly image: string;
  readonly diskBytes: number;
  readonly line: AgentLine;
  /** The task's bytesOnWire (the server's count of chunk-route bodies). */
  readonly wireBytes: number;
  /** Agent start to its exit (a capture commits before it exits; a deploy includes the read-back and the table and resize). */
  readonly ms: number;
  /** Agent start to the task's "… fitted to it …" note: the wait for the server's fitted version (deploys onto a smaller disk). */
  readonly fitWaitMs: number | null;
  /** When the agent was first answered "preparing" (ms since the epoch): the server's fit started just before. */
  readonly firstPreparingAt: number | null;
  /** Timed steps from the task log and the agent's stderr, in seconds from the agent's start. */
  readonly steps: readonly { readonly atS: number; readonly message: string }[];
  readonly serverCpuSeconds: number;
  /** The agent's node process (all threads); the tools it runs (partclone, ntfsresize, losetup) are not counted. */
  readonly agentCpuSeconds: number;
  /** Which image the deploy actually sent (the fitted one onto a smaller disk). */
  readonly deployedImage: string;
}

export interface RealDisksResult {
  readonly date: string;
  readonly machine: MachineInfo;
  /** 1-minute load average: before, and min / max over samples every 5 s during the timed runs. */
  readonly load: { readonly before: number; readonly min: number; readonly max: number; readonly mean: number };
  readonly disk: { readonly size: number; readonly fileBytes: number; readonly buildSeconds: number };
  readonly layout: DiskLayout;
  readonly whole: AgentRun & { readonly stored: StoredImage };
  readonly used: AgentRun & { readonly stored: StoredImage };
  readonly deploys: readonly (AgentRun & { readonly targetBytes: number })[];
  readonly fittedStored: StoredImage | null;
  /** First "preparing" answer to the fitted version's commit time (its manifest's created): the server's fit. */
  readonly fitMs: number | null;
  readonly checked: readonly string[];
  readonly seconds: number;
}

const loadNow = (): number => Number(readFileSync('/proc/loadavg', 'latin1').split(' ')[0]);

/** Samples the 1-minute load every 5 s until stop(). */
function sampleLoad(): { stop(): { min: number; max: number; mean: number } } {
  const xs = [loadNow()];
  const timer = setInterval(() => xs.push(loadNow()), 5000);
  return {
    stop: () => {
      clearInterval(timer);
      xs.push(loadNow());
      return { min: Math.min(...xs), max: Math.max(...xs), mean: xs.reduce((a, b) => a + b, 0) / xs.length };
    },
  };
}

/** Agents started and not yet seen exiting: killed by PID if the bench fails midway. */
const live = new Set<Running>();

function killLive(): void {
  for (const r of live) if (!r.exited() && r.proc.pid !== undefined) process.kill(r.proc.pid, 'SIGKILL');
}

/** Loop devices still attached to files under `dir` (the agent detaches its own; a killed one cannot). */
function detachLoops(dir: string): string[] {
  let listing: string;
  try {
    listing = execFileSync('losetup', ['-a'], { encoding: 'utf8' });
  } catch {
    return [];
  }
  const detached: string[] = [];
  for (const line of listing.split('\n')) {
    const m = /^(\/dev\/loop\d+):.*\((.*)\)/.exec(line);
    if (!m || !m[2].startsWith(dir)) continue;
    try {
      execFileSync('losetup', ['-d', m[1]]);
      detached.push(m[1]);
    } catch (err) {
      console.error(`real-disks: could not detach ${m[1]} (${m[2]}): ${(err as Error).message}; detach it by hand`);
    }
  }
  return detached;
}

/**
 * Drops the file's pages from the page cache (posix_fadvise DONTNEED through dd), so a capture reads the
 * disk file from the device rather than from the memory its build just wrote; other files are not touched.
 */
function evictFromCache(path: string): void {
  execFileSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
}

class Bench {
  constructor(
    readonly server: ApplianceChild,
    readonly agentMain: string,
    readonly verbose: boolean,
  ) {}

  /** One agent run: task queued, token from the boot script, the agent against `disk`, then result; timed from the agent's start to its exit. */
  async agent(what: string, mode: 'capture' | 'deploy', image: string, disk: string, diskBytes: number, extra: readonly string[] = []): Promise<AgentRun> {
    const task = await this.server.queue(mode, image, 'chunks', LOOPBACK_CLIENT.ip);
    const token = await bootToken(LOOPBACK_CLIENT, this.server.base, task.mac);
    const args = [this.agentMain, mode, '--server', this.server.base, '--token', token, '--disk', disk, '--disk-name', 'sda', '--serial', 'BENCH', ...extra];
    execFileSync('sync', ['-f', disk]);
    evictFromCache(disk);
    const sampler = sampleProcess(this.server.pid);
    const startedAt = Date.now();
    const t0 = performance.now();
    const r = start(process.execPath, args, { cwd: ROOT, timeoutMs: 4 * 3600_000 });
    live.add(r);
    let agentCpu = 0;
    const cpuTimer = setInterval(() => {
      const now = r.proc.pid === undefined ? NaN : cpuSeconds(r.proc.pid);
      if (Number.isFinite(now)) agentCpu = now;
    }, 50);
    // The agent's own steps (table rewritten, filesystem grown, start answered 503 while the server fits), timed as they arrive.
    const said: Array<{ at: number; message: string }> = [];
    r.proc.stderr?.on('data', (d: Buffer) => {
      const at = Date.now();
      for (const message of d.toString().split('\n').filter((l) => l.trim() !== '')) said.push({ at, message });
      if (this.verbose) process.stdout.write(d.toString().replace(/^(?=.)/gm, `  [${fixed((performance.now() - t0) / 1000, 1)} s] `));
    });
    let res: RunResult;
    let serverCpu: number;
    try {
      res = await r.result;
    } finally {
      clearInterval(cpuTimer);
      live.delete(r);
      serverCpu = sampler.stop().cpuSeconds;
    }
    const ms = performance.now() - t0;
    if (res.code !== 0) throw new Error(`${what}: the agent failed (exit ${res.code ?? res.signal}): ${res.stderr.trim().split('\n').slice(-3).join(' / ')}`);
    const line = JSON.parse(res.stdout.trim().split('\n').pop() as string) as AgentLine;
    const answer = await postResult(LOOPBACK_CLIENT, this.server.base, token, line.digest);
    if (answer.state !== 'done') throw new Error(`${what}: result answered ${answer.state}: ${answer.reason ?? ''}`);
    const done: TaskView = await this.server.task(task.id);
    if (done.state !== 'done') throw new Error(`${what}: the task ended ${done.state}: ${done.reason ?? ''}`);
    const fitted = done.log.find((l) => / fitted to it from /.test(l.message));
    const deployedImage = fitted ? (/deploying (\S+) version/.exec(fitted.message)?.[1] ?? image) : image;
    return {
      what,
      image,
      diskBytes,
      line,
      wireBytes: done.result?.bytesOnWire ?? NaN,
      ms,
      fitWaitMs: fitted ? Date.parse(fitted.at) - startedAt : null,
      firstPreparingAt: said.find((l) => /start: preparing /.test(l.message))?.at ?? null,
      steps: [
        ...done.log.filter((l) => Date.parse(l.at) >= startedAt - 1000).map((l) => ({ at: Date.parse(l.at), message: l.message })),
        ...said.map((l) => ({ at: l.at, message: l.message.replace(/ fitted to this \d+-byte disk \((.*?)\); the imaging client asks again; asking again in .*$/, ' fitted ($1)') })),
      ]
        .sort((a, b) => a.at - b.at)
        .map((l) => ({ atS: (l.at - startedAt) / 1000, message: l.message })),
      serverCpuSeconds: serverCpu,
      agentCpuSeconds: agentCpu,
      deployedImage,
    };
  }
}

/** Where checkDisk finds each partition after a restore of `layout` onto `targetSize` bytes (as the agent's plan puts them). */
function placementFor(layout: DiskLayout, targetSize: number): Map<number, { startBytes: number; sizeBytes: number }> {
  return new Map(planRestore(layout, targetSize).partitions.map((p) => [p.index, { startBytes: p.toStart, sizeBytes: p.toSize }]));
}

export async function benchRealDisks(): Promise<RealDisksResult> {
  const began = performance.now();
  if (process.getuid?.() !== 0) throw new Error('the agent reaches the partitions of disk files through loop devices: run this bench as root');
  const sizeMiB = Number(process.env.BENCH_REAL_MIB) || 4096;
  const verbose = process.env.BENCH_REAL_VERBOSE === '1';
  const size = sizeMiB * MiB;
  const targets = [
    { what: 'deploy onto the same size', sizeMiB, seed: 71 },
    { what: 'deploy onto a larger disk (1.5×)', sizeMiB: Math.round(sizeMiB * 1.5), seed: 72 },
    { what: 'deploy onto a smaller disk (0.75×): fit + deploy', sizeMiB: Math.round(sizeMiB * 0.75), seed: 73 },
    { what: 'again onto a smaller disk: fitted version reused', sizeMiB: Math.round(sizeMiB * 0.75), seed: 74 },
  ];
  const log = (line: string): void => console.log(`real-disks: ${line}`);
  const machine = machineInfo();
  const loadBefore = loadNow();
  log(`${machine.cores} cores, ${machine.cpuModel}, node ${machine.node}, kernel ${machine.kernel}, load ${loadBefore}`);

  const dir = await mkdtemp(join(tmpdir(), 'netclone-bench-real-disks-'));
  const dataDir = join(dir, 'appliance');
  let server: ApplianceChild | null = null;
  let store: ImageStore | null = null;
  try {
    const agentMain = await buildAgent(join(dir, 'agent-build'));
    const b0 = performance.now();
    const built: BuiltDisk = await buildWindowsDisk(dir, { sizeMiB, seed: SEED, dataMiB: Math.round(sizeMiB / 10) });
    const buildSeconds = (performance.now() - b0) / 1000;
    log(`built a ${sizeMiB} MiB GPT disk, ${fixed(built.usedBytes / MiB)} MiB in files, free space random, in ${fixed(buildSeconds, 1)} s`);
    const targetPaths: string[] = [];
    for (const t of targets) targetPaths.push(await buildTargetDisk(dir, { sizeMiB: t.sizeMiB, seed: t.seed }));
    log(`built dirty target disks of ${targets.map((t) => `${t.sizeMiB}`).join(', ')} MiB`);

    server = await ApplianceChild.start({ dataDir, listen: '127.0.0.1' });
    const bench = new Bench(server, agentMain, verbose);
    const load = sampleLoad();
    const whole = await bench.agent('capture --whole-disk (zero-skipping, today)', 'capture', IMAGE_WHOLE, built.path, size, ['--whole-disk']);
    log(`whole-disk capture: read ${fixed(whole.line.readBytes / MiB)} MiB, ${fixed(whole.wireBytes / MiB)} MiB on the wire, ${fixed(whole.ms / 1000, 1)} s`);
    const used = await bench.agent('capture of used blocks (default)', 'capture', IMAGE_USED, built.path, size);
    log(`used-block capture: read ${fixed(used.line.readBytes / MiB)} MiB, ${fixed(used.wireBytes / MiB)} MiB on the wire, ${fixed(used.ms / 1000, 1)} s`);
    const deploys: Array<AgentRun & { targetBytes: number }> = [];
    for (const [i, t] of targets.entries()) {
      const d = await bench.agent(t.what, 'deploy', IMAGE_USED, targetPaths[i], t.sizeMiB * MiB);
      deploys.push({ ...d, targetBytes: t.sizeMiB * MiB });
      log(`${t.what} (${t.sizeMiB} MiB): ${fixed(d.wireBytes / MiB)} MiB on the wire, ${fixed(d.ms / 1000, 1)} s${d.fitWaitMs === null ? '' : ` (${fixed(d.fitWaitMs / 1000, 1)} s until the fitted version was ready)`}`);
    }
    const loadDuring = load.stop();
    await server.stop();
    server = null;

    // The appliance has stopped: the store is read here (stored bytes, the layout the deploys were planned from).
    store = await ImageStore.open(join(dataDir, 'images'), { logger: nullLogger() });
    const layout = await store.layout(IMAGE_USED);
    if (!layout) throw new Error(`the used-block capture kept no disk layout for ${IMAGE_USED}`);
    const firstFitted = deploys.find((d) => d.deployedImage !== IMAGE_USED) ?? null;
    const fittedStored = firstFitted ? await store.show(firstFitted.deployedImage) : null;
    const fitStart = firstFitted?.firstPreparingAt ?? null;
    const result: RealDisksResult = {
      date: new Date().toISOString(),
      machine,
      load: { before: loadBefore, ...loadDuring },
      disk: { size, fileBytes: built.usedBytes, buildSeconds },
      layout,
      whole: { ...whole, stored: await store.show(IMAGE_WHOLE) },
      used: { ...used, stored: await store.show(IMAGE_USED) },
      deploys,
      fittedStored,
      fitMs: fittedStored && fitStart !== null ? Date.parse(fittedStored.versions[0].created) - fitStart : null,
      checked: [],
      seconds: 0,
    };
    await store.close();
    store = null;
    console.log(formatRealDisks(result));

    // Correctness of what was measured, outside the timed part.
    const checked: string[] = [];
    for (const [i, d] of deploys.entries()) {
      await checkDisk(targetPaths[i], built, d.targetBytes === size ? {} : { placement: placementFor(layout, d.targetBytes) });
      checked.push(`${d.what}: checkDisk clean (sgdisk -v, fsck, every file, GUIDs/UUIDs)`);
      log(checked[checked.length - 1]);
      await rm(targetPaths[i], { force: true });
    }
    return { ...result, checked, seconds: (performance.now() - began) / 1000 };
  } finally {
    killLive();
    await server?.stop().catch(() => server?.kill());
    await store?.close().catch(() => undefined);
    const left = detachLoops(dir);
    if (left.length > 0) console.error(`real-disks: detached loop devices left on the bench's files: ${left.join(', ')}`);
    await rm(dir, { recursive: true, force: true });
  }
}

const mb = (bytes: number): string => fixed(bytes / 1e6, 1);
const s = (ms: number | null): string => (ms === null ? '—' : fixed(ms / 1000, 1));
const ratio = (b: number, a: number): string => `${fixed((100 * b) / a, 1)} %`;

export function formatRealDisks(r: RealDisksResult): string {
  const { whole, used } = r;
  const parts = [
    `Disk ${r.disk.size / MiB} MiB GPT (ESP FAT32, MSR, NTFS C:, NTFS Recovery), ${mb(r.disk.fileBytes)} MB in files, free space random; ` +
      `load (1 min) ${r.load.before} before, ${fixed(r.load.min, 1)}-${fixed(r.load.max, 1)} (mean ${fixed(r.load.mean, 1)}) during the runs`,
    table(
      ['partition', 'filesystem', 'size MB', 'used MB', 'can shrink to MB', 'captured as'],
      r.layout.partitions.map((p) => [
        `${p.index} ${p.name || p.label || ''}`.trim(),
        p.filesystem || '—',
        mb(p.sizeBytes),
        p.usedBytes === null ? '—' : mb(p.usedBytes),
        p.minSizeBytes === null ? '—' : mb(p.minSizeBytes),
        p.note ? `${p.mode}: ${p.note}` : p.mode,
      ]),
    ),
    table(
      ['capture', 'read from disk MB', 'wire MB', 'stored MB', 'time s', 'free chunks', 'sent chunks', 'server CPU s', 'agent CPU s'],
      [whole, used].map((c) => [c.what, mb(c.line.readBytes), mb(c.wireBytes), mb(c.stored.storedBytes), s(c.ms), String(c.line.freeChunks), String(c.line.sentChunks), fixed(c.serverCpuSeconds, 1), fixed(c.agentCpuSeconds, 1)]),
    ),
    `used blocks / whole disk: read ${ratio(used.line.readBytes, whole.line.readBytes)}, wire ${ratio(used.wireBytes, whole.wireBytes)}, stored ${ratio(used.stored.storedBytes, whole.stored.storedBytes)}, time ${ratio(used.ms, whole.ms)}`,
    table(
      ['deploy of the used-block version', 'target MB', 'image sent', 'wire MB', 'time s', 'fit wait s', 'free chunks', 'server CPU s', 'agent CPU s'],
      r.deploys.map((d) => [d.what, mb(d.targetBytes), d.deployedImage, mb(d.wireBytes), s(d.ms), s(d.fitWaitMs), String(d.line.freeChunks), fixed(d.serverCpuSeconds, 1), fixed(d.agentCpuSeconds, 1)]),
    ),
  ];
  const [fitFirst, fitAgain] = r.deploys.slice(2);
  if (fitFirst && fitAgain) {
    parts.push(
      `fit on the server: ${s(r.fitMs)} s from the first "preparing" answer to the fitted version's commit; ${s(fitFirst.ms - fitAgain.ms)} s = first deploy onto the smaller size minus the second ` +
        `(which reuses the fitted version, after one 503 and a ${s(fitAgain.fitWaitMs)} s wait: the agent asks every 5 s); the fitted version stores ${r.fittedStored ? mb(r.fittedStored.storedBytes) : '—'} MB`,
    );
  }
  parts.push(
    'steps (seconds from the agent start; the task log and the agent’s stderr):',
    ...[whole, used, ...r.deploys].map((run) => `- ${run.what}: ${run.steps.map((st) => `${fixed(st.atS, 1)} ${st.message}`).join(' | ')}`),
  );
  return parts.join('\n\n');
}

/** One line for the driver's summary table. */
export function summarizeRealDisks(r: RealDisksResult): string {
  const [same, larger, smaller] = r.deploys;
  return [
    `capture read ${ratio(r.used.line.readBytes, r.whole.line.readBytes)}, wire ${ratio(r.used.wireBytes, r.whole.wireBytes)}, time ${ratio(r.used.ms, r.whole.ms)} of the whole-disk capture`,
    `deploy same/larger/smaller ${s(same.ms)}/${s(larger.ms)}/${s(smaller.ms)} s`,
    `${r.checked.length} deployed disks checked`,
  ].join('; ');
}
