/**
 * The README's first command sets up everything a technician needs to image a PC. Without
 * `npm run build:client` in it, the first PC that picked "Capture" got "could not load the imaging
 * client"; without the client build's host tools, the build would stop at apt.
 */
import { describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';

/** Packages every Debian system has (Priority: required); boot/build.sh names them too. */
const ALWAYS_THERE = new Set(['gzip', 'dpkg', 'apt', 'libc-bin']);

describe("README's first command", () => {
  it('installs the client build\'s host tools and runs setup:boot and build:client before npm start', async () => {
    const readme = await readFile('README.md', 'utf8');
    const first = /```sh\n#[^\n]*\n([^\n]+)\n/.exec(readme)?.[1] ?? '';
    const steps = first.split(' && ');
    expect(steps.slice(-3), first).toEqual(['npm run setup:boot', 'npm run build:client', 'npm start']);
    const apt = steps.find((s) => s.startsWith('apt-get install -y '))?.split(' ').slice(3) ?? [];
    // setup:boot copies the iPXE loaders and the signed shim and GRUB from these packages.
    expect(apt).toEqual(expect.arrayContaining(['ipxe', 'shim-signed', 'grub-efi-amd64-signed']));

    // The "command:package" pairs boot/build.sh checks for before it builds.
    const build = await readFile('boot/build.sh', 'utf8');
    const pairs = /for pair in ([^;]+); do/.exec(build)?.[1].replace(/\\\n/g, ' ') ?? '';
    // A $NAME in the list stands for the pairs its NAME="…" assignment in build.sh holds (the disk tools).
    const expand = (word: string): string[] => {
      if (!word.startsWith('$')) return [word];
      const value = new RegExp(`^${word.slice(1)}="([^"]*)"`, 'm').exec(build)?.[1];
      if (value === undefined) throw new Error(`boot/build.sh uses ${word} in its host tool list but never sets it`);
      return value.trim().split(/\s+/);
    };
    const words = pairs.trim().split(/\s+/).flatMap(expand);
    for (const w of words) expect(w, 'every word of the host tool list is command:package').toMatch(/^[^:]+:[^:]+$/);
    const needed = new Set(words.map((p) => p.split(':')[1]));
    expect(needed.size).toBeGreaterThan(3);
    for (const pkg of needed) if (!ALWAYS_THERE.has(pkg)) expect(apt, `${pkg} (needed by boot/build.sh)`).toContain(pkg);
  });
});
