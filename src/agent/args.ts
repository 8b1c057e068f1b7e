/** The agent's command line (the contract of issue 11), parsed and checked before anything is opened. */

export interface AgentArgs {
  readonly mode: 'capture' | 'deploy';
  readonly server: string;
  readonly token: string;
  readonly disk: string;
  readonly diskName: string;
  readonly serial?: string;
  /** Bytes of the disk; undefined = the file's size. */
  readonly size?: number;
  readonly sectorSize: number;
  readonly jobs: number;
  /** Capture every chunk, without asking the filesystems which blocks they use (issue 12's probe). */
  readonly wholeDisk: boolean;
}

export const USAGE = 'usage: agent capture|deploy --server http://IP:PORT --token TOKEN --disk PATH --disk-name NAME [--serial S] [--size BYTES] [--sector-size 512] [--jobs N] [--whole-disk]';

/** Chunks uploaded or downloaded at once when --jobs is not given. */
export const DEFAULT_JOBS = 6;

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

const VALUE_FLAGS = new Set(['--server', '--token', '--disk', '--disk-name', '--serial', '--size', '--sector-size', '--jobs']);
const SWITCHES = new Set(['--whole-disk']);

function integer(flag: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${flag} wants a whole number, not "${text}"`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`${flag} ${n} is out of range (${min} to ${max})`);
  return n;
}

export function parseArgs(argv: readonly string[]): AgentArgs {
  const [mode, ...rest] = argv;
  if (mode !== 'capture' && mode !== 'deploy') throw new UsageError(mode === undefined ? 'say capture or deploy' : `unknown command "${mode}"`);
  const values = new Map<string, string>();
  const switches = new Set<string>();
  for (let i = 0; i < rest.length; i++) {
    const flag = rest[i];
    if (SWITCHES.has(flag)) {
      if (switches.has(flag)) throw new UsageError(`${flag} given twice`);
      switches.add(flag);
      continue;
    }
    if (!VALUE_FLAGS.has(flag)) throw new UsageError(`unknown option "${flag}"`);
    const value = rest[++i];
    if (value === undefined) throw new UsageError(`${flag} needs a value`);
    if (values.has(flag)) throw new UsageError(`${flag} given twice`);
    values.set(flag, value);
  }
  const need = (flag: string): string => {
    const v = values.get(flag);
    if (v === undefined || v === '') throw new UsageError(`${flag} is required`);
    return v;
  };
  const server = need('--server');
  if (!/^https?:\/\/[^/\s]+\/?$/.test(server)) throw new UsageError(`--server wants http://IP:PORT, not "${server}"`);
  const diskName = need('--disk-name');
  if (!/^[A-Za-z0-9_.-]{1,32}$/.test(diskName)) throw new UsageError(`--disk-name "${diskName}" is not a disk name (letters, digits, _ . -, at most 32)`);
  const size = values.get('--size');
  const sector = values.get('--sector-size');
  const jobs = values.get('--jobs');
  const sectorSize = sector === undefined ? 512 : integer('--sector-size', sector, 512, 65536);
  return {
    mode,
    server,
    token: need('--token'),
    disk: need('--disk'),
    diskName,
    serial: values.get('--serial'),
    size: size === undefined ? undefined : integer('--size', size, 1, Number.MAX_SAFE_INTEGER),
    sectorSize,
    jobs: jobs === undefined ? DEFAULT_JOBS : integer('--jobs', jobs, 1, 64),
    wholeDisk: switches.has('--whole-disk'),
  };
}
