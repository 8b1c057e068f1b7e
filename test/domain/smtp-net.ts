/**
 * A real SMTP server (aiosmtpd, test/domain/smtp-sink.py) inside a network namespace of its own,
 * reached from the test process over a veth pair with private /30 addresses. Everything carries
 * the test's PID in its name and is removed in stop(): the server by its PID, then the namespace
 * (which takes the veth pair with it).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { randomInt } from 'node:crypto';

const run = promisify(execFile);
const SINK = fileURLToPath(new URL('./smtp-sink.py', import.meta.url));
/** Debian's python3, which has python3-aiosmtpd (a pyenv or venv python on PATH may not). */
const PYTHON = '/usr/bin/python3';

export interface SmtpMessage {
  readonly mailFrom: string;
  readonly rcptTos: string[];
  readonly subject: string;
  readonly from: string;
  readonly to: string;
  readonly body: string;
  readonly authenticated: boolean;
}

export interface SmtpNet {
  /** The SMTP server's address (inside the namespace) and port. */
  readonly address: string;
  readonly port: number;
  readonly messages: SmtpMessage[];
  /** Resolves once `count` messages have arrived in all; rejects after `ms` with what did arrive. */
  waitForMessages(count: number, ms?: number): Promise<SmtpMessage[]>;
  stop(): Promise<void>;
}

async function ip(...args: string[]): Promise<string> {
  return (await run('ip', args)).stdout;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Namespaces (and their veth pairs) left by an earlier run of ours that died before its cleanup. */
async function sweepStale(): Promise<void> {
  for (const line of (await ip('netns', 'list')).split('\n')) {
    const m = /^(ncalert-(\d+)-\d+)\b/.exec(line);
    if (!m || alive(Number(m[2]))) continue;
    for (const pid of (await ip('netns', 'pids', m[1]).catch(() => '')).split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await ip('netns', 'del', m[1]).catch(() => undefined);
  }
}

export async function startSmtpNet(options: { user?: string; password?: string } = {}): Promise<SmtpNet> {
  await sweepStale();
  // A random /30 in 10.213.0.0/16, so two of these (or a run that died) never share names or addresses.
  const tag = randomInt(16384);
  const ns = `ncalert-${process.pid}-${tag}`;
  const hostIf = `ncalert${tag}`;
  const net = `10.213.${tag >> 6}`;
  const hostAddr = `${net}.${(tag & 63) * 4 + 1}`;
  const address = `${net}.${(tag & 63) * 4 + 2}`;
  const port = 2525;
  let proc: ChildProcess | null = null;
  const stop = async (): Promise<void> => {
    if (proc?.pid && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((resolve) => proc?.once('exit', resolve));
      process.kill(proc.pid, 'SIGTERM');
      await exited;
    }
    await ip('netns', 'del', ns).catch(() => undefined);
    // The veth pair goes with the namespace; this only matters if the namespace was never made.
    await ip('link', 'del', hostIf).catch(() => undefined);
  };
  const messages: SmtpMessage[] = [];
  try {
    await ip('netns', 'add', ns);
    await ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    await ip('addr', 'add', `${hostAddr}/30`, 'dev', hostIf);
    await ip('link', 'set', hostIf, 'up');
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    await ip('-n', ns, 'addr', 'add', `${address}/30`, 'dev', 'eth0');
    await ip('-n', ns, 'link', 'set', 'eth0', 'up');
    const args = ['netns', 'exec', ns, PYTHON, SINK, address, String(port), ...(options.user ? [options.user, options.password ?? ''] : [])];
    const child = spawn('ip', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    proc = child;
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      child.stdout?.on('data', (d: Buffer) => {
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) !== -1) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line === 'READY') resolve();
          else if (line.startsWith('{')) messages.push(JSON.parse(line) as SmtpMessage);
        }
      });
      child.once('exit', (code) => reject(new Error(`the SMTP server exited (${code}) before it was ready: ${stderr}`)));
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    address,
    port,
    messages,
    async waitForMessages(count, ms = 20_000) {
      const deadline = Date.now() + ms;
      while (messages.length < count) {
        if (Date.now() > deadline) throw new Error(`expected ${count} messages at the SMTP server, got ${messages.length}: ${JSON.stringify(messages.map((m) => m.subject))}`);
        await new Promise((r) => setTimeout(r, 25));
      }
      return messages.slice(0, count);
    },
    stop,
  };
}
