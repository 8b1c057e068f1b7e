/** Synthetic disks for agent tests, from a seed: data, zero runs, compressible text and a short last chunk. */
import { chunkName, ChunkCodecContext, maxChunkFileSize } from '../../src/imaging/chunk-format.js';
import { noise, prng } from '../lib/prng.js';
import { run, start, type RunResult, type Running } from '../lib/run.js';

/**
 * `chunks` full chunks and a partial one: chunk 0 and every 5th are random data, every 4th is text
 * that compresses, every 3rd a zero run, the rest random with a zero tail; one repeated chunk.
 */
export function makeDisk(seed: number, chunkSize: number, chunks: number): Buffer {
  const d = Buffer.alloc(chunks * chunkSize + 777);
  for (let i = 0; i < chunks; i++) {
    const at = i * chunkSize;
    if (i % 5 === 0) noise(seed * 1000 + i, chunkSize).copy(d, at);
    else if (i % 4 === 0) d.fill(`netclone agent test text ${seed} line ${i}\n`, at, at + chunkSize);
    else if (i % 3 === 0) continue;
    else noise(seed * 1000 + i, chunkSize / 2).copy(d, at);
  }
  // The same bytes twice: the agent sends such a chunk once.
  d.copy(d, (chunks - 1) * chunkSize, chunkSize, 2 * chunkSize);
  noise(seed * 1000 + 999, 777).copy(d, chunks * chunkSize);
  return d;
}

/** Random bytes written into `count` distinct chunks picked by the seed (never the zero chunks' neighbours only: any chunk). */
export function scatterChanges(disk: Buffer, seed: number, chunkSize: number, count: number): number[] {
  const r = prng(seed);
  const total = Math.ceil(disk.length / chunkSize);
  const picked = new Set<number>();
  while (picked.size < count) picked.add(Math.floor(r() * total));
  for (const i of picked) {
    const at = i * chunkSize + Math.floor(r() * Math.min(chunkSize, disk.length - i * chunkSize - 64));
    noise(seed + i, 64).copy(disk, at);
  }
  return [...picked].sort((a, b) => a - b);
}

/** The store's chunk list of a disk: 32 raw sha256 bytes a chunk, zeros for an all-zero chunk. */
export function chunkList(disk: Buffer, chunkSize: number): Buffer {
  const count = Math.ceil(disk.length / chunkSize);
  const list = Buffer.alloc(count * 32);
  for (let i = 0; i < count; i++) {
    const piece = disk.subarray(i * chunkSize, Math.min((i + 1) * chunkSize, disk.length));
    if (!piece.every((b) => b === 0)) Buffer.from(chunkName(piece), 'hex').copy(list, i * 32);
  }
  return list;
}

/** Chunk files (format 2) of the disk's non-zero chunks, by name. */
export function chunkFiles(disk: Buffer, chunkSize: number): Map<string, Buffer> {
  const codec = new ChunkCodecContext();
  const files = new Map<string, Buffer>();
  const scratch = Buffer.alloc(maxChunkFileSize(chunkSize));
  for (let off = 0; off < disk.length; off += chunkSize) {
    const piece = disk.subarray(off, Math.min(off + chunkSize, disk.length));
    if (piece.every((b) => b === 0)) continue;
    files.set(chunkName(piece), Buffer.concat(codec.encode(piece, 3, scratch)));
  }
  return files;
}

/** Distinct non-zero chunks of a disk. */
export function distinctChunks(disk: Buffer, chunkSize: number): Set<string> {
  const out = new Set<string>();
  for (let off = 0; off < disk.length; off += chunkSize) {
    const piece = disk.subarray(off, Math.min(off + chunkSize, disk.length));
    if (!piece.every((b) => b === 0)) out.add(chunkName(piece));
  }
  return out;
}

const ROOT = new URL('../../', import.meta.url).pathname;

/**
 * The agent's command line: from the source (tsx), or with AGENT_FROM_DIST=1 the build the initramfs
 * ships (dist/agent/main.js, after npm run build), whose workers are .js files.
 */
function agentCommand(args: readonly string[]): string[] {
  return process.env.AGENT_FROM_DIST === '1' ? ['dist/agent/main.js', ...args] : ['--import', 'tsx', 'src/agent/main.ts', ...args];
}

/** The agent as the thin client runs it: a child process, killed if it hangs. */
export function runAgentCli(args: readonly string[], timeoutMs = 120_000): Promise<RunResult> {
  return run(process.execPath, agentCommand(args), { cwd: ROOT, timeoutMs });
}

/** The agent started and left running, for a test that stops it midway. */
export function startAgentCli(args: readonly string[], timeoutMs = 120_000): Running {
  return start(process.execPath, agentCommand(args), { cwd: ROOT, timeoutMs });
}

/** The success line the agent prints. */
export interface AgentLine {
  readonly ok: true;
  readonly digest: string | null;
  readonly examined: number;
  readonly sentChunks: number;
  readonly reusedChunks: number;
}

export function agentLine(r: RunResult): AgentLine {
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as AgentLine;
}

/** The reason the agent gave for failing: the last line of stderr. */
export function agentReason(r: RunResult): string {
  const lines = r.stderr.trim().split('\n');
  return lines[lines.length - 1];
}
