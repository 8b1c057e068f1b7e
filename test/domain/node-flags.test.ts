import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { SERVER_NODE_FLAGS } from '../../src/serve/node-flags.js';

const read = (p: string): string => readFileSync(p, 'utf8');

describe('server node flags', () => {
  it('are the same in the shebang, npm start and the systemd unit', () => {
    const shebang = read('bin/netclone.js').split('\n')[0];
    const start = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts.start;
    const exec = read('systemd/netclone.service').split('\n').find((l) => l.startsWith('ExecStart=')) ?? '';
    expect(SERVER_NODE_FLAGS.length).toBeGreaterThan(0);
    for (const flag of SERVER_NODE_FLAGS) {
      expect(shebang).toMatch(new RegExp(`^#!/usr/bin/env -S node .*${flag}`));
      expect(start).toContain(`node ${SERVER_NODE_FLAGS.join(' ')} bin/netclone.js serve`);
      expect(exec).toContain(`/usr/bin/node ${SERVER_NODE_FLAGS.join(' ')} `);
    }
  });

  it('are accepted by this node (a typo would stop the server from starting)', () => {
    const out = execFileSync(process.execPath, [...SERVER_NODE_FLAGS, '-e', 'process.stdout.write("ok")'], { encoding: 'utf8' });
    expect(out).toBe('ok');
  });

  it('the bin runs through its shebang', () => {
    // Executed directly, not through node: the kernel reads the shebang, env -S splits the flags.
    const out = execFileSync('./bin/netclone.js', ['--help'], { encoding: 'utf8' });
    expect(out).toMatch(/netclone/);
  });
});
