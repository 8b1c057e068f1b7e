/**
 * `npm run bench [-- NAME ...]`: runs every bench module that exists (bench/dhcp.ts, bench/tftp.ts,
 * bench/nbd.ts, bench/nbd-memory.ts, bench/capture.ts, bench/chunk-check.ts, bench/agent.ts (the imaging agent, issue 11;
 * BENCH_AGENT_MIB=256 for a quick try, BENCH_AGENT_SHAPED=0 skips the 1 Gbit/s link), bench/real-disks.ts (issue 12's used-block capture and restore
 * onto other sizes, as root; BENCH_REAL_MIB=1024 for a quick try), bench/e2e.ts — the last boots VMs under TCG for
 * several minutes), each exporting `bench<Name>()` (`nbd-memory` → `benchNbdMemory`), one after the other (they share 2 cores), then prints a summary. A missing module
 * is reported and skipped; a bench that throws is reported and the rest still run. Exit status is non-zero only if a bench crashed (or an unknown name was asked for):
 * a missed performance target is a result, not a crash.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { table } from './lib/format.js';

const KNOWN = ['dhcp', 'tftp', 'nbd', 'nbd-memory', 'capture', 'chunk-check', 'agent', 'real-disks', 'e2e'] as const;

/** `nbd-memory` → `NbdMemory`: the part of its function names after `bench` / `summarize`. */
function pascal(name: string): string {
  return name.split('-').map((w) => w[0].toUpperCase() + w.slice(1)).join('');
}

interface Outcome {
  readonly name: string;
  readonly status: 'ok' | 'missing' | 'crashed';
  readonly seconds: number;
  readonly summary: string;
}

type BenchFn = () => Promise<unknown>;

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function short(v: unknown): string {
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) >= 100 ? 0 : 2);
  if (typeof v === 'string' || typeof v === 'boolean') return String(v);
  if (isRecord(v)) {
    const inner = Object.entries(v).filter(([, x]) => typeof x === 'number' || typeof x === 'string' || typeof x === 'boolean');
    return `{${inner.slice(0, 4).map(([k, x]) => `${k}: ${short(x)}`).join(', ')}}`;
  }
  return JSON.stringify(v) ?? String(v);
}

/** The result's headline numbers; each module's result shape is its own, so known keys first, then any scalars. */
function summarize(name: string, mod: Record<string, unknown>, result: unknown): string {
  const own = mod[`summarize${pascal(name)}`];
  if (typeof own === 'function') {
    try {
      return String((own as (r: unknown) => unknown)(result));
    } catch {
      // fall through to the generic summary
    }
  }
  if (!isRecord(result)) return short(result);
  const preferred = ['offersPerSecond', 'ours', 'reference', 'ratio'];
  const keys = [...preferred.filter((k) => k in result), ...Object.keys(result).filter((k) => !preferred.includes(k))];
  const parts: string[] = [];
  for (const k of keys) {
    const v = result[k];
    if (v === undefined || Array.isArray(v)) continue;
    if (!preferred.includes(k) && typeof v !== 'number') continue;
    parts.push(`${k} ${short(v)}`);
    if (parts.length >= 6) break;
  }
  return parts.join(', ');
}

async function runOne(name: string): Promise<Outcome> {
  const file = fileURLToPath(new URL(`./${name}.ts`, import.meta.url));
  const fn = `bench${pascal(name)}`;
  if (!existsSync(file)) {
    console.log(`\n== ${name}: bench/${name}.ts does not exist; skipped`);
    return { name, status: 'missing', seconds: 0, summary: `bench/${name}.ts not found` };
  }
  console.log(`\n== ${name}`);
  const t0 = performance.now();
  try {
    const mod = (await import(`./${name}.js`)) as Record<string, unknown>;
    const bench = mod[fn];
    if (typeof bench !== 'function') throw new Error(`bench/${name}.ts does not export a function ${fn}()`);
    const result = await (bench as BenchFn)();
    const seconds = (performance.now() - t0) / 1000;
    return { name, status: 'ok', seconds, summary: summarize(name, mod, result) };
  } catch (err) {
    const seconds = (performance.now() - t0) / 1000;
    console.error(`== ${name} crashed after ${seconds.toFixed(1)} s:`, err);
    return { name, status: 'crashed', seconds, summary: (err as Error).message ?? String(err) };
  }
}

async function main(): Promise<number> {
  const asked = process.argv.slice(2).filter((a) => a !== '--');
  const unknown = asked.filter((a) => !(KNOWN as readonly string[]).includes(a));
  if (unknown.length > 0) {
    console.error(`unknown bench ${unknown.join(', ')}; choose from ${KNOWN.join(', ')} (or none for all)`);
    return 2;
  }
  const names = asked.length > 0 ? asked : [...KNOWN];
  const t0 = performance.now();
  const outcomes: Outcome[] = [];
  for (const name of names) outcomes.push(await runOne(name));
  console.log(`\n== summary (${((performance.now() - t0) / 1000).toFixed(0)} s in all)\n`);
  console.log(table(['bench', 'status', 'time', 'result'], outcomes.map((o) => [o.name, o.status, `${o.seconds.toFixed(1)} s`, o.summary])));
  return outcomes.some((o) => o.status === 'crashed') ? 1 : 0;
}

// Exit explicitly: a bench that leaves a handle open must not hang the driver after its summary.
process.exit(await main());
