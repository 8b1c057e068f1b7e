/**
 * The agent's side of the client API (/api/client/v1/, chunk transport of issue 11): one method per
 * call, the task token on every request, the server's own `error` text in every failure.
 *
 * Calls that may safely be repeated (known, a chunk PUT or GET, the list, progress) are retried a few
 * times with growing pauses when the network fails, because a cable pulled for a second must not cost
 * a whole transfer. start and commit are not repeated: the server acts on them once.
 */

const HASH_RE = /^[0-9a-f]{64}$/;

/** The disk as the agent describes it to the server in start. */
export interface DiskDescription {
  readonly name: string;
  readonly size: number;
  readonly logicalSectorSize: number;
  readonly serial?: string;
}

export interface CaptureStart {
  readonly transport: 'chunks';
  readonly kind: 'capture';
  readonly size: number;
  readonly sectorSize: number;
  readonly chunkSize: number;
  readonly knownBatch: number;
}

export interface DeployStart {
  readonly transport: 'chunks';
  readonly kind: 'deploy';
  readonly size: number;
  readonly sectorSize: number;
  readonly chunkSize: number;
  readonly chunkCount: number;
  readonly version: number;
  readonly digest: string;
}

export interface NbdStart {
  readonly transport: 'nbd';
  readonly nbd: string;
}

export type StartAnswer = CaptureStart | DeployStart | NbdStart;

export interface CommitAnswer {
  readonly version: number;
  readonly digest: string;
  readonly dataBytes: number;
}

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

/** Longest pause between two attempts of a call. */
const MAX_PAUSE_MS = 15_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The most specific words for a failed fetch: undici hides the system error (ECONNREFUSED, …) in `cause`. */
function networkCause(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  if (err.name === 'TimeoutError') return 'no answer in time';
  const cause = (err as Error & { cause?: unknown }).cause;
  if (cause instanceof Error) {
    const code = (cause as Error & { code?: string }).code;
    return code ? `${code}: ${cause.message}` : cause.message;
  }
  return err.message;
}

export class AgentApi {
  private readonly base: string;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly timeoutMs: number;

  constructor(private readonly options: ApiOptions) {
    this.base = options.server.replace(/\/+$/, '');
    this.attempts = Math.max(1, options.attempts ?? 8);
    this.backoffMs = options.backoffMs ?? 500;
    this.timeoutMs = options.timeoutMs ?? 120_000;
  }

  /** Sends the request (repeating it on network failures and 503 answers when allowed) and returns a successful response. */
  private async send(req: Request): Promise<Response> {
    const tries = req.repeatable ? this.attempts : 1;
    for (let attempt = 1; ; attempt++) {
      let res: Response;
      try {
        const headers: Record<string, string> = { authorization: `Bearer ${this.options.token}` };
        if (req.contentType) headers['content-type'] = req.contentType;
        res = await fetch(`${this.base}${req.path}`, { method: req.method, headers, body: req.body, signal: AbortSignal.timeout(this.timeoutMs) });
      } catch (err) {
        const cause = networkCause(err);
        if (attempt >= tries) throw new NetworkError(req.call, this.base, cause, attempt, err);
        const pause = Math.min(MAX_PAUSE_MS, this.backoffMs * 2 ** (attempt - 1));
        this.options.onRetry?.(`${req.call}: ${cause}; trying again in ${pause} ms (attempt ${attempt + 1} of ${tries})`);
        await sleep(pause);
        continue;
      }
      if (res.ok) return res;
      const text = await res.text().catch(() => '');
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
      return (await res.json()) as T;
    } catch (err) {
      throw new Error(`${req.call}: the server's answer is not JSON (${(err as Error).message}); is ${this.base} a netclone server of the same version?`, { cause: err });
    }
  }

  start(disk: DiskDescription): Promise<StartAnswer> {
    return this.json<StartAnswer>({ call: 'start', method: 'POST', path: '/api/client/v1/start', body: JSON.stringify({ disk }), contentType: 'application/json', repeatable: false });
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

  /** Commits the ordered chunk list (32 raw bytes a chunk, zeros for a hole). A 409 ApiError names the missing chunks. */
  commit(list: Uint8Array<ArrayBuffer>): Promise<CommitAnswer> {
    return this.json<CommitAnswer>({ call: 'commit', method: 'POST', path: '/api/client/v1/chunks/commit', body: list, contentType: 'application/octet-stream', repeatable: false });
  }

  /** The deploy's chunk list, 32 bytes a chunk. */
  async list(): Promise<Buffer> {
    return this.bytes({ call: 'chunk list', method: 'GET', path: '/api/client/v1/chunks/list', repeatable: true });
  }

  /** A stored chunk file as the server holds it (not decoded). */
  getChunk(hash: string): Promise<Buffer> {
    return this.bytes({ call: `download of chunk ${hash}`, method: 'GET', path: `/api/client/v1/chunks/${hash}`, repeatable: true });
  }

  async progress(report: ProgressReport): Promise<void> {
    await this.send({ call: 'progress', method: 'POST', path: '/api/client/v1/progress', body: JSON.stringify(report), contentType: 'application/json', repeatable: false });
  }

  /**
   * The body of a GET. A connection cut while the body streams in is a network failure too, so the
   * whole request is repeated, not only the part before the headers.
   */
  private async bytes(req: Request): Promise<Buffer> {
    for (let attempt = 1; ; attempt++) {
      const res = await this.send(req);
      try {
        const body = Buffer.from(await res.arrayBuffer());
        const declared = res.headers.get('content-length');
        if (declared !== null && Number(declared) !== body.length) throw new Error(`got ${body.length} of ${declared} bytes`);
        return body;
      } catch (err) {
        const cause = networkCause(err);
        if (attempt >= this.attempts) throw new NetworkError(req.call, this.base, cause, attempt, err);
        const pause = Math.min(MAX_PAUSE_MS, this.backoffMs * 2 ** (attempt - 1));
        this.options.onRetry?.(`${req.call}: ${cause}; trying again in ${pause} ms (attempt ${attempt + 1} of ${this.attempts})`);
        await sleep(pause);
      }
    }
  }
}
