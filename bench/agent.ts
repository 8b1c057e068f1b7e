/**
 * `npm run bench -- agent`: the imaging agent (issue 11) against a whole appliance in a child process,
 * with NBD (nbdcopy against the same appliance, and nbdkit serving the raw file) in the same run.
 *
 * On a mixed disk (40 % zero runs, 30 % random, 30 % 2:1 data; BENCH_AGENT_MIB sets its size, 1024 by
 * default), the agent compiled as the initramfs ships it, on the host against files:
 *  1. first capture: the task's bytesOnWire (the server's count of chunk-route bodies) against the
 *     disk's non-zero chunks and against `zstd -3` of those chunks (the CLI, one stream);
 *  2. re-capture after 5 % of the data was rewritten by scattered 1 MiB writes;
 *  3. deploy of that version onto a file holding the previous one;
 *  4. deploy by 1, 4 and 8 agents at once onto blank files: server CPU-s per GiB and logical GiB/s,
 *     against nbdkit serving the raw file to as many `nbdcopy --flush` readers writing files;
 *  5. over a link shaped to 1 Gbit/s (tc tbf on a veth pair between two network namespaces): capture
 *     and deploy of a 2:1-compressible disk with no zero runs, logical bytes/s against the link rate;
 *  6. the same over NBD (nbdcopy against the task's export, as the thin client's NBD path): 1-3 and 5.
 * The agent's deploy includes its read-back (sha256 of the whole disk again); the transfer-only time is
 * from the task's log (running → verifying). nbdcopy does no read-back.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { start, type RunResult, type Running } from '../test/lib/run.js';
import { DEFAULT_CHUNK_SIZE } from '../src/imaging/chunk-format.js';
import { buildAgent } from './lib/agent-build.js';
import { makeAgentDisk, scatterWrites, summarizeData, type AgentDiskLayout, type Changes, type DataSummary } from './lib/agent-disks.js';
import { ApplianceChild } from './lib/appliance-host.js';
import type { TaskView } from './lib/appliance-protocol.js';
import { fixed, table } from './lib/format.js';
import { createShapedLink, type ShapedLink } from './lib/netns.js';
import { cpuSeconds as cpuSecondsOf, machineInfo, sampleProcess, startNbdkit, type MachineInfo } from './lib/proc.js';
import { bootToken, LOOPBACK_CLIENT, postResult, startNbd, type ClientSide } from './lib/thin-client.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const CHUNK = DEFAULT_CHUNK_SIZE;
const LINK_RATE = '1gbit';
const LINK_BYTES_PER_SECOND = 125e6;
const AGENT_COUNTS = [1, 4, 8] as const;
const ROOT = fileURLToPath(new URL('../', import.meta.url));

/** One transfer, by the agent or by nbdcopy through a task. */
export interface Transfer {
  readonly what: string;
  readonly logicalBytes: number;
  /** The task's bytesOnWire (server-counted bodies: chunk routes, or NBD payload). */
  readonly wireBytes: number;
  readonly ms: number;
  /** running → verifying in the task's log (agent deploys: the time before the read-back). */
  readonly transferMs: number | null;
  readonly serverCpuSeconds: number;
  /** The agent's or nbdcopy's CPU seconds (all threads). */
  readonly clientCpuSeconds: number;
  readonly sentChunks?: number;
  readonly reusedChunks?: number;
  /** Frames both veth ends sent (shaped runs only). */
  readonly linkBytes?: number;
}

export interface ConcurrentDeploy {
  readonly agents: number;
  readonly logicalBytes: number;
  readonly ours: { ms: number; transferMs: number; cpuSeconds: number; wireBytes: number; clientCpuSeconds: number };
  readonly nbdkit: { ms: number; cpuSeconds: number; clientCpuSeconds: number };
  /** ours / nbdkit logical bytes per second (whole agent runs, read-back included). */
  readonly ratio: number;
  /** The same with the agents' time up to their last verifying report (no read-back). */
  readonly transferRatio: number;
}

export interface AgentBenchResult {
  readonly date: string;
  readonly machine: MachineInfo;
  readonly loadBefore: number[];
  readonly disk: Omit<AgentDiskLayout, 'dataExtents'> & { readonly data: DataSummary };
  readonly changes: Changes;
  readonly agent: { readonly capture: Transfer; readonly recapture: Transfer; readonly deployOntoPrevious: Transfer; readonly deployBlank: Transfer };
  readonly nbd: { readonly capture: Transfer; readonly recapture: Transfer; readonly deployOntoPrevious: Transfer };
  readonly concurrent: ConcurrentDeploy[];
  readonly shaped: { readonly disk: DataSummary & { size: number }; readonly rows: Transfer[] } | null;
  readonly seconds: number;
}

const loadAverage = (): number[] => execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).split(' ').slice(0, 3).map(Number);

/** Processes the bench started and has not seen exit: killed by PID if the bench fails midway. */
const live = new Set<Running>();

interface Tracked {
  readonly run: Running;
  /** CPU seconds (user+sys, all threads) the process had used when last sampled, 50 ms before it exited at most. */
  cpuSeconds(): number;
}

function startTracked(side: ClientSide, cmd: string, args: readonly string[]): Tracked {
  const [c, ...rest] = [...side.prefix, cmd, ...args];
  const r = start(c, rest, { cwd: ROOT, timeoutMs: 30 * 60_000 });
  live.add(r);
  // `ip netns exec` execs the command, so the PID is the program's own.
  let cpu = 0;
  const timer = setInterval(() => {
    const now = r.proc.pid === undefined ? NaN : cpuSecondsOf(r.proc.pid);
    if (Number.isFinite(now)) cpu = now;
  }, 50);
  void r.result.finally(() => (clearInterval(timer), live.delete(r))).catch(() => undefined);
  return { run: r, cpuSeconds: () => cpu };
}

function killLive(): void {
  for (const r of live) if (!r.exited() && r.proc.pid !== undefined) process.kill(r.proc.pid, 'SIGKILL');
}

async function finished(what: string, t: Tracked): Promise<RunResult & { cpuSeconds: number }> {
  const res = await t.run.result;
  if (res.code !== 0) throw new Error(`${what} failed (exit ${res.code ?? res.signal}): ${res.stderr.trim().split('\n').slice(-3).join(' / ')}`);
  return { ...res, cpuSeconds: t.cpuSeconds() };
}

async function blankFile(path: string, size: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
}

/** The image digest of a file's first `size` bytes (sha256 over "<sha256 of chunk>\n" lines), as the thin client's read-back computes it. */
async function fileDigest(path: string, size: number): Promise<string> {
  const outer = createHash('sha256');
  const fh = await open(path, 'r');
  const buf = Buffer.allocUnsafe(CHUNK);
  try {
    for (let off = 0; off < size; off += CHUNK) {
      const n = Math.min(CHUNK, size - off);
      let got = 0;
      while (got < n) got += (await fh.read(buf, got, n - got, off + got)).bytesRead || n;
      outer.update(`${createHash('sha256').update(buf.subarray(0, n)).digest('hex')}\n`);
    }
  } finally {
    await fh.close();
  }
  return outer.digest('hex');
}

function logTime(task: TaskView, pattern: RegExp): number | null {
  const e = task.log.find((l) => pattern.test(l.message));
  return e ? Date.parse(e.at) : null;
}

/** running → verifying (or → done when there is no verifying phase) in the task's log. */
function transferMs(task: TaskView): number | null {
  const running = logTime(task, / started$/);
  const after = logTime(task, /^reading the disk back/) ?? logTime(task, /^(captured|deployed) /);
  return running !== null && after !== null ? after - running : null;
}

interface AgentLine {
  readonly digest: string | null;
  readonly sentChunks: number;
  readonly reusedChunks: number;
}

class Bench {
  constructor(
    readonly server: ApplianceChild,
    readonly side: ClientSide,
    readonly agentMain: string,
    readonly link: ShapedLink | null = null,
    readonly nodeArgs: readonly string[] = [],
  ) {}

  private async ready(kind: 'capture' | 'deploy', image: string, transport: 'chunks' | 'nbd'): Promise<{ task: TaskView; token: string }> {
    const task = await this.server.queue(kind, image, transport, this.side.ip);
    return { task, token: await bootToken(this.side, this.server.base, task.mac) };
  }

  private async ended(what: string, task: TaskView): Promise<TaskView> {
    const t = await this.server.task(task.id);
    if (t.state !== 'done') throw new Error(`${what}: the task ended ${t.state}: ${t.reason ?? ''}`);
    return t;
  }

  private agentArgs(mode: 'capture' | 'deploy', token: string, disk: string): string[] {
    return [...this.nodeArgs, this.agentMain, mode, '--server', this.server.base, '--token', token, '--disk', disk, '--disk-name', 'sda', '--serial', 'BENCH'];
  }

  /** One agent run through its task, timed and metered. */
  async agent(what: string, mode: 'capture' | 'deploy', image: string, disk: string, logicalBytes: number): Promise<Transfer> {
    const { task, token } = await this.ready(mode, image, 'chunks');
    const link0 = this.link?.counters();
    const sampler = sampleProcess(this.server.pid);
    const t0 = performance.now();
    let res: RunResult & { cpuSeconds: number };
    let cpu: number;
    try {
      res = await finished(`${what}: agent ${mode}`, startTracked(this.side, process.execPath, this.agentArgs(mode, token, disk)));
    } finally {
      cpu = sampler.stop().cpuSeconds;
    }
    const ms = performance.now() - t0;
    const link1 = this.link?.counters();
    const line = JSON.parse(res.stdout.trim().split('\n').pop() as string) as AgentLine;
    const answer = await postResult(this.side, this.server.base, token, line.digest);
    if (answer.state !== 'done') throw new Error(`${what}: result answered ${answer.state}: ${answer.reason ?? ''}`);
    const done = await this.ended(what, task);
    return {
      what,
      logicalBytes,
      wireBytes: done.result?.bytesOnWire ?? NaN,
      ms,
      transferMs: transferMs(done),
      serverCpuSeconds: cpu,
      clientCpuSeconds: res.cpuSeconds,
      sentChunks: line.sentChunks,
      reusedChunks: line.reusedChunks,
      ...(link0 && link1 ? { linkBytes: link1.serverTx - link0.serverTx + link1.clientTx - link0.clientTx } : {}),
    };
  }

  /** The thin client's NBD path: start, nbdcopy --flush one way or the other, result (a deploy's digest read back here, untimed). */
  async nbd(what: string, mode: 'capture' | 'deploy', image: string, disk: string, size: number): Promise<Transfer> {
    const { task, token } = await this.ready(mode, image, 'nbd');
    const link0 = this.link?.counters();
    const sampler = sampleProcess(this.server.pid);
    const t0 = performance.now();
    let ms: number;
    let cpu: number;
    let clientCpuSeconds: number;
    try {
      const uri = await startNbd(this.side, this.server.base, token, size);
      const args = mode === 'capture' ? ['--flush', disk, uri] : ['--flush', uri, disk];
      ({ cpuSeconds: clientCpuSeconds } = await finished(`${what}: nbdcopy ${args.join(' ')}`, startTracked(this.side, 'nbdcopy', args)));
      if (mode === 'capture') {
        // The commit is part of a capture: it ends when the result call returns.
        const answer = await postResult(this.side, this.server.base, token, null);
        if (answer.state !== 'done') throw new Error(`${what}: result answered ${answer.state}: ${answer.reason ?? ''}`);
      }
      ms = performance.now() - t0;
    } finally {
      cpu = sampler.stop().cpuSeconds;
    }
    const link1 = this.link?.counters();
    if (mode === 'deploy') {
      const answer = await postResult(this.side, this.server.base, token, await fileDigest(disk, size));
      if (answer.state !== 'done') throw new Error(`${what}: result answered ${answer.state}: ${answer.reason ?? ''}`);
    }
    const done = await this.ended(what, task);
    return {
      what,
      logicalBytes: size,
      wireBytes: done.result?.bytesOnWire ?? NaN,
      ms,
      transferMs: null,
      serverCpuSeconds: cpu,
      clientCpuSeconds,
      ...(link0 && link1 ? { linkBytes: link1.serverTx - link0.serverTx + link1.clientTx - link0.clientTx } : {}),
    };
  }

  /** `agents` agents deploying `image` onto blank files at once: wall time until the last is done. */
  async agents(image: string, agents: number, dir: string, size: number): Promise<ConcurrentDeploy['ours']> {
    const ready = await Promise.all(Array.from({ length: agents }, () => this.ready('deploy', image, 'chunks')));
    const files = ready.map((_, i) => join(dir, `blank-${i}.img`));
    for (const f of files) await blankFile(f, size);
    const sampler = sampleProcess(this.server.pid);
    const t0 = performance.now();
    let results: Array<RunResult & { cpuSeconds: number }>;
    let cpuSeconds: number;
    try {
      results = await Promise.all(ready.map((r, i) => finished(`agent ${i + 1} of ${agents}`, startTracked(this.side, process.execPath, this.agentArgs('deploy', r.token, files[i])))));
    } finally {
      cpuSeconds = sampler.stop().cpuSeconds;
    }
    const ms = performance.now() - t0;
    let wireBytes = 0;
    let lastVerifying = 0;
    for (const [i, r] of ready.entries()) {
      const line = JSON.parse(results[i].stdout.trim().split('\n').pop() as string) as AgentLine;
      const answer = await postResult(this.side, this.server.base, r.token, line.digest);
      if (answer.state !== 'done') throw new Error(`agent ${i + 1} of ${agents}: result answered ${answer.state}: ${answer.reason ?? ''}`);
      const done = await this.ended(`agent ${i + 1} of ${agents}`, r.task);
      wireBytes += done.result?.bytesOnWire ?? NaN;
      lastVerifying = Math.max(lastVerifying, logTime(done, /^reading the disk back/) ?? NaN);
    }
    for (const f of files) await rm(f, { force: true });
    return { ms, transferMs: lastVerifying - (performance.timeOrigin + t0), cpuSeconds, wireBytes, clientCpuSeconds: results.reduce((sum, r) => sum + r.cpuSeconds, 0) };
  }
}

/** nbdkit serving `file` to `readers` nbdcopy --flush processes writing blank files, at once. */
async function nbdkitReaders(file: string, readers: number, dir: string, size: number): Promise<ConcurrentDeploy['nbdkit']> {
  const kit = await startNbdkit(file, join(dir, 'nbdkit.pid'));
  try {
    const files = Array.from({ length: readers }, (_, i) => join(dir, `kit-${i}.img`));
    for (const f of files) await blankFile(f, size);
    const sampler = sampleProcess(kit.pid);
    const t0 = performance.now();
    let cpuSeconds: number;
    let clients: Array<{ cpuSeconds: number }>;
    try {
      clients = await Promise.all(files.map((f, i) => finished(`nbdcopy ${i + 1} of ${readers} from nbdkit`, startTracked(LOOPBACK_CLIENT, 'nbdcopy', ['--flush', kit.uri, f]))));
    } finally {
      cpuSeconds = sampler.stop().cpuSeconds;
    }
    const ms = performance.now() - t0;
    for (const f of files) await rm(f, { force: true });
    return { ms, cpuSeconds, clientCpuSeconds: clients.reduce((sum, r) => sum + r.cpuSeconds, 0) };
  } finally {
    await kit.stop();
  }
}

export async function benchAgent(): Promise<AgentBenchResult> {
  const started = performance.now();
  const size = (Number(process.env.BENCH_AGENT_MIB) || 1024) * MiB;
  const skipShaped = process.env.BENCH_AGENT_SHAPED === '0';
  // V8 CPU profiles of the server and of every agent process (main thread), for finding where time goes.
  const profileDir = process.env.BENCH_AGENT_PROFILE;
  const profile = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  const log = (line: string): void => console.log(`agent: ${line}`);
  const machine = machineInfo();
  const loadBefore = loadAverage();
  log(`${machine.cores} cores, ${machine.cpuModel}, node ${machine.node}, ${machine.nbdkit}, ${machine.nbdcopy}, load ${loadBefore.join(' ')}`);

  const dir = await mkdtemp(join(tmpdir(), 'netclone-bench-agent-'));
  let server: ApplianceChild | null = null;
  let shapedServer: ApplianceChild | null = null;
  let link: ShapedLink | null = null;
  try {
    const agentMain = await buildAgent(join(dir, 'agent-build'));
    const v1 = join(dir, 'v1.img');
    const v2 = join(dir, 'v2.img');
    const layout = await makeAgentDisk(v1, { size, zeroFraction: 0.4, randomFraction: 0.3, seed: 1104 });
    const data = await summarizeData(v1, size, CHUNK);
    await copyFile(v1, v2);
    const changes = await scatterWrites(v2, layout, { fraction: 0.05, writeSize: MiB, seed: 1105, chunkSize: CHUNK });
    log(
      `disk ${size / MiB} MiB: ${fixed(layout.zeroBytes / MiB)} MiB zero, ${fixed(layout.randomBytes / MiB)} random, ${fixed(layout.halfBytes / MiB)} 2:1; ` +
        `${data.nonZeroChunks} of ${data.chunks} chunks non-zero (${fixed(data.nonZeroChunkBytes / MiB)} MiB), zstd -3 of them ${fixed(data.zstd3Bytes / MiB)} MiB; ` +
        `v2: ${changes.writes} writes, ${fixed(changes.bytes / MiB)} MiB, ${changes.chunksTouched} chunks touched`,
    );

    server = await ApplianceChild.start({ dataDir: join(dir, 'appliance'), listen: '127.0.0.1', nodeArgs: profile });
    const b = new Bench(server, LOOPBACK_CLIENT, agentMain, null, profile);
    const capture = await b.agent('capture (new image)', 'capture', 'pc', v1, size);
    log(`capture: ${fixed(capture.wireBytes / MiB, 1)} MiB on the wire in ${fixed(capture.ms / 1000, 1)} s`);
    const recapture = await b.agent('re-capture after 5 % changes', 'capture', 'pc', v2, size);
    log(`re-capture: ${fixed(recapture.wireBytes / MiB, 1)} MiB on the wire in ${fixed(recapture.ms / 1000, 1)} s`);
    const onPrevious = join(dir, 'target-v1.img');
    await copyFile(v1, onPrevious);
    const deployOntoPrevious = await b.agent('deploy onto the previous version', 'deploy', 'pc', onPrevious, size);
    log(`deploy onto v1: ${fixed(deployOntoPrevious.wireBytes / MiB, 1)} MiB on the wire in ${fixed(deployOntoPrevious.ms / 1000, 1)} s`);
    const blank = join(dir, 'target-blank.img');
    await blankFile(blank, size);
    const deployBlank = await b.agent('deploy onto a blank disk', 'deploy', 'pc', blank, size);
    await rm(blank, { force: true });

    const nbdCapture = await b.nbd('NBD capture (new image)', 'capture', 'pc-nbd', v1, size);
    const nbdRecapture = await b.nbd('NBD re-capture after 5 % changes', 'capture', 'pc-nbd', v2, size);
    await copyFile(v1, onPrevious);
    const nbdDeploy = await b.nbd('NBD deploy onto the previous version', 'deploy', 'pc-nbd', onPrevious, size);
    await rm(onPrevious, { force: true });
    log(`NBD: capture ${fixed(nbdCapture.wireBytes / MiB)} MiB, re-capture ${fixed(nbdRecapture.wireBytes / MiB)} MiB, deploy ${fixed(nbdDeploy.wireBytes / MiB)} MiB on the wire`);

    // Several PCs at once. nbdkit serves the raw v2 file (what the agents deploy); one untimed read warms its cache.
    execFileSync('cat', [v2], { stdio: ['ignore', 'ignore', 'ignore'] });
    const concurrent: ConcurrentDeploy[] = [];
    for (const n of AGENT_COUNTS) {
      const ours = await b.agents('pc', n, dir, size);
      const kit = await nbdkitReaders(v2, n, dir, size);
      const c: ConcurrentDeploy = { agents: n, logicalBytes: n * size, ours, nbdkit: kit, ratio: kit.ms / ours.ms, transferRatio: kit.ms / ours.transferMs };
      concurrent.push(c);
      log(`${n} at once: ours ${fixed(c.logicalBytes / GiB / (ours.ms / 1000), 2)} GiB/s (${fixed(ours.cpuSeconds, 1)} CPU-s), nbdkit ${fixed(c.logicalBytes / GiB / (kit.ms / 1000), 2)} GiB/s (${fixed(kit.cpuSeconds, 1)} CPU-s), ratio ${fixed(c.ratio, 2)}`);
    }
    await server.stop();
    server = null;

    let shaped: AgentBenchResult['shaped'] = null;
    if (!skipShaped) {
      const half = join(dir, 'half.img');
      await makeAgentDisk(half, { size, zeroFraction: 0, randomFraction: 0, seed: 1106 });
      const halfData = await summarizeData(half, size, CHUNK);
      log(`2:1 disk: zstd -3 of it ${fixed(halfData.zstd3Bytes / MiB)} MiB of ${size / MiB} MiB (${fixed(size / halfData.zstd3Bytes, 2)}:1)`);
      link = createShapedLink(LINK_RATE);
      shapedServer = await ApplianceChild.start({ dataDir: join(dir, 'shaped-appliance'), listen: link.serverIp, netns: link.serverNs });
      const s = new Bench(shapedServer, { ip: link.clientIp, prefix: ['ip', 'netns', 'exec', link.clientNs] }, agentMain, link);
      const rows: Transfer[] = [];
      rows.push(await s.agent('agent capture, 1 Gbit/s', 'capture', 'half', half, size));
      const target = join(dir, 'shaped-target.img');
      await blankFile(target, size);
      rows.push(await s.agent('agent deploy onto a blank disk, 1 Gbit/s', 'deploy', 'half', target, size));
      rows.push(await s.nbd('NBD capture, 1 Gbit/s', 'capture', 'half-nbd', half, size));
      await blankFile(target, size);
      rows.push(await s.nbd('NBD deploy onto a blank disk, 1 Gbit/s', 'deploy', 'half-nbd', target, size));
      await rm(target, { force: true });
      for (const r of rows) log(`${r.what}: ${fixed(r.logicalBytes / 1e6 / (r.ms / 1000))} MB/s of disk, ${fixed((r.linkBytes ?? NaN) / 1e6 / (r.ms / 1000))} MB/s on the link`);
      shaped = { disk: { ...halfData, size }, rows };
    }

    const result: AgentBenchResult = {
      date: new Date().toISOString(),
      machine,
      loadBefore,
      disk: { size: layout.size, zeroBytes: layout.zeroBytes, halfBytes: layout.halfBytes, randomBytes: layout.randomBytes, data },
      changes,
      agent: { capture, recapture, deployOntoPrevious, deployBlank },
      nbd: { capture: nbdCapture, recapture: nbdRecapture, deployOntoPrevious: nbdDeploy },
      concurrent,
      shaped,
      seconds: (performance.now() - started) / 1000,
    };
    console.log(formatAgent(result));
    return result;
  } finally {
    killLive();
    await server?.stop().catch(() => server?.kill());
    await shapedServer?.stop().catch(() => shapedServer?.kill());
    link?.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const pct = (x: number): string => `${fixed(100 * x, 1)} %`;
const mb = (bytes: number): string => fixed(bytes / 1e6, 1);

export function formatAgent(r: AgentBenchResult): string {
  const dataBytes = r.disk.size - r.disk.zeroBytes;
  const wireRows = (['capture', 'recapture', 'deployOntoPrevious'] as const).map((k) => {
    const a = r.agent[k];
    const n = r.nbd[k];
    const target = k === 'capture' ? `zstd -3: ${mb(r.disk.data.zstd3Bytes)} MB (${pct(r.disk.data.zstd3Bytes / dataBytes)})` : `≤ 10 %: ${a.wireBytes <= 0.1 * dataBytes ? 'met' : 'MISSED'}`;
    return [a.what, mb(a.wireBytes), pct(a.wireBytes / dataBytes), mb(n.wireBytes), pct(n.wireBytes / dataBytes), target, `${fixed(a.ms / 1000, 1)} / ${fixed(n.ms / 1000, 1)}`, `${fixed(a.serverCpuSeconds, 1)} / ${fixed(n.serverCpuSeconds, 1)}`, `${fixed(a.clientCpuSeconds, 1)} / ${fixed(n.clientCpuSeconds, 1)}`];
  });
  const parts = [
    `Disk ${r.disk.size / MiB} MiB: ${mb(dataBytes)} MB of data outside the zero runs ("data" below), in ${r.disk.data.nonZeroChunks} of ${r.disk.data.chunks} chunks (${mb(r.disk.data.nonZeroChunkBytes)} MB); re-capture after ${r.changes.writes} scattered writes of ${mb(r.changes.bytes)} MB touching ${r.changes.chunksTouched} chunks.`,
    table(['scenario', 'agent wire MB', 'of data', 'NBD wire MB', 'of data', 'reference / target', 'time s agent / NBD', 'server CPU s agent / NBD', 'client CPU s agent / nbdcopy'], wireRows),
    `deploy onto a blank disk (1 agent): ${mb(r.agent.deployBlank.wireBytes)} MB on the wire, ${fixed(r.agent.deployBlank.ms / 1000, 1)} s (${fixed((r.agent.deployBlank.transferMs ?? NaN) / 1000, 1)} s before the read-back), server ${fixed(r.agent.deployBlank.serverCpuSeconds, 1)} CPU-s, agent ${fixed(r.agent.deployBlank.clientCpuSeconds, 1)} CPU-s`,
    table(
      ['agents at once', 'ours GiB/s (no read-back)', 'server CPU-s/GiB', 'nbdkit GiB/s', 'nbdkit CPU-s/GiB', 'ratio (no read-back)', 'target ≥ 1.0×', 'client CPU-s/GiB agents / nbdcopy'],
      r.concurrent.map((c) => {
        const gib = c.logicalBytes / GiB;
        return [
          String(c.agents),
          `${fixed(gib / (c.ours.ms / 1000), 2)} (${fixed(gib / (c.ours.transferMs / 1000), 2)})`,
          fixed(c.ours.cpuSeconds / gib, 2),
          fixed(gib / (c.nbdkit.ms / 1000), 2),
          fixed(c.nbdkit.cpuSeconds / gib, 2),
          `${fixed(c.ratio, 2)}× (${fixed(c.transferRatio, 2)}×)`,
          c.ratio >= 1 ? 'met' : 'MISSED',
          `${fixed(c.ours.clientCpuSeconds / gib, 2)} / ${fixed(c.nbdkit.clientCpuSeconds / gib, 2)}`,
        ];
      }),
    ),
  ];
  if (r.shaped) {
    parts.push(
      `Shaped link ${LINK_RATE} (tbf both ways); 2:1 disk of ${r.shaped.disk.size / MiB} MiB, no zero runs, zstd -3 ${fixed(r.shaped.disk.size / r.shaped.disk.zstd3Bytes, 2)}:1`,
      table(
        ['scenario', 'disk MB/s', 'link MB/s (frames)', 'task wire MB', 'disk rate / link rate', 'target ≥ 1.8×', 'server CPU s', 'client CPU s'],
        r.shaped.rows.map((t) => {
          const rate = t.logicalBytes / (t.ms / 1000);
          const agent = t.what.startsWith('agent');
          return [t.what, fixed(rate / 1e6), fixed((t.linkBytes ?? NaN) / 1e6 / (t.ms / 1000)), mb(t.wireBytes), `${fixed(rate / LINK_BYTES_PER_SECOND, 2)}×`, agent ? (rate / LINK_BYTES_PER_SECOND >= 1.8 ? 'met' : 'MISSED') : '—', fixed(t.serverCpuSeconds, 1), fixed(t.clientCpuSeconds, 1)];
        }),
      ),
    );
  }
  return parts.join('\n\n');
}

/** One line for the driver's summary table. */
export function summarizeAgent(r: AgentBenchResult): string {
  const data = r.disk.size - r.disk.zeroBytes;
  const c8 = r.concurrent[r.concurrent.length - 1];
  const shaped = r.shaped?.rows.filter((t) => t.what.startsWith('agent')).map((t) => `${fixed(t.logicalBytes / (t.ms / 1000) / LINK_BYTES_PER_SECOND, 2)}×`).join('/');
  return [
    `capture ${pct(r.agent.capture.wireBytes / data)} of data`,
    `re-capture ${pct(r.agent.recapture.wireBytes / data)}`,
    `deploy onto previous ${pct(r.agent.deployOntoPrevious.wireBytes / data)}`,
    `${c8.agents} agents ${fixed(c8.ratio, 2)}× nbdkit`,
    ...(shaped ? [`1 Gbit/s capture/deploy ${shaped} link rate`] : []),
  ].join('; ');
}
