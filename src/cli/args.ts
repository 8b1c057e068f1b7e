/**
 * Strict command-line parsing: every command declares its flags; an unknown flag or
 * a missing value is an error that names it, never a silent default.
 */
export interface FlagSpec {
  /** Takes a value (`--port 10`, `--port=10`) or is a switch (`--json`). */
  readonly value: boolean;
  readonly description: string;
}

export type FlagSpecs = Record<string, FlagSpec>;

export interface ParsedArgs {
  readonly positionals: string[];
  readonly flags: Record<string, string | true>;
}

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export function parseArgs(argv: readonly string[], specs: FlagSpecs): ParsedArgs {
  const positionals: string[] = [];
  const flags: Record<string, string | true> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = arg.slice(2, eq === -1 ? undefined : eq);
      const spec = specs[name];
      if (!spec) {
        const known = Object.keys(specs).map((k) => `--${k}`).join(', ');
        throw new UsageError(`unknown flag --${name}${known ? ` (this command takes: ${known})` : ''}`);
      }
      if (spec.value) {
        let value: string | undefined;
        if (eq !== -1) value = arg.slice(eq + 1);
        else value = argv[++i];
        if (value === undefined || (eq === -1 && value.startsWith('--'))) throw new UsageError(`--${name} needs a value`);
        flags[name] = value;
      } else {
        if (eq !== -1) throw new UsageError(`--${name} takes no value`);
        flags[name] = true;
      }
    } else if (arg.startsWith('-') && arg !== '-') {
      throw new UsageError(`unknown flag ${arg} (flags are spelled --name)`);
    } else {
      positionals.push(arg);
    }
  }
  return { positionals, flags };
}
