/**
 * lib/durable-write: the temp → fsync → rename → fsync-directory sequence, what a failure leaves
 * behind, and that a reader never sees half a file. node:fs/promises is wrapped to record the
 * order of fsyncs and renames and to inject failures a real disk will not produce on demand.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PendingFile, fsyncDir, tempName, writeFileDurably } from '../../src/lib/durable-write.js';

type Step = 'open' | 'write' | 'sync' | 'rename';

const fsTrace = vi.hoisted(() => ({
  events: [] as string[],
  /** The next operation of this kind on a path that `match` accepts (or contains `match`) fails with `code`. */
  fail: null as { step: 'open' | 'write' | 'sync' | 'rename'; match: string | ((path: string) => boolean); code: string } | null,
}));

vi.mock('node:fs/promises', async (importOriginal) => {
  const orig = await importOriginal<typeof import('node:fs/promises')>();
  const maybeFail = (step: Step, path: string): void => {
    const f = fsTrace.fail;
    if (f && f.step === step && (typeof f.match === 'string' ? path.includes(f.match) : f.match(path))) {
      fsTrace.fail = null;
      throw Object.assign(new Error(`${f.code}: injected failure, ${step} '${path}'`), { code: f.code });
    }
  };
  const open: typeof orig.open = async (path, flags, mode) => {
    const p = String(path);
    maybeFail('open', p);
    const fh = await orig.open(path, flags, mode);
    const sync = fh.sync.bind(fh);
    const writeFileOn = fh.writeFile.bind(fh);
    fh.sync = async () => {
      maybeFail('sync', p);
      fsTrace.events.push(`sync ${p}`);
      return sync();
    };
    fh.writeFile = async (...args: Parameters<typeof fh.writeFile>) => {
      maybeFail('write', p);
      return writeFileOn(...args);
    };
    return fh;
  };
  const rename: typeof orig.rename = async (from, to) => {
    maybeFail('rename', String(from));
    fsTrace.events.push(`rename ${String(from)} -> ${String(to)}`);
    return orig.rename(from, to);
  };
  return { ...orig, default: { ...orig, open, rename }, open, rename };
});

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'netclone-durable-'));
  fsTrace.events.length = 0;
  fsTrace.fail = null;
});
afterEach(async () => {
  fsTrace.fail = null;
  await rm(dir, { recursive: true, force: true });
});

describe('writeFileDurably', () => {
  it('writes a temp file beside the target, fsyncs it, renames it over the target, then fsyncs the directory', async () => {
    const target = join(dir, 'state.json');
    await writeFile(target, 'old');
    await writeFileDurably(target, 'new', { mode: 0o600 });
    expect(await readFile(target, 'utf8')).toBe('new');
    expect(fsTrace.events).toHaveLength(3);
    const [syncTemp, renamed, syncDir] = fsTrace.events;
    const temp = /^sync (.*)$/.exec(syncTemp)![1];
    // Hidden, in the same directory (rename is only atomic within one file system), ending in .tmp.
    expect(temp.startsWith(join(dir, '.state.json.'))).toBe(true);
    expect(temp.endsWith('.tmp')).toBe(true);
    expect(renamed).toBe(`rename ${temp} -> ${target}`);
    expect(syncDir).toBe(`sync ${dir}`);
    expect(await readdir(dir)).toEqual(['state.json']);
  });

  it('creates the file with the mode asked for (umask aside)', async () => {
    const target = join(dir, 'secret.json');
    await writeFileDurably(target, '{}', { mode: 0o600 });
    expect((await stat(target)).mode & 0o077).toBe(0);
  });

  it('writes Buffers as well as strings', async () => {
    const target = join(dir, 'bin');
    const data = Buffer.from([0, 1, 2, 255, 0]);
    await writeFileDurably(target, data, { mode: 0o644 });
    expect((await readFile(target)).equals(data)).toBe(true);
  });

  it('tempDir puts the temp file in that directory under a unique name', async () => {
    const tmp = join(dir, 'tmp');
    await mkdir(tmp);
    const target = join(dir, 'manifest');
    await writeFileDurably(target, 'm', { mode: 0o644, tempDir: tmp });
    const temp = /^sync (.*)$/.exec(fsTrace.events[0])![1];
    expect(temp.startsWith(join(tmp, `w-${process.pid}-`))).toBe(true);
    expect(await readFile(target, 'utf8')).toBe('m');
    expect(await readdir(tmp)).toEqual([]);
  });

  it('syncDir: false leaves the directory fsync to the caller', async () => {
    const target = join(dir, 'manifest');
    await writeFileDurably(target, 'm', { mode: 0o644, syncDir: false });
    expect(fsTrace.events).toHaveLength(2);
    expect(fsTrace.events[1]).toMatch(/^rename /);
    expect(await readFile(target, 'utf8')).toBe('m');
  });

  for (const step of ['write', 'sync', 'rename'] as const) {
    it(`a failed ${step} leaves the old file whole and no temp file behind, and rejects with the system error`, async () => {
      const target = join(dir, 'db.json');
      await writeFile(target, 'old contents');
      fsTrace.fail = { step, match: '.db.json.', code: 'ENOSPC' };
      const err = await writeFileDurably(target, 'new contents', { mode: 0o600 }).then(
        () => null,
        (e: unknown) => e as NodeJS.ErrnoException,
      );
      expect(err?.code).toBe('ENOSPC');
      expect(await readFile(target, 'utf8')).toBe('old contents');
      expect(await readdir(dir)).toEqual(['db.json']);
      // Nothing was renamed, so there is nothing to make durable in the directory.
      expect(fsTrace.events.filter((e) => e.startsWith('rename '))).toEqual([]);
      expect(fsTrace.events).not.toContain(`sync ${dir}`);
    });
  }

  it('a failure to create the temp file rejects and leaves the old file', async () => {
    const target = join(dir, 'db.json');
    await writeFile(target, 'old');
    fsTrace.fail = { step: 'open', match: '.db.json.', code: 'EACCES' };
    await expect(writeFileDurably(target, 'new', { mode: 0o600 })).rejects.toMatchObject({ code: 'EACCES' });
    expect(await readFile(target, 'utf8')).toBe('old');
    expect(await readdir(dir)).toEqual(['db.json']);
  });

  it('a failed directory fsync rejects, after the new file is in place (the caller decides what that means)', async () => {
    const target = join(dir, 'leases.json');
    await writeFile(target, 'old');
    fsTrace.fail = { step: 'sync', match: (p) => p === dir, code: 'EIO' };
    await expect(writeFileDurably(target, 'new', { mode: 0o644 })).rejects.toMatchObject({ code: 'EIO' });
    expect(await readFile(target, 'utf8')).toBe('new');
    expect(await readdir(dir)).toEqual(['leases.json']);
  });

  it('a reader never sees half a file, however often the file is replaced', async () => {
    const target = join(dir, 'big.json');
    // Large enough that writing one takes several write calls.
    const versions = ['a', 'b', 'c', 'd'].map((c) => c.repeat(4 * 1024 * 1024));
    await writeFileDurably(target, versions[0], { mode: 0o644 });
    let writing = true;
    const writer = (async () => {
      try {
        for (let i = 1; i <= 12; i++) await writeFileDurably(target, versions[i % versions.length], { mode: 0o644 });
      } finally {
        writing = false;
      }
    })();
    const seen = new Set<string>();
    while (writing) {
      const text = await readFile(target, 'utf8');
      expect(text.length).toBe(versions[0].length);
      expect(versions).toContain(text);
      seen.add(text[0]);
    }
    await writer;
    // The reader really raced the writer: it saw the file replaced under it.
    expect(seen.size).toBeGreaterThan(1);
    expect(await readFile(target, 'utf8')).toBe(versions[12 % versions.length]);
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('concurrent writers of one file each use their own temp file, and the result is one of their writes, whole', async () => {
    const target = join(dir, 'shared');
    const payloads = Array.from({ length: 8 }, (_, i) => String(i).repeat(256 * 1024));
    await Promise.all(payloads.map((p) => writeFileDurably(target, p, { mode: 0o644 })));
    expect(payloads).toContain(await readFile(target, 'utf8'));
    expect(await readdir(dir)).toEqual(['shared']);
  });
});

describe('PendingFile (the streaming form)', () => {
  it('the caller fills the temp file; commit() puts it in place durably', async () => {
    const target = join(dir, 'disk.img');
    const f = await PendingFile.open(target, { mode: 0o644, tempPath: `${target}.netclone-partial` });
    expect(f.tempPath).toBe(`${target}.netclone-partial`);
    await f.handle.write(Buffer.from('world'), 0, 5, 6);
    await f.handle.write(Buffer.from('hello '), 0, 6, 0);
    // Not visible under the target's name until commit.
    await expect(stat(target)).rejects.toMatchObject({ code: 'ENOENT' });
    await f.commit();
    expect(await readFile(target, 'utf8')).toBe('hello world');
    expect(fsTrace.events).toEqual([`sync ${target}.netclone-partial`, `rename ${target}.netclone-partial -> ${target}`, `sync ${dir}`]);
    expect(await readdir(dir)).toEqual(['disk.img']);
  });

  it('abort() drops the temp file and leaves the old target alone', async () => {
    const target = join(dir, 'disk.img');
    await writeFile(target, 'previous export');
    const f = await PendingFile.open(target, { mode: 0o644 });
    await f.handle.writeFile('half of a new export');
    await f.abort();
    await f.abort(); // twice is harmless: callers abort from a catch that may run after another abort
    expect(await readFile(target, 'utf8')).toBe('previous export');
    expect(await readdir(dir)).toEqual(['disk.img']);
    await expect(f.commit()).rejects.toThrow('already aborted');
  });

  it('abort() after commit() does not touch the new file', async () => {
    const target = join(dir, 'disk.img');
    const f = await PendingFile.open(target, { mode: 0o644 });
    await f.handle.writeFile('done');
    await f.commit();
    await f.abort();
    expect(await readFile(target, 'utf8')).toBe('done');
  });

  it('a fixed tempPath overwrites a leftover from an interrupted run', async () => {
    const target = join(dir, 'disk.img');
    const temp = `${target}.netclone-partial`;
    await writeFile(temp, 'leftover from a crash, longer than the new data');
    const f = await PendingFile.open(target, { mode: 0o644, tempPath: temp });
    await f.handle.writeFile('new');
    await f.commit();
    expect(await readFile(target, 'utf8')).toBe('new');
    expect(await readdir(dir)).toEqual(['disk.img']);
  });

  it('a commit whose fsync fails removes the temp file and keeps the old target', async () => {
    const target = join(dir, 'disk.img');
    await writeFile(target, 'old');
    const f = await PendingFile.open(target, { mode: 0o644 });
    await f.handle.writeFile('new');
    fsTrace.fail = { step: 'sync', match: '.disk.img.', code: 'EIO' };
    await expect(f.commit()).rejects.toMatchObject({ code: 'EIO' });
    expect(await readFile(target, 'utf8')).toBe('old');
    expect(await readdir(dir)).toEqual(['disk.img']);
  });
});

describe('fsyncDir and tempName', () => {
  it('fsyncDir fsyncs the directory itself', async () => {
    await fsyncDir(dir);
    expect(fsTrace.events).toEqual([`sync ${dir}`]);
  });

  it('fsyncDir of a missing directory rejects with ENOENT', async () => {
    await expect(fsyncDir(join(dir, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('tempName gives a fresh name in the directory, tagged, each call', () => {
    const a = tempName(dir, 'spill');
    const b = tempName(dir, 'spill');
    expect(a.startsWith(join(dir, `spill-${process.pid}-`))).toBe(true);
    expect(a).not.toBe(b);
  });
});
