/**
 * NBD data path: our server + image store against `nbdkit file`, on the same synthetic disk in one run.
 *
 * deploy: nbdcopy reads a whole deploy export into null: (with block status, as the thin client does,
 *         and with --no-extents, which forces every byte over the wire).
 * capture: nbdcopy --flush writes the disk into a capture export; the time includes our commit
 *          (every chunk hashed, compressed, fsynced, manifest renamed), into an empty store, and once
 *          more into a store that already holds every chunk (re-capture of an unchanged PC).
 * nbdkit serves the raw file (deploy) or an empty sparse file of the same size (capture).
 *
 * Our server runs in its own node process, as in the appliance (one process, codec worker pool),
 * so its RSS and CPU are measured alone. nbdcopy runs on the same cores as the server (for nbdkit
 * too); a real client is another PC, so these numbers are a lower bound for a CPU-heavy server.
 */
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_DISK, makeDisk, type DiskLayout } from './lib/disk.js';
import { assertOk, machineInfo, runCommand, sampleProcess, startNbdkit, type MachineInfo, type ProcessSample } from './lib/proc.js';
import { ServerChild } from './lib/server-host.js';
import { fixed, mbps, median, mib, table } from './lib/format.js';

export interface NbdBenchOptions {
  /** Disk size in bytes (default 1 GiB; NETCLONE_BENCH_NBD_MIB overrides). */
  readonly size?: number;
  /** Timed repetitions per scenario and server (default 3; NETCLONE_BENCH_REPS overrides). */
  readonly reps?: number;
  /** Write V8 CPU profiles of our server process here (NETCLONE_BENCH_PROFILE overrides). */
  readonly profileDir?: string;
  /** Run only one family of scenarios (NETCLONE_BENCH_NBD_ONLY overrides), e.g. while profiling. */
  readonly only?: 'deploy' | 'capture';
  readonly log?: (line: string) => void;
}

export interface Measured {
  /** MB/s (10^6 bytes of disk size per second) of each repetition, in run order. */
  readonly mbps: number[];
  readonly median: number;
  readonly best: number;
  /** Highest RSS of the server process seen during any repetition. */
  readonly peakRss: number;
  /** Server process CPU seconds (user+sys, all threads) per repetition, median. */
  readonly cpuSeconds: number;
}

export interface NbdScenario {
  readonly name: string;
  readonly ours: Measured;
  /** nbdkit file; null where nbdkit has no counterpart (re-capture into a store that has every chunk). */
  readonly reference: Measured | null;
  /** ours.median / reference.median. */
  readonly ratio: number | null;
  readonly target: string | null;
  readonly met: boolean | null;
}

export interface NbdBenchResult {
  readonly date: string;
  readonly machine: MachineInfo;
  readonly disk: Omit<DiskLayout, 'path'>;
  readonly importMbps: number;
  readonly reps: number;
  readonly scenarios: NbdScenario[];
  /** Every target from the issue was met. */
  readonly targetsMet: boolean;
  readonly seconds: number;
}

interface Run {
  readonly ms: number;
  readonly sample: ProcessSample;
}

function summarize(bytes: number, runs: readonly Run[]): Measured {
  const rates = runs.map((r) => mbps(bytes, r.ms));
  return {
    mbps: rates,
    median: median(rates),
    best: Math.max(...rates),
    peakRss: Math.max(...runs.map((r) => r.sample.peakRss)),
    cpuSeconds: median(runs.map((r) => r.sample.cpuSeconds)),
  };
}

/** Runs nbdcopy while sampling the server process; throws if nbdcopy fails. */
async function timedCopy(what: string, serverPid: number, args: readonly string[], after?: () => Promise<void>): Promise<Run> {
  const sampler = sampleProcess(serverPid);
  const t0 = performance.now();
  try {
    const r = await runCommand('nbdcopy', args);
    assertOk(`${what}: nbdcopy ${args.join(' ')}`, r);
    if (after) await after();
  } catch (e) {
    sampler.stop();
    throw e;
  }
  const ms = performance.now() - t0;
  return { ms, sample: sampler.stop() };
}

/** Runs one nbdcopy per argument list at once (several PCs deploying together); throws if any fails. */
async function timedCopies(what: string, serverPid: number, argLists: readonly (readonly string[])[]): Promise<Run> {
  const sampler = sampleProcess(serverPid);
  const t0 = performance.now();
  try {
    const results = await Promise.all(argLists.map((args) => runCommand('nbdcopy', args)));
    results.forEach((r, i) => assertOk(`${what}: nbdcopy ${argLists[i].join(' ')}`, r));
  } catch (e) {
    sampler.stop();
    throw e;
  }
  const ms = performance.now() - t0;
  return { ms, sample: sampler.stop() };
}

/** sha256 of everything an NBD URI serves, through nbdcopy to a pipe (proves the deploy path serves the right bytes). */
function hashExport(uri: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    const p = spawn('nbdcopy', [uri, '-'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => h.update(d));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(h.digest('hex')) : reject(new Error(`nbdcopy ${uri} - failed (exit ${code}): ${stderr.trim()}`))));
  });
}

async function emptySparseFile(path: string, size: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
}

/** Clients in the several-PCs deploy scenario. */
const CLIENTS = 4;

export async function benchNbd(opts: NbdBenchOptions = {}): Promise<NbdBenchResult> {
  const started = performance.now();
  const log = opts.log ?? ((line: string) => console.log(line));
  const size = opts.size ?? (process.env.NETCLONE_BENCH_NBD_MIB ? Number(process.env.NETCLONE_BENCH_NBD_MIB) * 1024 * 1024 : DEFAULT_DISK.size);
  const reps = opts.reps ?? (process.env.NETCLONE_BENCH_REPS ? Number(process.env.NETCLONE_BENCH_REPS) : 3);
  const profileDir = opts.profileDir ?? process.env.NETCLONE_BENCH_PROFILE;
  const only = opts.only ?? (process.env.NETCLONE_BENCH_NBD_ONLY as NbdBenchOptions['only']);
  const machine = machineInfo();
  log(`nbd: ${machine.cores} cores, ${machine.cpuModel}, node ${machine.node}, ${machine.nbdkit}, ${machine.nbdcopy}`);

  const dir = await mkdtemp(join(tmpdir(), 'netclone-bench-nbd-'));
  let server: ServerChild | null = null;
  try {
    const diskPath = join(dir, 'disk.img');
    const disk = await makeDisk(diskPath, { ...DEFAULT_DISK, size });
    log(
      `nbd: disk ${mib(size)}: ${mib(disk.zeroBytes)} zero, ${mib(disk.textBytes)} text-like, ${mib(disk.randomBytes)} random in ${disk.extents} extents (made in ${fixed(disk.ms / 1000, 1)} s)`,
    );

    const extraNodeArgs = (process.env.NETCLONE_BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
    server = await ServerChild.start({ nodeArgs: [...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), ...extraNodeArgs] });
    const srv = server;
    const deployStore = join(dir, 'store');
    await srv.openStore(deployStore);
    const imported = await srv.importFile(deployStore, 'disk', diskPath);
    const importMbps = mbps(size, imported.ms);
    log(`nbd: imported into our store at ${fixed(importMbps)} MB/s`);

    // Correctness first: a fast server serving wrong bytes is worthless.
    const check = await srv.deploy(deployStore, 'disk');
    const served = await hashExport(srv.uri(check));
    await srv.revoke(check);
    if (served !== disk.sha256) throw new Error(`our deploy export served different bytes (sha256 ${served}, disk ${disk.sha256})`);

    const kitPid = join(dir, 'nbdkit.pid');
    const scenarios: NbdScenario[] = [];
    const scenario = (name: string, ours: Run[], ref: Run[] | null, target: { ratio?: number; mbps?: number } | null, bytes = size): void => {
      const o = summarize(bytes, ours);
      const r = ref ? summarize(bytes, ref) : null;
      const ratio = r ? o.median / r.median : null;
      let met: boolean | null = null;
      const parts: string[] = [];
      if (target) {
        met = true;
        if (target.ratio !== undefined) {
          parts.push(`≥ ${target.ratio}× nbdkit`);
          met &&= ratio !== null && ratio >= target.ratio;
        }
        if (target.mbps !== undefined) {
          parts.push(`≥ ${target.mbps} MB/s`);
          met &&= o.median >= target.mbps;
        }
      }
      scenarios.push({ name, ours: o, reference: r, ratio, target: parts.length ? parts.join(', ') : null, met });
      log(`nbd: ${name}: ours ${o.mbps.map((x) => fixed(x)).join('/')} MB/s${r ? `, nbdkit ${r.mbps.map((x) => fixed(x)).join('/')} MB/s, ratio ${fixed(ratio as number, 2)}` : ''}`);
    };

    const deploy = async (): Promise<void> => {
      const kit = await startNbdkit(diskPath, kitPid);
      try {
        for (const variant of [[], ['--no-extents']] as const) {
          const ours: Run[] = [];
          const ref: Run[] = [];
          // One untimed round first warms the page cache and code paths of both servers alike.
          for (let i = -1; i < reps; i++) {
            const name = await srv.deploy(deployStore, 'disk');
            const o = await timedCopy('deploy (ours)', srv.pid, [...variant, srv.uri(name), 'null:']);
            await srv.revoke(name);
            const k = await timedCopy('deploy (nbdkit)', kit.pid, [...variant, kit.uri, 'null:']);
            if (i >= 0) {
              ours.push(o);
              ref.push(k);
            }
          }
          const label = variant.length ? 'deploy, --no-extents (every byte)' : 'deploy (nbdcopy → null:)';
          scenario(label, ours, ref, variant.length ? null : { ratio: 1.0 });
        }
        // A lab deploying one image to several PCs at once: each has its own token, all read the same
        // version, at their own pace. MB/s is the sum over the clients.
        const ours: Run[] = [];
        const ref: Run[] = [];
        for (let i = -1; i < reps; i++) {
          const names = await Promise.all(Array.from({ length: CLIENTS }, () => srv.deploy(deployStore, 'disk')));
          const o = await timedCopies('deploy x4 (ours)', srv.pid, names.map((n) => [srv.uri(n), 'null:']));
          for (const n of names) await srv.revoke(n);
          const k = await timedCopies('deploy x4 (nbdkit)', kit.pid, names.map(() => [kit.uri, 'null:']));
          if (i >= 0) {
            ours.push(o);
            ref.push(k);
          }
        }
        scenario(`deploy, ${CLIENTS} clients at once (sum)`, ours, ref, null, CLIENTS * size);
      } finally {
        await kit.stop();
      }
    };

    const capture = async (): Promise<void> => {
      const ours: Run[] = [];
      const ref: Run[] = [];
      const stores: string[] = [];
      for (let i = 0; i < reps; i++) {
        // A fresh store each time: every chunk is compressed, written and fsynced, as for a new PC.
        const store = join(dir, `capture-${i}`);
        stores.push(store);
        await srv.openStore(store);
        const name = await srv.capture(store, 'disk', size);
        let digest = '';
        ours.push(
          await timedCopy('capture (ours)', srv.pid, ['--flush', diskPath, srv.uri(name)], async () => {
            digest = (await srv.awaitCapture(name)).digest;
          }),
        );
        if (digest !== imported.digest) throw new Error(`captured image digest ${digest} differs from the imported one ${imported.digest}`);
        await srv.closeStore(store);
        // Not removed until every run is done: ext4 without a journal (this machine's root) scans past
        // recently deleted inodes on every file it creates, so deleting one store's ~600 chunk files
        // just before the next run would make that run pay for the benchmark's own cleanup, and the
        // freed blocks would make nbdkit's next allocation cheaper than ours.

        // nbdkit's targets stay too, so both servers write into a filesystem in the same state.
        const target = join(dir, `target-${i}.img`);
        stores.push(target);
        await emptySparseFile(target, size);
        const k = await startNbdkit(target, kitPid);
        try {
          ref.push(await timedCopy('capture (nbdkit)', k.pid, ['--flush', diskPath, k.uri]));
        } finally {
          await k.stop();
        }
      }
      for (const store of stores) await rm(store, { recursive: true, force: true });
      scenario('capture (nbdcopy --flush, new store)', ours, ref, { ratio: 0.5, mbps: 400 });

      const again: Run[] = [];
      for (let i = 0; i < reps; i++) {
        const name = await srv.capture(deployStore, 'disk', size);
        again.push(
          await timedCopy('re-capture (ours)', srv.pid, ['--flush', diskPath, srv.uri(name)], async () => {
            await srv.awaitCapture(name);
          }),
        );
      }
      scenario('re-capture (every chunk already stored)', again, null, null);
    };

    if (only !== 'capture') await deploy();
    if (only !== 'deploy') await capture();

    const result: NbdBenchResult = {
      date: new Date().toISOString(),
      machine,
      disk: { size: disk.size, zeroBytes: disk.zeroBytes, textBytes: disk.textBytes, randomBytes: disk.randomBytes, extents: disk.extents, sha256: disk.sha256, ms: disk.ms },
      importMbps,
      reps,
      scenarios,
      targetsMet: scenarios.every((s) => s.met !== false),
      seconds: (performance.now() - started) / 1000,
    };
    log(formatNbd(result));
    return result;
  } finally {
    await server?.stop().catch(() => server?.kill());
    await rm(dir, { recursive: true, force: true });
  }
}

export function formatNbd(r: NbdBenchResult): string {
  const rows = r.scenarios.map((s) => [
    s.name,
    `${fixed(s.ours.median)} (best ${fixed(s.ours.best)})`,
    s.reference ? `${fixed(s.reference.median)} (best ${fixed(s.reference.best)})` : '—',
    s.ratio === null ? '—' : `${fixed(s.ratio, 2)}×`,
    s.target === null ? '—' : `${s.target}: ${s.met ? 'met' : 'MISSED'}`,
    mib(s.ours.peakRss),
    `${fixed(s.ours.cpuSeconds, 1)} / ${s.reference ? fixed(s.reference.cpuSeconds, 1) : '—'}`,
  ]);
  return table(['scenario', 'ours MB/s median', 'nbdkit MB/s median', 'ratio', 'target', 'our RSS peak', 'server CPU s ours / nbdkit'], rows);
}

/** One line for the driver's summary table. */
export function summarizeNbd(r: NbdBenchResult): string {
  return r.scenarios
    .filter((s) => s.target !== null)
    .map((s) => `${s.name.split(' ')[0]} ${fixed(s.ours.median)} MB/s (${s.ratio === null ? '—' : fixed(s.ratio, 2)}× nbdkit${s.met ? '' : ', MISSED'})`)
    .join('; ');
}
