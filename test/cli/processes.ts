/** The netclone command and server as child processes, for tests that drive them like a technician. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { start, stopProcess, type RunResult, type Running } from '../lib/run.js';
import { waitFor } from '../lib/wait.js';

export const BIN = path.resolve('bin/netclone.js');

export type CliResult = RunResult;
export type CliRun = Running;

/** The built command on a data directory, with no config file; stdin is a pipe that carries `input` (or nothing) and ends. */
export function startCli(data: string, args: readonly string[], input?: Buffer): CliRun {
  return start(process.execPath, [BIN, ...args, '--data', data], { env: { ...process.env, NETCLONE_CONFIG: '' }, input: input ?? '' });
}

export function cli(data: string, args: readonly string[], input?: Buffer): Promise<CliResult> {
  return startCli(data, args, input).result;
}

export interface ServerProcess {
  readonly proc: ChildProcess;
  log(): string;
  /** Resolves when the log says the server is up; rejects if it exits first. */
  up(): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export function spawnServer(data: string, bootDir: string, extra: readonly string[] = []): ServerProcess {
  const proc = spawn(
    process.execPath,
    [BIN, 'serve', '--data', data, '--listen', '127.0.0.1', '--http-port', '0', '--nbd-port', '0', '--tftp-port', '0', '--dhcp', 'off', '--boot-dir', bootDir, ...extra],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NETCLONE_CONFIG: '' } },
  );
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d));
  proc.stderr?.on('data', (d: Buffer) => (out += d));
  return {
    proc,
    log: () => out,
    async up() {
      await waitFor('the server to log "netclone is up"', () => {
        if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`server exited (${proc.exitCode ?? proc.signalCode}): ${out}`);
        return out.includes('netclone is up');
      }, { timeoutMs: 60_000, context: () => out });
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      // A server frozen by a test (SIGSTOP) must run again to act on the signal.
      proc.kill('SIGCONT');
      await stopProcess(proc, signal);
    },
  };
}

/** The ports a running server logged ("netclone is up" lists its services). */
export function loggedPorts(log: string): { http: number; nbd: number } {
  const http = /admin page on http:\/\/[^:]+:(\d+)\//.exec(log);
  const nbd = /"name":"nbd","state":"running","detail":"[^"]*:(\d+)"/.exec(log);
  if (!http || !nbd) throw new Error(`no ports in the server log: ${log}`);
  return { http: Number(http[1]), nbd: Number(nbd[1]) };
}
