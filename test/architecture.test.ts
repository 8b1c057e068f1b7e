/**
 * The layers of src/ and what each may import (README.md, "Architecture"). A lower layer that
 * imports a higher one fails here with the file, the import and the rule it breaks.
 */
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

type Layer = 'lib' | 'imaging' | 'nbd' | 'transport' | 'domain' | 'pxe' | 'web' | 'serve' | 'cli' | 'agent';

/** Bottom to top. Each layer may import itself and the layers listed. */
const MAY_IMPORT: Readonly<Record<Layer, readonly Layer[]>> = {
  lib: [],
  imaging: ['lib'],
  nbd: ['lib'],
  transport: ['lib', 'imaging', 'nbd'],
  domain: ['lib', 'imaging', 'nbd', 'transport'],
  pxe: ['lib'],
  web: ['lib', 'imaging', 'transport', 'domain', 'pxe'],
  serve: ['lib', 'imaging', 'nbd', 'transport', 'domain', 'pxe', 'web'],
  cli: ['lib', 'imaging', 'domain', 'serve'],
  // The imaging agent runs on the PC, apart from the server: it shares only helpers, the chunk format and the chunk transport's wire form.
  agent: ['lib'],
};

/**
 * Single files a layer may reach into beyond its list. The boot servers render what the boot policy
 * decides, so they know its decision types, and nothing else of the domain (no database types). The
 * agent and the store share one chunk format module, so they cannot disagree on a chunk's bytes or name,
 * and the agent and the server's chunk routes one wire module (answers, the chunk list's bytes). The
 * agent also reads partition tables and plans a restore onto a disk of another size with the store's
 * own pure modules (issue 12), so the layout the server shows is the one the agent acts on.
 */
const EXTRA_FILES: Readonly<Partial<Record<Layer, readonly string[]>>> = {
  pxe: ['src/domain/boot-policy.ts'],
  agent: [
    'src/imaging/chunk-format.ts',
    'src/transport/chunk-wire.ts',
    'src/imaging/disk-layout.ts',
    'src/imaging/partitions.ts',
    'src/imaging/layout-plan.ts',
    'src/imaging/partition-write.ts',
    'src/imaging/domain-map.ts',
  ],
};

export interface Import {
  readonly from: string;
  readonly to: string;
}

export function layerOf(file: string): Layer | null {
  const m = /^src\/([^/]+)\//.exec(file);
  return m && m[1] in MAY_IMPORT ? (m[1] as Layer) : null;
}

/** Every import that breaks the rules, as a sentence. */
export function violations(imports: readonly Import[]): string[] {
  const out: string[] = [];
  for (const { from, to } of imports) {
    const a = layerOf(from);
    const b = layerOf(to);
    if (!a) {
      out.push(`${from} is in no layer: put it in one of src/{${Object.keys(MAY_IMPORT).join(',')}}/ or add its folder to this test and the README`);
      continue;
    }
    if (!b) {
      out.push(`${from} imports ${to}, which is in no layer`);
      continue;
    }
    if (a === b || MAY_IMPORT[a].includes(b) || EXTRA_FILES[a]?.includes(to)) continue;
    out.push(`${from} (${a}) imports ${to} (${b}): ${a} may import only ${[...MAY_IMPORT[a], ...(EXTRA_FILES[a] ?? [])].join(', ') || 'itself'}`);
  }
  return out;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sourceFiles(p));
    else if (name.endsWith('.ts')) out.push(p);
  }
  return out;
}

const SPECIFIER = /(?:^|\n)\s*(?:import|export)\b[^'"`;]*?from\s*['"](\.{1,2}\/[^'"]+)['"]|\bimport\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g;

/** Relative imports of one file, resolved to repository paths (.js specifiers name .ts sources). */
export function importsOf(file: string, text: string): Import[] {
  const out: Import[] = [];
  for (const m of text.matchAll(SPECIFIER)) {
    const spec = m[1] ?? m[2];
    const to = path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)).replace(/\.js$/, '.ts');
    out.push({ from: file, to });
  }
  return out;
}

describe('layers', () => {
  const files = sourceFiles('src').map((f) => f.split(path.sep).join('/'));
  const imports = files.flatMap((f) => importsOf(f, readFileSync(f, 'utf8')));

  it('reads the imports of every source file', () => {
    expect(files.length).toBeGreaterThan(100);
    expect(imports.length).toBeGreaterThan(300);
    for (const i of imports) expect(files, `${i.from} imports ${i.to}, which does not exist`).toContain(i.to);
  });

  it('has no import from a lower layer into a higher one', () => {
    expect(violations(imports)).toEqual([]);
    expect(files.map((f) => layerOf(f)).filter((l) => l === null)).toEqual([]);
  });

  it('catches an import that runs upward, and one into the domain from pxe other than the boot policy', () => {
    const planted = [
      ...importsOf('src/imaging/x.ts', "import { Commands } from '../domain/commands.js';"),
      ...importsOf('src/pxe/dhcp/x.ts', "import type { HostRecord } from '../../domain/database.js';"),
      ...importsOf('src/pxe/dhcp/y.ts', "import type { BootDecision } from '../../domain/boot-policy.js';"),
      ...importsOf('src/domain/x.ts', "const m = await import('../web/app.js');"),
      ...importsOf('src/nbd/x.ts', "export { thing } from '../transport/grants.js';"),
    ];
    expect(planted).toHaveLength(5);
    const found = violations(planted);
    expect(found).toHaveLength(4);
    expect(found[0]).toMatch(/src\/imaging\/x\.ts \(imaging\) imports src\/domain\/commands\.ts \(domain\)/);
    expect(found[1]).toMatch(/database\.ts/);
    expect(found[2]).toMatch(/src\/domain\/x\.ts \(domain\) imports src\/web\/app\.ts \(web\)/);
    expect(found[3]).toMatch(/src\/nbd\/x\.ts \(nbd\) imports src\/transport\/grants\.ts/);
  });
});
