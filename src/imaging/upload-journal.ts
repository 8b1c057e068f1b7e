/**
 * Upload journals: what chunk uploads of one image received, kept so that the next upload of that
 * image (a retried task after a cut cable, a killed agent or a restarted server) need not receive it
 * again.
 *
 *   <store>/uploads/<image>.journal    one line per accepted chunk: "<sha256 hex> <decoded length> <file size>\n"
 *
 * A line is appended only after its chunk file is renamed into place (see ChunkUpload.put), and lines
 * are not fsynced: a line lost in a crash costs one re-upload, never a wrong answer, because a reader
 * stats every file a journal names before it counts it (a file whose size differs from the line is not
 * counted either). A crash can leave a torn last line, or zeros where the line was: only lines ending
 * in a newline and of exactly that shape count, and the next writer starts on a fresh line.
 *
 * A journal lives for RESUME_WINDOW_MS after its last append: gc keeps every chunk a young journal
 * names and removes an expired journal (its chunks become ordinary garbage). A commit of the image
 * removes its journal (what it listed is in a version now, the rest is garbage).
 */
import { appendFile, mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir } from '../lib/durable-write.js';
import { isValidImageName } from './names.js';

/** How long an upload's chunks stay usable by a later upload of the same image: a week of retries. */
export const RESUME_WINDOW_MS = 7 * 24 * 3600 * 1000;

const SUFFIX = '.journal';
const LINE_RE = /^([0-9a-f]{64}) ([1-9][0-9]{0,9}) ([1-9][0-9]{0,9})$/;

/** A chunk a journal names: its decoded length and the size its file had when the line was written. */
export interface JournalEntry {
  readonly length: number;
  readonly stored: number;
}

/** A journal as read: its entries and whether the next append must start a new line. */
export interface JournalContents {
  readonly entries: Map<string, JournalEntry>;
  /** The file ends in a torn line (or zeros): an append must begin with a newline. */
  readonly torn: boolean;
  /** Last append (mtime), ms since the epoch; 0 when there is no journal. */
  readonly touchedMs: number;
  /** There is a journal, older than the window: its entries are not given. */
  readonly expired: boolean;
}

/** Parses journal bytes; anything that is not a whole, well-formed line is skipped. */
export function parseJournal(text: string): { entries: Map<string, JournalEntry>; torn: boolean } {
  const entries = new Map<string, JournalEntry>();
  const end = text.lastIndexOf('\n');
  // Whatever follows the last newline is a line whose write did not finish.
  for (const line of text.slice(0, end + 1).split('\n')) {
    const m = LINE_RE.exec(line);
    if (m) entries.set(m[1], { length: Number(m[2]), stored: Number(m[3]) });
  }
  return { entries, torn: end + 1 < text.length };
}

export function journalLine(hash: string, e: JournalEntry): string {
  return `${hash} ${e.length} ${e.stored}\n`;
}

/** The journals of one store, in `<store>/uploads`. */
export class UploadJournals {
  constructor(
    readonly dir: string,
    readonly windowMs: number = RESUME_WINDOW_MS,
  ) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  pathOf(image: string): string {
    return join(this.dir, image + SUFFIX);
  }

  expired(touchedMs: number, now = Date.now()): boolean {
    return now - touchedMs > this.windowMs;
  }

  /**
   * The image's journal; empty when there is none or it has expired (gc removes it then), unless
   * `evenExpired` (gc, for an image whose upload is still open).
   */
  async read(image: string, evenExpired = false, now = Date.now()): Promise<JournalContents> {
    let text: string;
    let touchedMs: number;
    try {
      const path = this.pathOf(image);
      touchedMs = (await stat(path)).mtimeMs;
      text = await readFile(path, 'latin1');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { entries: new Map(), torn: false, touchedMs: 0, expired: false };
      throw e;
    }
    const { entries, torn } = parseJournal(text);
    const expired = this.expired(touchedMs, now);
    if (expired && !evenExpired) entries.clear();
    return { entries, torn, touchedMs, expired };
  }

  /** Images with a journal, whatever its age. */
  async images(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    return names.filter((n) => n.endsWith(SUFFIX)).map((n) => n.slice(0, -SUFFIX.length)).filter(isValidImageName).sort();
  }

  /**
   * Removes the image's journal, if any. `durable`: also syncs the directory, where a journal coming
   * back after a power cut would hand its chunks to another disk of that name (a removed image's).
   */
  async remove(image: string, durable = false): Promise<void> {
    await rm(this.pathOf(image), { force: true });
    if (durable) await fsyncDir(this.dir);
  }

  /**
   * Moves `from`'s journal to `to` (an image renamed). A journal `to` had is dropped either way: its
   * chunks were uploaded for a disk that was called `to` and is not the one that now is.
   */
  async rename(from: string, to: string): Promise<void> {
    await rm(this.pathOf(to), { force: true });
    try {
      await rename(this.pathOf(from), this.pathOf(to));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    await fsyncDir(this.dir);
  }

  writer(image: string, torn: boolean): JournalWriter {
    return new JournalWriter(this.pathOf(image), torn);
  }
}

/**
 * Appends lines to one journal. Lines added while a write is under way go out together in the next
 * write, so concurrent puts cost one append between them, not one each.
 */
export class JournalWriter {
  private pending: string[] = [];
  private waiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private writing = false;

  constructor(
    readonly path: string,
    /** The file ends in a torn line: the first write starts a new one. */
    private torn: boolean,
  ) {}

  /** Resolves once the line is in the file (not fsynced: see the module comment). */
  append(hash: string, e: JournalEntry): Promise<void> {
    this.pending.push(journalLine(hash, e));
    const p = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (!this.writing) void this.flush();
    return p;
  }

  private async flush(): Promise<void> {
    this.writing = true;
    while (this.pending.length > 0) {
      const lines = this.pending;
      const waiters = this.waiters;
      this.pending = [];
      this.waiters = [];
      try {
        await appendFile(this.path, (this.torn ? '\n' : '') + lines.join(''), { encoding: 'latin1', mode: 0o666 });
        this.torn = false;
        for (const w of waiters) w.resolve();
      } catch (e) {
        // A failed append may have left part of a line behind.
        this.torn = true;
        for (const w of waiters) w.reject(e);
      }
    }
    this.writing = false;
  }
}
