/**
 * The agent's side of the client API (/api/client/v1/, chunk transport of issue 11): one method per
 * call, the task token on every request, the server's own `error` text in every failure.
 *
 * Calls that may safely be repeated (known, a chunk PUT or GET, the list, progress) are retried a few
 * times with growing pauses when the network fails, because a cable pulled for a second must not cost
 * a whole transfer. start and commit are not repeated: the server acts on them once.
 */

import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

const HASH_RE = /^[0-9a-f]{64}$/;

/** The disk as the agent describes it to the server in start. */
export interface DiskDescription {
  readonly name: string;
  readonly size: number;
  readonly logicalSectorSize: number;
  readonly serial?: string;
}

import type { DiskLayout } from '../imaging/disk-layout.js';
export type { CaptureStart, CommitAnswer, DeployStart, NbdStart, StartAnswer } from '../transport/chunk-wire.js';
import type { CommitAnswer, StartAnswer } from '../transport/chunk-wire.js';

/** The counters the agent posts with each progress call (also its heartbeat). */
export interface ProgressReport {
  readonly phase: 'transferring' | 'verifying';
  readonly examined: number;
  readonly reusedChunks: number;
  readonly sentChunks: number;
  readonly zeroChunks: number;
  readonly totalChunks: number;
}

/** The server answered, and not with success: `status` and the server's own words. */
export class ApiError extends Error {
  constructor(
    readonly call: string,
    readonly status: number,
    readonly serverError: string,
    /** For a 409 commit: the chunks the server lacks. */
    readonly missing: readonly string[] = [],
  ) {
    super(`${call}: the server answered ${status}: ${serverError}`);
    this.name = 'ApiError';
  }
}

/** The server could not be reached (or stopped answering), even after the retries a call is allowed. */
export class NetworkError extends Error {
  constructor(call: string, server: string, cause: string, attempts: number, original?: unknown) {
    super(`${call}: could not reach the server at ${server} (${cause})${attempts > 1 ? ` after ${attempts} attempts` : ''}; check the network cable and that netclone serve is running, then retry the task`, { cause: original });
    this.name = 'NetworkError';
  }
}

export interface ApiOptions {
  readonly server: string;
  readonly token: string;
  /** Attempts of a repeatable call when the network fails (default 8: about 45 s of trying, well inside the server's 2-minute client timeout). */
  readonly attempts?: number;
  /** First pause before a repeat, doubled each time up to MAX_PAUSE_MS (default 500 ms). */
  readonly backoffMs?: number;
  /** A request without an answer for this long counts as a network failure (default 120 s). */
  readonly timeoutMs?: number;
  /** Pause between start calls while the server prepares the version (503), default 5 s. */
  readonly startPollMs?: number;
  /** Told about each repeat (the CLI prints it on stderr). */
  readonly onRetry?: (message: string) => void;
}

type Body = string | Uint8Array<ArrayBuffer> | undefined;

interface Request {
  readonly call: string;
  readonly method: 'GET' | 'POST' | 'PUT';
  readonly path: string;
  readonly body?: Body;
  readonly contentType?: string;
  readonly repeatable: boolean;
}

/** A whole answer: the status line, its headers and its body, read to the end. */
interface Answer {
  readonly status: number;
  readonly statusText: string;
  readonly body: Buffer<ArrayBuffer>;
}

/** Longest pause between two attempts of a call. */
const MAX_PAUSE_MS = 15_000;
/**
 * How long start keeps asking while the server answers 503: it does so while it prepares a version
 * fitted to a smaller disk (issue 12), which for a large disk takes as long as a shrink of its
 * filesystem. Nothing has happened to the disk yet, so asking again is always safe.
 */
const START_WAIT_MS = 3 * 3600 * 1000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The request took longer than the agent's timeout. */
class AnswerTimeout extends Error {
  constructor(ms: number) {
    super(`no answer in ${ms} ms`);
    this.name = 'TimeoutError';
  }
}

/** The most specific words for a failed request: the system error's code (ECONNREFUSED, …) first. */
function networkCause(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  if (err.name === 'TimeoutError') return 'no answer in time';
  const code = (err as Error & { code?: string }).code;
  if (code) return `${code}: ${err.message}`;
  const cause = (err as Error & { cause?: unknown }).cause;
  if (cause instanceof Error) {
    const inner = (cause as Error & { code?: string }).code;
    return inner ? `${inner}: ${cause.message}` : cause.message;
  }
  return err.message;
}

export class AgentApi {
  private readonly base: string;
  private readonly url: URL;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly timeoutMs: number;
  /**
   * Connections kept open between calls: a new TCP connection per 1 MiB chunk costs the agent and the
   * server a handshake each. Node honours the server's keep-alive hint, so a socket is not reused just
   * as the server closes it; a call that still meets such a socket is repeated at once (see send).
   */
  private readonly keepAlive: HttpAgent;
  private readonly request: typeof httpRequest;
  /** The server's host without IPv6 brackets, and the path the API lives under ('' at the root). */
  private readonly host: string;
  private readonly prefix: string;

  constructor(private readonly options: ApiOptions) {
    this.base = options.server.replace(/\/+$/, '');
    this.url = new URL(this.base);
    this.attempts = Math.max(1, options.attempts ?? 8);
    this.backoffMs = options.backoffMs ?? 500;
    this.timeoutMs = options.timeoutMs ?? 120_000;
    const https = this.url.protocol === 'https:';
    this.keepAlive = https ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
    this.request = https ? httpsRequest : httpRequest;
    this.host = this.url.hostname.replace(/^\[(.*)\]$/, '$1');
    this.prefix = this.url.pathname.replace(/\/+$/, '');
  }

  /** Closes the kept connections (the process may then end without waiting for the server to drop them). */
  close(): void {
    this.keepAlive.destroy();
  }

  /**
   * One HTTP exchange, body read to the end into one Buffer. A repeatable call rides a kept-alive
   * connection; start and commit get a fresh one, so a connection the server was just closing can
   * never swallow them.
   */
  private exchange(req: Request): Promise<Answer> {
    const body = typeof req.body === 'string' ? Buffer.from(req.body) : req.body;
    const headers: Record<string, string | number> = { authorization: `Bearer ${this.options.token}` };
    if (req.contentType) headers['content-type'] = req.contentType;
    if (body !== undefined) headers['content-length'] = body.byteLength;
    const reuse = req.repeatable;
    if (!reuse) headers.connection = 'close';
    return new Promise<Answer>((resolve, reject) => {
      let settled = false;
      const fail = (err: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(err);
      };
      const r = this.request(
        { protocol: this.url.protocol, hostname: this.host, port: this.url.port, path: `${this.prefix}${req.path}`, method: req.method, headers, agent: reuse ? this.keepAlive : false },
        (res) => {
          const declared = res.headers['content-length'] === undefined ? NaN : Number(res.headers['content-length']);
          // One buffer of the announced size, filled as pieces arrive: no list of pieces, no concat copy.
          const whole = Number.isSafeInteger(declared) && declared >= 0 ? Buffer.allocUnsafeSlow(declared) : null;
          const pieces: Buffer[] = [];
          let got = 0;
          res.on('data', (piece: Buffer) => {
            if (whole && got + piece.length <= whole.length) piece.copy(whole, got);
            else pieces.push(piece);
            got += piece.length;
          });
          res.on('error', fail);
          res.on('aborted', () => fail(Object.assign(new Error(`the connection closed after ${got} bytes of the answer`), { code: 'ECONNRESET' })));
          res.on('end', () => {
            if (whole && got !== whole.length) {
              fail(new Error(`got ${got} of ${whole.length} bytes`));
              return;
            }
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            resolve({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? '', body: whole ?? Buffer.concat(pieces) });
          });
        },
      );
      // Errors and answers arrive asynchronously, so every path that clears this timer runs after it is set.
      const timer = setTimeout(() => r.destroy(new AnswerTimeout(this.timeoutMs)), this.timeoutMs);
      // A kept-alive connection that failed under a call: send() may repeat it at once (see there).
      r.on('error', (err) => fail(Object.assign(err, { reusedSocket: r.reusedSocket })));
      r.end(body);
    });
  }

  /** Sends the request (repeating it on network failures and 503 answers when allowed) and returns a successful answer. */
  private async send(req: Request): Promise<Answer> {
    const tries = req.repeatable ? this.attempts : 1;
    let staleRetried = false;
    for (let attempt = 1; ; attempt++) {
      let res: Answer;
      try {
        res = await this.exchange(req);
      } catch (err) {
        // A kept connection the server closed as this call went out: not a network failure, go again at once.
        if (req.repeatable && !staleRetried && (err as { reusedSocket?: boolean }).reusedSocket && (err as NodeJS.ErrnoException).code === 'ECONNRESET') {
          staleRetried = true;
          attempt--;
          continue;
        }
        const cause = networkCause(err);
        if (attempt >= tries) throw new NetworkError(req.call, this.base, cause, attempt, err);
        const pause = Math.min(MAX_PAUSE_MS, this.backoffMs * 2 ** (attempt - 1));
        this.options.onRetry?.(`${req.call}: ${cause}; trying again in ${pause} ms (attempt ${attempt + 1} of ${tries})`);
        await sleep(pause);
        continue;
      }
      if (res.status >= 200 && res.status < 300) return res;
      const text = res.body.toString('utf8');
      // 503 means "not now": a server shutting down for a restart answers it to calls in flight.
      if (res.status === 503 && attempt < tries) {
        const pause = Math.min(MAX_PAUSE_MS, this.backoffMs * 2 ** (attempt - 1));
        this.options.onRetry?.(`${req.call}: the server answered 503 (${text.slice(0, 120) || res.statusText}); trying again in ${pause} ms (attempt ${attempt + 1} of ${tries})`);
        await sleep(pause);
        continue;
      }
      let error = text.slice(0, 500) || res.statusText;
      let missing: string[] = [];
      try {
        const json = JSON.parse(text) as { error?: unknown; missing?: unknown };
        if (typeof json.error === 'string') error = json.error;
        if (Array.isArray(json.missing)) missing = json.missing.filter((h): h is string => typeof h === 'string' && HASH_RE.test(h));
      } catch {
        // Not JSON (a proxy's page, say): the text itself is the best account there is.
      }
      throw new ApiError(req.call, res.status, error, missing);
    }
  }

  private async json<T>(req: Request): Promise<T> {
    const res = await this.send(req);
    try {
      return JSON.parse(res.body.toString('utf8')) as T;
    } catch (err) {
      throw new Error(`${req.call}: the server's answer is not JSON (${(err as Error).message}); is ${this.base} a netclone server of the same version?`, { cause: err });
    }
  }

  async start(disk: DiskDescription): Promise<StartAnswer> {
    const deadline = Date.now() + START_WAIT_MS;
    const pause = this.options.startPollMs ?? 5000;
    for (;;) {
      try {
        return await this.json<StartAnswer>({ call: 'start', method: 'POST', path: '/api/client/v1/start', body: JSON.stringify({ disk }), contentType: 'application/json', repeatable: false });
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 503 || Date.now() + pause > deadline) throw err;
        this.options.onRetry?.(`start: ${err.serverError}; asking again in ${pause / 1000} s`);
        await sleep(pause);
      }
    }
  }

  /** The subset of `hashes` the server already has for this capture. */
  async known(hashes: readonly string[]): Promise<Set<string>> {
    const answer = await this.json<{ known?: unknown }>({ call: 'known', method: 'POST', path: '/api/client/v1/chunks/known', body: JSON.stringify({ hashes }), contentType: 'application/json', repeatable: true });
    if (!Array.isArray(answer.known)) throw new Error('known: the server\'s answer has no "known" list; is the server the same netclone version as this agent?');
    const asked = new Set(hashes);
    return new Set(answer.known.filter((h): h is string => typeof h === 'string' && asked.has(h)));
  }

  /** Uploads one chunk file (header and payload as chunk-format encodes them). */
  async putChunk(hash: string, file: Uint8Array<ArrayBuffer>): Promise<{ stored: number; existed: boolean }> {
    return this.json({ call: `upload of chunk ${hash}`, method: 'PUT', path: `/api/client/v1/chunks/${hash}`, body: file, contentType: 'application/octet-stream', repeatable: true });
  }

  /** Tells the server what the probe learnt of the disk; the commit keeps it beside the version. Repeating it replaces it. */
  async putLayout(layout: DiskLayout): Promise<void> {
    await this.send({ call: 'disk layout', method: 'POST', path: '/api/client/v1/chunks/layout', body: JSON.stringify(layout), contentType: 'application/json', repeatable: true });
  }

  /** Commits the ordered chunk list (32 raw bytes a chunk, zeros for a hole). A 409 ApiError names the missing chunks. */
  commit(list: Uint8Array<ArrayBuffer>): Promise<CommitAnswer> {
    return this.json<CommitAnswer>({ call: 'commit', method: 'POST', path: '/api/client/v1/chunks/commit', body: list, contentType: 'application/octet-stream', repeatable: false });
  }

  /** The deploy's chunk list, 32 bytes a chunk. */
  async list(): Promise<Buffer> {
    return (await this.send({ call: 'chunk list', method: 'GET', path: '/api/client/v1/chunks/list', repeatable: true })).body;
  }

  /**
   * A stored chunk file as the server holds it (not decoded), in a buffer of its own (not a slice of
   * a shared pool), so it can be moved to a worker thread. A connection cut while the body streams in
   * is a network failure too: the whole request is repeated, not only the part before the headers.
   */
  async getChunk(hash: string): Promise<Buffer<ArrayBuffer>> {
    const { body } = await this.send({ call: `download of chunk ${hash}`, method: 'GET', path: `/api/client/v1/chunks/${hash}`, repeatable: true });
    if (body.byteOffset === 0 && body.byteLength === body.buffer.byteLength) return body as Buffer<ArrayBuffer>;
    const own = Buffer.allocUnsafeSlow(body.length);
    body.copy(own);
    return own;
  }

  async progress(report: ProgressReport): Promise<void> {
    await this.send({ call: 'progress', method: 'POST', path: '/api/client/v1/progress', body: JSON.stringify(report), contentType: 'application/json', repeatable: false });
  }
}
