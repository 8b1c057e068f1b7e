/**
 * Child processes for tests and benches: run a program to completion collecting its output (`run`),
 * start one and watch it while it runs (`start`), and stop one (`stopProcess`). The one place tests spawn and collect, so a deadline,
 * stdin handling or a kill is done the same way everywhere.
 */
import { spawn, type ChildProcess } from 'node:child_process';

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  readonly cwd?: string;
  /** The child's whole environment; the parent's when not given. */
  readonly env?: NodeJS.ProcessEnv;
  /** Written to the child's stdin, which is then closed. Without it stdin is /dev/null (or an open pipe, see keepStdinOpen). */
  readonly input?: Buffer | string;
  /** Leaves stdin open after `input`, as a console that stays attached does; it is closed when the child ends. */
  readonly keepStdinOpen?: boolean;
  /** The child is killed by PID (SIGKILL) if it runs longer; a hung tool then fails its test instead of hanging it. */
  readonly timeoutMs?: number;
}

export interface Running {
  readonly proc: ChildProcess;
  /** Settles when the child has exited and its output is closed; rejects only if it could not be started. */
  readonly result: Promise<RunResult>;
  /** True once the child has exited and its output is closed (when `result` settles). */
  exited(): boolean;
  /** What it wrote to stdout so far. */
  stdout(): string;
  /** What it wrote to stderr so far. */
  stderr(): string;
}

export function start(cmd: string, args: readonly string[], options: RunOptions = {}): Running {
  const pipeStdin = options.input !== undefined || options.keepStdinOpen === true;
  const proc = spawn(cmd, args, { cwd: options.cwd, env: options.env, stdio: [pipeStdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let done = false;
  proc.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  // A child that exits without reading its input must not fail the run with EPIPE.
  proc.stdin?.on('error', () => undefined);
  const result = new Promise<RunResult>((resolve, reject) => {
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => {
      if (proc.pid !== undefined) process.kill(proc.pid, 'SIGKILL');
    }, options.timeoutMs);
    proc.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      done = true;
      proc.stdin?.destroy();
      resolve({ code, signal, stdout, stderr });
    });
  });
  if (options.input !== undefined) {
    if (options.keepStdinOpen) proc.stdin?.write(options.input);
    else proc.stdin?.end(options.input);
  }
  return { proc, result, exited: () => done, stdout: () => stdout, stderr: () => stderr };
}

/** Runs a program to completion and collects its output; a non-zero exit is a result, not an error. */
export function run(cmd: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return start(cmd, args, options).result;
}

/** Signals a child (SIGTERM unless told) and waits until it has exited; one that ignores the signal is killed after `killAfterMs`. */
export function stopProcess(p: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', killAfterMs = 10_000): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const hard = setTimeout(() => p.kill('SIGKILL'), killAfterMs);
    p.once('exit', () => {
      clearTimeout(hard);
      resolve();
    });
    p.kill(signal);
  });
}
