/** Child processes for the namespace tests: our server runner and the scriptable sender. */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { PxeRequestInfo } from '../../../src/pxe/dhcp/index.js';

export { waitFor } from '../../lib/wait.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const repo = fileURLToPath(new URL('../../../', import.meta.url));

/** `node --import tsx` keeps it one process, so the PID we hold is the one that runs the server. */
/** The configuration goes in on stdin: a few thousand fuzz packets do not fit in argv. */
function nodeTs(ns: string, script: string, arg: unknown): ChildProcess {
  const proc = spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', `${here}${script}`], {
    cwd: repo,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  proc.stdin?.end(JSON.stringify(arg));
  return proc;
}

export interface RunningServer {
  readonly proc: ChildProcess;
  readonly hooks: PxeRequestInfo[];
  logs(): string;
  alive(): boolean;
  stop(): Promise<number | null>;
}

export async function startServer(ns: string, config: Record<string, unknown>): Promise<RunningServer> {
  const proc = nodeTs(ns, 'runner.ts', config);
  const hooks: PxeRequestInfo[] = [];
  let stderr = '';
  let exited = false;
  let exitCode: number | null = null;
  const exit = new Promise<number | null>((resolve) =>
    proc.once('exit', (code) => {
      exited = true;
      exitCode = code;
      resolve(code);
    }),
  );
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  await new Promise<void>((resolve, reject) => {
    let buf = '';
    proc.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith('READY ')) resolve();
        else if (line.startsWith('HOOK ')) hooks.push(JSON.parse(line.slice(5)) as PxeRequestInfo);
      }
    });
    void exit.then((code) => reject(new Error(`DHCP runner exited with ${code} before it was ready:\n${stderr}`)));
  });
  return {
    proc,
    hooks,
    logs: () => stderr,
    alive: () => !exited,
    stop: async () => {
      if (!exited && proc.pid) process.kill(proc.pid, 'SIGTERM');
      await exit;
      return exitCode;
    },
  };
}

export interface SenderConfig {
  bindAddress: string;
  bindPort: number;
  target: { address: string; port: number };
  packets: Buffer[];
  waitForXids: number[];
  maxWaitMs: number;
  gapEvery?: number;
  gapMs?: number;
}

export interface SenderResult {
  replies: { data: Buffer; address: string; port: number }[];
  unanswered: number[];
}

export async function runSender(ns: string, cfg: SenderConfig): Promise<SenderResult> {
  const proc = nodeTs(ns, 'sender.ts', { ...cfg, packets: cfg.packets.map((p) => p.toString('hex')) });
  let out = '';
  let err = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve) => proc.once('exit', resolve));
  if (code !== 0) throw new Error(`sender exited with ${code}: ${err}`);
  const parsed = JSON.parse(out) as { replies: { hex: string; address: string; port: number }[]; unanswered: number[]; sendErrors: string[] };
  if (parsed.sendErrors.length > 0) throw new Error(`sender could not send ${parsed.sendErrors.length} packets, first: ${parsed.sendErrors[0]}`);
  return { replies: parsed.replies.map((r) => ({ data: Buffer.from(r.hex, 'hex'), address: r.address, port: r.port })), unanswered: parsed.unanswered };
}

/** Run a program to completion inside a namespace. */
export async function runIn(ns: string, cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => proc.once('exit', resolve));
  return { code, stdout, stderr };
}
