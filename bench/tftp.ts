/**
 * TFTP throughput: our server vs tftp-hpa's in.tftpd, same file, same client (atftp, blksize 1468),
 * same run, on loopback. Runs alternate between servers so machine load hits both alike; the median
 * of several runs per configuration is reported. Unless a busy-poll window is given, our server also
 * runs a second time with busy-poll off in the same alternation, so the figure for what polling is
 * worth comes from one run, not from two runs under different load.
 *   npx tsx bench/tftp.ts
 * Knobs: NETCLONE_BENCH_TFTP_RUNS (runs per mode, default 5), NETCLONE_BENCH_TFTP_MODE (`plain` or
 * `window`: run one mode only), NETCLONE_BENCH_TFTP_BUSY_POLL_MS (our server's busy-poll window; 0 = off;
 * setting it drops the busy-poll-off comparison).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { randomFillSync } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { nullLogger } from '../src/lib/log.js';
import { TftpServer } from '../src/pxe/tftp/server.js';

const FILE_MB = 32;
const RUNS = Math.max(1, Number(process.env.NETCLONE_BENCH_TFTP_RUNS ?? 5) || 5);
const ONLY = process.env.NETCLONE_BENCH_TFTP_MODE;
/** Our server's busy-poll window (TftpServerOptions.busyPollMs); unset = the server's default. */
const BUSY_POLL_MS = process.env.NETCLONE_BENCH_TFTP_BUSY_POLL_MS === undefined ? undefined : Number(process.env.NETCLONE_BENCH_TFTP_BUSY_POLL_MS);

export interface TftpBenchMode {
  readonly label: string;
  readonly ours: number;
  readonly reference: number;
  readonly ratio: number;
  /** MB/s, our server with busy-poll off, same alternation; null when NETCLONE_BENCH_TFTP_BUSY_POLL_MS is set. */
  readonly oursNoPoll: number | null;
}

export interface TftpBenchResult {
  /** MB/s, our server, median over runs, windowsize 8 (the configuration a fast client would use). */
  readonly ours: number;
  /** MB/s, in.tftpd, median over runs, same client command (in.tftpd 5.2 ignores windowsize). */
  readonly reference: number;
  readonly ratio: number;
  readonly fileMB: number;
  readonly runs: number;
  readonly modes: readonly TftpBenchMode[];
}

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const { port } = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function atftpGet(port: number, file: string, dest: string, extra: string[]): Promise<number> {
  const t0 = performance.now();
  const code = await new Promise<number | null>((resolve, reject) => {
    const c = spawn('atftp', ['--option', 'blksize 1468', ...extra, '-g', '-r', file, '-l', dest, '127.0.0.1', String(port)], { stdio: 'ignore' });
    c.on('error', reject);
    c.on('exit', (code) => resolve(code));
  });
  const seconds = (performance.now() - t0) / 1000;
  if (code !== 0) throw new Error(`atftp from port ${port} exited with ${code}`);
  return seconds;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function startInTftpd(root: string): Promise<{ child: ChildProcess; port: number }> {
  const port = await freeUdpPort();
  // -L foreground, -s chroot to root; -u root only when we are root so the temp dir stays readable.
  const args = ['-L', '-s', root, '-a', `127.0.0.1:${port}`, ...(process.getuid?.() === 0 ? ['-u', 'root'] : [])];
  const child = spawn('in.tftpd', args, { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 300));
  if (child.exitCode !== null) throw new Error(`in.tftpd exited at once (${child.exitCode}); is tftpd-hpa installed?`);
  return { child, port };
}

export async function benchTftp(): Promise<TftpBenchResult> {
  const root = await mkdtemp(path.join(tmpdir(), 'nctftp-bench-'));
  const content = randomFillSync(Buffer.alloc(FILE_MB * 1024 * 1024));
  await writeFile(path.join(root, 'bench.bin'), content);
  const server = new TftpServer({ root, port: 0, bindAddress: '127.0.0.1', logger: nullLogger(), busyPollMs: BUSY_POLL_MS });
  const noPoll = BUSY_POLL_MS === undefined ? new TftpServer({ root, port: 0, bindAddress: '127.0.0.1', logger: nullLogger(), busyPollMs: 0 }) : null;
  let ref: { child: ChildProcess; port: number } | undefined;
  try {
    await server.start();
    await noPoll?.start();
    ref = await startInTftpd(root);
    const dest = path.join(root, 'out.bin');
    const modes: TftpBenchMode[] = [];
    const all = [
      ['plain', 'blksize 1468', []],
      ['window', 'blksize 1468 windowsize 8', ['--option', 'windowsize 8']],
    ] as const;
    for (const [key, label, extra] of all) {
      if (ONLY !== undefined && ONLY !== key) continue;
      const ours: number[] = [];
      const oursNoPoll: number[] = [];
      const theirs: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        ours.push(FILE_MB / (await atftpGet(server.address().port, 'bench.bin', dest, [...extra])));
        if (i === 0 && !(await readFile(dest)).equals(content)) throw new Error('our server delivered wrong bytes');
        theirs.push(FILE_MB / (await atftpGet(ref.port, 'bench.bin', dest, [...extra])));
        if (i === 0 && !(await readFile(dest)).equals(content)) throw new Error('in.tftpd delivered wrong bytes');
        if (noPoll) {
          oursNoPoll.push(FILE_MB / (await atftpGet(noPoll.address().port, 'bench.bin', dest, [...extra])));
          if (i === 0 && !(await readFile(dest)).equals(content)) throw new Error('our server (busy-poll off) delivered wrong bytes');
        }
      }
      const o = median(ours);
      const t = median(theirs);
      modes.push({ label, ours: o, reference: t, ratio: o / t, oursNoPoll: noPoll ? median(oursNoPoll) : null });
    }
    const best = modes[modes.length - 1];
    return { ours: best.ours, reference: best.reference, ratio: best.ratio, fileMB: FILE_MB, runs: RUNS, modes };
  } finally {
    if (ref?.child.pid !== undefined) process.kill(ref.child.pid, 'SIGTERM');
    await server.stop();
    await noPoll?.stop();
    await rm(root, { recursive: true, force: true });
  }
}

/** One line per mode for the driver's summary table. */
export function summarizeTftp(r: TftpBenchResult): string {
  return r.modes
    .map((m) => `${m.label}: ${m.ours.toFixed(1)} vs in.tftpd ${m.reference.toFixed(1)} MB/s, ${m.ratio.toFixed(2)}×${m.oursNoPoll === null ? '' : ` (busy-poll off ${m.oursNoPoll.toFixed(1)} MB/s)`}`)
    .join('; ');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await benchTftp();
  for (const m of r.modes) {
    const off = m.oursNoPoll === null ? '' : `   ours, busy-poll off ${m.oursNoPoll.toFixed(1).padStart(6)} MB/s (poll gains ${(m.ours / m.oursNoPoll).toFixed(2)}×)`;
    console.log(`${m.label.padEnd(28)} ours ${m.ours.toFixed(1).padStart(6)} MB/s   in.tftpd ${m.reference.toFixed(1).padStart(6)} MB/s   ratio ${m.ratio.toFixed(2)}${off}`);
  }
  console.log(`headline (windowsize 8): ${r.ours.toFixed(1)} MB/s vs ${r.reference.toFixed(1)} MB/s, ratio ${r.ratio.toFixed(2)}`);
}
