/**
 * Every message, page or doc line that tells someone to run a netclone command names a
 * command the CLI really has: a hint naming a command that does not exist ("netclone token
 * create") sends a technician nowhere.
 */
import { describe, expect, it } from 'vitest';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { commandNames } from '../../src/cli/main.js';

/**
 * Where "netclone" starts a command: right after a quote, backtick, parenthesis, `<code>`,
 * "usage: ", "run ", "$(", or at the start of a line (USAGE text, docs).
 */
const MENTION = /(?:["'`(]|<code>|usage: |\brun |\$\(|^[ \t]*)netclone((?: [a-z][a-z-]*)*)/gm;

/** Quoted uses of the word netclone that are prose, not commands. */
const PROSE = new Set(['netclone is up']);

async function* sourceFiles(dir: string): AsyncGenerator<string> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* sourceFiles(full);
    else if (/\.(ts|js|html|sh)$/.test(entry.name)) yield full;
  }
}

export interface Mention {
  readonly where: string;
  readonly text: string;
}

export function commandMentions(file: string, text: string): Mention[] {
  const out: Mention[] = [];
  for (const m of text.matchAll(MENTION)) {
    const words = m[1].trim();
    if (words === '') continue; // "netclone" alone, or followed by ${…}, a flag or a capital
    const line = text.slice(0, m.index).split('\n').length;
    out.push({ where: `${file}:${line}`, text: `netclone ${words}` });
  }
  return out;
}

/**
 * The parts of a markdown file that are code (fenced blocks, inline code spans), other lines
 * blanked so line numbers stay right: prose like "netclone runs on Debian" is not a command.
 */
export function markdownCode(text: string): string {
  let fenced = false;
  return text
    .split('\n')
    .map((line) => {
      if (line.startsWith('```')) {
        fenced = !fenced;
        return '';
      }
      return fenced ? line : (line.match(/`[^`]*`/g) ?? []).join(' ');
    })
    .join('\n');
}

/** True when the mention starts with a whole command ("netclone image gc frees…" names "image gc"). */
export function namesACommand(mention: string, commands: readonly string[]): boolean {
  const words = mention.split(' ').slice(1);
  return commands.some((c) => {
    const cw = c.split(' ');
    return cw.length <= words.length && cw.every((w, i) => words[i] === w);
  });
}

describe('commands named in messages', () => {
  const commands = commandNames();

  it('the matcher tells a real command from a made-up one', () => {
    expect(namesACommand('netclone admin token create', commands)).toBe(true);
    expect(namesACommand('netclone image gc frees its chunks', commands)).toBe(true);
    expect(namesACommand('netclone token create', commands)).toBe(false);
    expect(namesACommand('netclone token list', commands)).toBe(false);
    expect(namesACommand('netclone task', commands)).toBe(false);
    const found = commandMentions('x.ts', `throw new Error('create one with "netclone token create NAME"');\n  netclone image list [--json]\n`);
    expect(found).toEqual([
      { where: 'x.ts:1', text: 'netclone token create' },
      { where: 'x.ts:2', text: 'netclone image list' },
    ]);
    const md = markdownCode('netclone runs on Debian; run `netclone image lst` then\n```sh\nnetclone host ad MAC\n```\n');
    expect(commandMentions('R.md', md)).toEqual([
      { where: 'R.md:1', text: 'netclone image lst' },
      { where: 'R.md:3', text: 'netclone host ad' },
    ]);
  });

  it('every "netclone …" in src/ and the README names a command in the CLI table', async () => {
    const mentions: Mention[] = [];
    for await (const file of sourceFiles(path.resolve('src'))) mentions.push(...commandMentions(path.relative(process.cwd(), file), await readFile(file, 'utf8')));
    mentions.push(...commandMentions('README.md', markdownCode(await readFile('README.md', 'utf8'))));
    // The scan must see the hints it is meant to check, or it proves nothing.
    expect(mentions.map((m) => m.text)).toContain('netclone admin passwd');
    expect(mentions.length).toBeGreaterThan(20);
    const wrong = mentions.filter((m) => !PROSE.has(m.text) && !namesACommand(m.text, commands));
    expect(wrong, `commands that do not exist (the CLI has: ${commands.join(', ')})`).toEqual([]);
  });
});
