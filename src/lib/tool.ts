/**
 * Runs one of the disk tools netclone relies on (blkid, partclone, ntfsresize, resize2fs, losetup, …)
 * and hands back its exit code and output, never throwing for an exit code. A tool that is not
 * installed is a ToolMissingError, so a caller can fall back (the agent's probe sends a partition
 * whole) or say which package to install (the server's fitted versions).
 */
import { spawn } from 'node:child_process';

export class ToolMissingError extends Error {
  constructor(readonly tool: string) {
    super(`${tool} is not installed (not found on PATH)`);
    this.name = 'ToolMissingError';
  }
}

export interface ToolResult {
  /** Exit code; -1 when a signal ended it. */
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Output kept from a stream: partclone's progress lines are long and many. */
const MAX_OUTPUT = 1024 * 1024;

export interface ToolOptions {
  /** Kill the tool (SIGKILL) after this long; its result then has code -1. Default: no limit. */
  readonly timeoutMs?: number;
}

export function runTool(tool: string, args: readonly string[], options: ToolOptions = {}): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(tool, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(options.timeoutMs ? { timeout: options.timeoutMs, killSignal: 'SIGKILL' as const } : {}) });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    child.stdout.on('data', (b: Buffer) => {
      if (outBytes < MAX_OUTPUT) out.push(b);
      outBytes += b.length;
    });
    child.stderr.on('data', (b: Buffer) => {
      // The tail is kept: a failing tool says why at the end.
      err.push(b);
      errBytes += b.length;
      while (errBytes - err[0].length > MAX_OUTPUT) errBytes -= err.shift()!.length;
    });
    child.on('error', (e: NodeJS.ErrnoException) => reject(e.code === 'ENOENT' ? new ToolMissingError(tool) : new Error(`${tool}: ${e.message}`, { cause: e })));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }));
  });
}
