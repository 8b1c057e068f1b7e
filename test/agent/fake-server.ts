/**
 * A stand-in for the appliance's chunk routes (the contract of issue 11), on loopback, for agent tests
 * that need to look at each request or make one fail: it keeps chunk files in memory, checks every
 * upload as the server must (sha256 of the decoded bytes against the name), and logs every call.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ChunkCodecContext } from '../../src/imaging/chunk-format.js';

export interface FakeCall {
  readonly method: string;
  readonly path: string;
  readonly bytesIn: number;
  readonly status: number;
}

export interface FakeSetup {
  readonly token: string;
  readonly kind: 'capture' | 'deploy';
  readonly chunkSize: number;
  /** Capture: the disk size the server expects. Deploy: the image's size. */
  readonly size: number;
  /** Deploy: the version's list (32 bytes a chunk, zeros = hole) and digest. */
  readonly list?: Buffer;
  readonly digest?: string;
  /** Chunk files the server holds (capture: the previous version's, which known() reports). */
  readonly files?: Map<string, Buffer>;
  readonly knownBatch?: number;
}

export class FakeServer {
  readonly calls: FakeCall[] = [];
  readonly progress: Record<string, unknown>[] = [];
  readonly files: Map<string, Buffer>;
  committed: Buffer | null = null;
  started = false;
  /** Hashes dropped at the first commit (as if lost between known() and commit): the commit answers 409 naming them. */
  loseAtCommit = new Set<string>();
  /** The next this-many chunk PUTs or GETs have their connection cut before an answer. */
  cutNext = 0;
  private readonly codec = new ChunkCodecContext();
  private server!: Server;
  url = '';

  constructor(private readonly setup: FakeSetup) {
    this.files = new Map(setup.files ?? []);
  }

  async listen(): Promise<this> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => this.handle(req, res, Buffer.concat(chunks)));
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  count(method: string, prefix: string): number {
    return this.calls.filter((c) => c.method === method && c.path.startsWith(prefix) && c.status < 300).length;
  }

  private handle(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    const path = req.url ?? '';
    const send = (status: number, payload: unknown, raw?: Buffer): void => {
      this.calls.push({ method: req.method ?? '', path, bytesIn: body.length, status });
      if (raw) {
        res.writeHead(status, { 'content-type': 'application/octet-stream', 'content-length': raw.length });
        res.end(raw);
      } else {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(payload));
      }
    };
    if (req.headers.authorization !== `Bearer ${this.setup.token}`) return send(403, { error: 'this task token is not valid (wrong, or its task has ended); reboot the PC to start over' });
    const chunk = /^\/api\/client\/v1\/chunks\/([0-9a-f]{64})$/.exec(path);
    if (chunk && this.cutNext > 0) {
      this.cutNext--;
      this.calls.push({ method: req.method ?? '', path, bytesIn: body.length, status: 0 });
      req.socket.destroy();
      return;
    }
    const s = this.setup;
    if (req.method === 'POST' && path === '/api/client/v1/start') {
      this.started = true;
      const disk = (JSON.parse(body.toString()) as { disk: { size: number } }).disk;
      if (s.kind === 'capture') return send(200, { transport: 'chunks', kind: 'capture', size: disk.size, sectorSize: 512, chunkSize: s.chunkSize, knownBatch: s.knownBatch ?? 1024 });
      if (disk.size < s.size) return send(409, { error: `the disk is smaller than image fake` });
      return send(200, { transport: 'chunks', kind: 'deploy', size: s.size, sectorSize: 512, chunkSize: s.chunkSize, chunkCount: Math.ceil(s.size / s.chunkSize), version: 1, digest: s.digest, layout: null, mainPartition: null });
    }
    if (req.method === 'POST' && path === '/api/client/v1/progress') {
      this.progress.push(JSON.parse(body.toString()) as Record<string, unknown>);
      return send(200, { ok: true });
    }
    if (!this.started) return send(409, { error: 'no chunk transfer is open for this task; POST start first' });
    if (req.method === 'POST' && path === '/api/client/v1/chunks/known') {
      const { hashes } = JSON.parse(body.toString()) as { hashes: string[] };
      if (hashes.length < 1 || hashes.length > (s.knownBatch ?? 1024)) return send(400, { error: `${hashes.length} hashes in one known call` });
      return send(200, { known: hashes.filter((h) => this.files.has(h)) });
    }
    if (req.method === 'PUT' && chunk) {
      try {
        this.codec.decodeChecked(body, chunk[1], 'full');
      } catch (err) {
        return send(400, { error: `chunk ${chunk[1]} refused: ${(err as Error).message}` });
      }
      const existed = this.files.has(chunk[1]);
      this.files.set(chunk[1], body);
      return send(201, { stored: body.length, existed });
    }
    if (req.method === 'POST' && path === '/api/client/v1/chunks/commit') {
      if (body.length !== Math.ceil(s.size / s.chunkSize) * 32) return send(400, { error: `list of ${body.length} bytes` });
      for (const h of this.loseAtCommit) this.files.delete(h);
      this.loseAtCommit = new Set();
      const missing = new Set<string>();
      for (let i = 0; i < body.length; i += 32) {
        const raw = body.subarray(i, i + 32);
        if (raw.every((b) => b === 0)) continue;
        const h = raw.toString('hex');
        if (!this.files.has(h)) missing.add(h);
      }
      if (missing.size > 0) return send(409, { error: `${missing.size} listed chunks are missing`, missing: [...missing] });
      this.committed = Buffer.from(body);
      return send(200, { version: 2, digest: 'f'.repeat(64), dataBytes: 0 });
    }
    if (req.method === 'GET' && path === '/api/client/v1/chunks/list') return send(200, null, s.list);
    if (req.method === 'GET' && chunk) {
      const file = this.files.get(chunk[1]);
      if (!file) return send(404, { error: `chunk ${chunk[1]} is not part of this version` });
      return send(200, null, file);
    }
    return send(404, { error: `no route ${req.method} ${path}` });
  }
}
