/** Child processes for benches: running commands, free ports, nbdkit, and sampling a process's RSS and CPU. */
import { spawn, execFileSync } from 'node:child_process';
import { run, type RunOptions } from '../../test/lib/run.js';
import { waitFor } from '../../test/lib/wait.js';
import { readFileSync, existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import { cpus } from 'node:os';

export interface CommandResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

export async function runCommand(cmd: string, args: readonly string[], options?: RunOptions): Promise<CommandResult> {
  const t0 = performance.now();
  const r = await run(cmd, args, options);
  return { ...r, ms: performance.now() - t0 };
}

/** Throws with the command's stderr when it did not exit 0. */
export function assertOk(what: string, r: CommandResult): void {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code ?? r.signal}): ${r.stderr.trim() || r.stdout.trim()}`);
}

/** An ephemeral loopback port for a program that cannot listen on port 0 itself. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

const CLOCK_TICKS = 100; // USER_HZ on Linux

/** utime+stime of the whole process (all threads, including exited ones) in seconds. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

export function rssBytes(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

export interface ProcessSample {
  readonly peakRss: number;
  readonly cpuSeconds: number;
}

/** Samples RSS every `everyMs` until stop(); CPU is the difference between start and stop. */
export function sampleProcess(pid: number, everyMs = 50): { stop(): ProcessSample } {
  const cpu0 = cpuSeconds(pid);
  let peak = rssBytes(pid);
  const timer = setInterval(() => {
    const r = rssBytes(pid);
    if (r > peak || Number.isNaN(peak)) peak = r;
  }, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      const r = rssBytes(pid);
      if (r > peak || Number.isNaN(peak)) peak = r;
      return { peakRss: peak, cpuSeconds: cpuSeconds(pid) - cpu0 };
    },
  };
}

export interface RunningNbdkit {
  readonly port: number;
  readonly pid: number;
  readonly uri: string;
  stop(): Promise<void>;
}

/** `nbdkit file FILE` on loopback; resolves once it listens (it writes its pidfile then). */
export async function startNbdkit(file: string, pidFile: string): Promise<RunningNbdkit> {
  const port = await freePort();
  await rm(pidFile, { force: true });
  const child = spawn('nbdkit', ['--foreground', '--exit-with-parent', '-P', pidFile, '-p', String(port), '-i', '127.0.0.1', 'file', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let exited = false;
  const gone = new Promise<void>((resolve) => child.on('exit', () => ((exited = true), resolve())));
  try {
    await waitFor('nbdkit to write its PID file (it does once it listens)', () => {
      if (exited) throw new Error(`nbdkit exited before listening: ${stderr.trim()}`);
      return existsSync(pidFile) && readFileSync(pidFile, 'latin1').trim() !== '';
    }, { timeoutMs: 10_000, context: () => stderr.trim() });
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const pid = child.pid as number;
  return {
    port,
    pid,
    uri: `nbd://127.0.0.1:${port}`,
    stop: async () => {
      if (!exited) process.kill(pid, 'SIGTERM');
      await gone;
    },
  };
}

export interface MachineInfo {
  readonly cores: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly node: string;
  readonly nbdkit: string;
  readonly nbdcopy: string;
  readonly kernel: string;
}

function firstLine(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0].trim();
  } catch {
    return 'not installed';
  }
}

export function machineInfo(): MachineInfo {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'latin1');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1].trim() ?? cpus()[0]?.model ?? 'unknown';
  const mem = /^MemTotal:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'latin1'));
  return {
    cores: Number(firstLine('nproc', [])) || cpus().length,
    cpuModel: model,
    memoryGiB: mem ? Math.round(Number(mem[1]) / 1024 / 1024) : NaN,
    node: process.version,
    nbdkit: firstLine('nbdkit', ['--version']),
    nbdcopy: firstLine('nbdcopy', ['--version']),
    kernel: firstLine('uname', ['-r']),
  };
}
