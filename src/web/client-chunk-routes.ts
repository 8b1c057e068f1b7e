/**
 * The chunk transport of the imaging client's API (issue 11; contract: boot/client/README.md).
 * Registered by client-routes inside its plugin, so the task-token check there runs first and a
 * token only ever reaches its own task's transfer.
 *
 * Capture: known (which hashes need no upload), PUT of chunk files, commit of the ordered list.
 * Deploy: the version's chunk list and its chunk files, sent as stored (never decoded here).
 * A capture token cannot fetch chunk files and a deploy token cannot upload; every body is bounded
 * before it is read, by what this task's disk can need; the bytes of every body are counted on the
 * task's meter.
 */
import { Transform, type Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { TaskRecord } from '../domain/database.js';
import type { TransferService } from '../domain/transfers.js';
import { ChunkTransferError, KNOWN_BATCH, type ChunkTransfer } from '../transport/chunk-transfer.js';
import { MAX_CHUNK_SIZE, maxChunkFileSize } from '../imaging/chunk-format.js';
import { classifyError } from './errors.js';
import type { Logger } from '../lib/log.js';

export interface ClientChunkRoutesContext {
  readonly logger: Logger;
  readonly transfers: Pick<TransferService, 'chunkTransfer'>;
}

/** Which transfer a route serves: capture routes refuse a deploy's token and the other way round. */
type RouteKind = 'capture' | 'deploy';

declare module 'fastify' {
  interface FastifyRequest {
    chunkTransfer?: ChunkTransfer;
    /** Body bytes read so far (counted on the task's meter when the answer has gone). */
    chunkBodyBytes?: number;
  }
  interface FastifyContextConfig {
    chunkRoute?: RouteKind;
  }
}

const HEX64 = '^[0-9a-f]{64}$';
const KnownSchema = Type.Object(
  { hashes: Type.Array(Type.String({ pattern: HEX64 }), { minItems: 1, maxItems: KNOWN_BATCH }) },
  { additionalProperties: false },
);
/** A known() request: 1024 quoted hashes and commas, with room for whitespace. */
const KNOWN_BODY_LIMIT = 128 * 1024;
/** A disk layout: its free-chunk runs grow with fragmentation; 16 MiB holds a badly fragmented multi-terabyte disk's. */
const LAYOUT_BODY_LIMIT = 16 * 1024 * 1024;
/** Static ceilings; the task's own bounds (its chunk size and chunk count) are checked before reading. */
const PUT_BODY_CEILING = maxChunkFileSize(MAX_CHUNK_SIZE);
const LIST_BODY_CEILING = 1024 * 1024 * 1024;

function httpError(status: number, message: string): Error & { statusCode: number } {
  return Object.assign(new Error(message), { statusCode: status });
}

function kindError(want: RouteKind, task: TaskRecord): ChunkTransferError {
  return want === 'capture'
    ? new ChunkTransferError(403, `this task is a ${task.kind}; its token cannot upload chunks or commit a version`)
    : new ChunkTransferError(403, `this task is a ${task.kind}; its token cannot fetch chunk files or a chunk list`);
}

/** `payload`, failing with 413 once more than `limit` bytes arrive, and counting them on `req`. */
function bounded(req: FastifyRequest, payload: Readable, limit: number, what: string): Readable {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    throw httpError(413, `${what} is ${declared} bytes; this task takes at most ${limit}`);
  }
  req.chunkBodyBytes = 0;
  const counted = new Transform({
    transform(piece: Buffer, _enc, done) {
      req.chunkBodyBytes = (req.chunkBodyBytes ?? 0) + piece.length;
      if ((req.chunkBodyBytes ?? 0) > limit) done(httpError(413, `${what} is larger than ${limit} bytes, the most this task takes`));
      else done(null, piece);
    },
  });
  payload.on('error', (err) => counted.destroy(err));
  return payload.pipe(counted);
}

/** Bytes of the answer's body: counted as it is sent (a stream by its content-length). */
function answerBytes(reply: FastifyReply, payload: unknown): number {
  if (typeof payload === 'string') return Buffer.byteLength(payload);
  if (Buffer.isBuffer(payload)) return payload.length;
  const length = Number(reply.getHeader('content-length') ?? 0);
  return Number.isFinite(length) ? length : 0;
}

export function clientChunkRoutes(ctx: ClientChunkRoutesContext) {
  return async function plugin(app: FastifyInstance): Promise<void> {
    // Raw chunk files and chunk lists, as one Buffer (the bounds are per route and per task).
    app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

    // Errors here are what the agent shows: {"error": "..."} (plus "missing" for a commit that lacks chunks).
    app.setErrorHandler((error, req, reply) => {
      if (error instanceof ChunkTransferError) {
        // The agent shows it on the PC's screen; the admin learns of a full store here.
        if (error.status === 507) ctx.logger.error({ task: (req.clientTask as TaskRecord | undefined)?.id, url: req.url.slice(0, 200), err: error.message }, 'chunk upload failed: the image store is full');
        return reply.code(error.status).send(error.missing ? { error: error.message, missing: error.missing } : { error: error.message });
      }
      const problem = classifyError(error);
      if (problem.status >= 500) req.log.error({ err: error, url: req.url }, 'chunk transfer request failed');
      return reply.code(problem.status).send({ error: problem.message });
    });

    // Runs after the token check of client-routes: the task is known and the token valid.
    app.addHook('onRequest', async (req) => {
      const want = req.routeOptions.config.chunkRoute;
      if (!want) return;
      const task = req.clientTask as TaskRecord;
      const transfer = ctx.transfers.chunkTransfer(task);
      if (!transfer) throw new ChunkTransferError(409, 'no chunk transfer is open for this task; POST start first');
      if (transfer.kind !== want) {
        ctx.logger.warn({ task: task.id, mac: task.mac, url: req.url.slice(0, 200) }, `a ${task.kind} token was used on a ${want} chunk route`);
        throw kindError(want, task);
      }
      req.chunkTransfer = transfer;
    });

    // Counted when the answer goes out, so the count is complete before the client can act on the answer.
    app.addHook('onSend', async (req, reply, payload) => {
      req.chunkTransfer?.countWire((req.chunkBodyBytes ?? 0) + answerBytes(reply, payload));
      return payload;
    });

    const captureOf = (req: FastifyRequest) => {
      const t = req.chunkTransfer;
      if (t?.kind !== 'capture') throw kindError('capture', req.clientTask as TaskRecord);
      return t;
    };
    const deployOf = (req: FastifyRequest) => {
      const t = req.chunkTransfer;
      if (t?.kind !== 'deploy') throw kindError('deploy', req.clientTask as TaskRecord);
      return t;
    };

    app.post<{ Body: Static<typeof KnownSchema> }>(
      '/api/client/v1/chunks/known',
      {
        config: { chunkRoute: 'capture' },
        bodyLimit: KNOWN_BODY_LIMIT,
        schema: { body: KnownSchema },
        preParsing: async (req, _reply, payload) => bounded(req, payload, KNOWN_BODY_LIMIT, 'the known request'),
      },
      async (req) => ({ known: await captureOf(req).known(req.body.hashes) }),
    );

    app.put<{ Params: { hash: string }; Body: Buffer }>(
      '/api/client/v1/chunks/:hash',
      {
        config: { chunkRoute: 'capture' },
        bodyLimit: PUT_BODY_CEILING,
        preParsing: async (req, _reply, payload) => {
          const t = captureOf(req);
          return bounded(req, payload, t.maxFileBytes, `chunk file ${String((req.params as { hash?: string }).hash ?? '').slice(0, 64)}`);
        },
      },
      async (req, reply) => {
        if (!Buffer.isBuffer(req.body)) throw new ChunkTransferError(400, 'send the chunk file as the body, with Content-Type: application/octet-stream');
        const out = await captureOf(req).put(req.params.hash, req.body);
        return reply.code(201).send({ stored: out.stored, existed: out.existed });
      },
    );

    app.post<{ Body: unknown }>(
      '/api/client/v1/chunks/layout',
      {
        config: { chunkRoute: 'capture' },
        bodyLimit: LAYOUT_BODY_LIMIT,
        preParsing: async (req, _reply, payload) => bounded(req, payload, LAYOUT_BODY_LIMIT, 'the disk layout'),
      },
      async (req, reply) => {
        captureOf(req).setLayout(req.body);
        return reply.code(204).send();
      },
    );

    app.post<{ Body: Buffer }>(
      '/api/client/v1/chunks/commit',
      {
        config: { chunkRoute: 'capture' },
        bodyLimit: LIST_BODY_CEILING,
        preParsing: async (req, _reply, payload) => bounded(req, payload, captureOf(req).listBytes, 'the chunk list'),
      },
      async (req) => {
        if (!Buffer.isBuffer(req.body)) throw new ChunkTransferError(400, 'send the chunk list as the body, with Content-Type: application/octet-stream');
        const task = req.clientTask as TaskRecord;
        const v = await captureOf(req).commit(req.body);
        ctx.logger.info({ task: task.id, mac: task.mac, image: task.image, version: v.version }, 'chunk upload committed');
        return { version: v.version, digest: v.digest, dataBytes: v.dataBytes };
      },
    );

    // No HEAD routes: a HEAD of a chunk file would open the file only to send nothing.
    app.get('/api/client/v1/chunks/list', { config: { chunkRoute: 'deploy' }, exposeHeadRoute: false }, async (req, reply) => {
      const list = deployOf(req).list();
      return reply.type('application/octet-stream').send(list);
    });

    app.get<{ Params: { hash: string } }>('/api/client/v1/chunks/:hash', { config: { chunkRoute: 'deploy' }, exposeHeadRoute: false }, async (req, reply) => {
      const file = await deployOf(req).chunkFile(req.params.hash);
      return reply.type('application/octet-stream').header('content-length', file.size).send(file.bytes);
    });
  };
}
