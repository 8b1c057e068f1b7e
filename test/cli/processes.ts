/** The netclone command and server as child processes, for tests that drive them like a technician. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

export const BIN = path.resolve('bin/netclone.js');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliRun {
  readonly proc: ChildProcess;
  readonly result: Promise<CliResult>;
  /** True once the command has exited. */
  exited(): boolean;
  /** What it wrote to stderr so far. */
  stderr(): string;
}

export function startCli(data: string, args: readonly string[], input?: Buffer): CliRun {
  const proc = spawn(process.execPath, [BIN, ...args, '--data', data], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NETCLONE_CONFIG: '' } });
  let done = false;
  let stderr = '';
  const result = new Promise<CliResult>((resolve, reject) => {
    let stdout = '';
    proc.stdout?.on('data', (d: Buffer) => (stdout += d));
    proc.stderr?.on('data', (d: Buffer) => (stderr += d));
    proc.on('error', reject);
    proc.on('close', (code) => {
      done = true;
      resolve({ code, stdout, stderr });
    });
  });
  if (input) proc.stdin?.end(input);
  else proc.stdin?.end();
  return { proc, result, exited: () => done, stderr: () => stderr };
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
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return {
    proc,
    log: () => out,
    async up() {
      while (!out.includes('netclone is up')) {
        if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`server exited (${proc.exitCode ?? proc.signalCode}): ${out}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGCONT');
      proc.kill(signal);
      await exited;
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
