/**
 * Retention on the web (issue 13): the JSON API (prune with dry run, the stored policy, protect,
 * notes, the store-wide space) and the image page's forms (note, protect toggle, policy, prune with
 * a dry-run preview). Everything goes through the commands, so the API, the page and the CLI refuse
 * the same things with the same words.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { POLICY_KEYS, describePolicy, parsePolicy, RetentionPolicyError, type RetentionPolicy } from '../imaging/retention.js';
import { CommandError } from '../domain/commands.js';
import type { PruneResult } from '../domain/retention.js';
import { operatorOf } from './auth.js';
import type { WebContext } from './context.js';
import { setFlash } from './flash.js';
import { formatBytes } from './format.js';
import { csrfFor, renderPage } from './pages.js';
import { imagePage } from './pages/images.js';
import type { VerifyTracker } from './verify-tracker.js';
import * as S from './schemas.js';

const err = { 400: S.ErrorBody, 401: S.ErrorBody, 403: S.ErrorBody, 404: S.ErrorBody, 409: S.ErrorBody };
const security: Array<Record<string, string[]>> = [{ bearer: [] }, { session: [] }];

const Reason = Type.Object({ rule: Type.String({ description: 'newest, protected, in use, no policy, last, hourly, daily, weekly or monthly' }), text: Type.String() });
const Decision = Type.Object({ version: Type.Integer(), created: Type.String(), keep: Type.Boolean(), reasons: Type.Array(Reason, { description: 'empty exactly when the version goes' }) });

export const PruneResultBody = Type.Object({
  image: Type.String(),
  policy: S.RetentionPolicyBody,
  policySource: Type.Union([Type.Literal('given'), Type.Literal('stored'), Type.Literal('keep-versions')], { description: 'given in the request, the image\'s stored policy, or keep-last keep-versions' }),
  dryRun: Type.Boolean(),
  decisions: Type.Array(Decision, { description: 'newest first' }),
  removed: Type.Array(Type.Integer()),
  spared: Type.Array(Type.Integer(), { description: 'versions the policy dropped that a task or a protect flag took meanwhile' }),
  gc: Type.Union([Type.Object({ removedChunks: Type.Integer(), freedBytes: Type.Number() }), Type.Null()]),
});

export const PruneBody = Type.Object({
  ...S.RetentionPolicyBody.properties,
  dryRun: Type.Optional(Type.Boolean({ description: 'say what would go, remove nothing' })),
}, { additionalProperties: false, description: 'keep rules for this prune; none: the stored policy, else keep-last keep-versions' });

const RetentionView = Type.Object({ image: Type.String(), retention: Type.Union([S.RetentionPolicyBody, Type.Null()]) });
const VersionMetaView = Type.Object({ image: Type.String(), version: Type.Integer(), protected: Type.Boolean(), note: Type.String() });
const NoteBody = Type.Object({ note: Type.String({ maxLength: 2000 }) }, { additionalProperties: false });

export const StoreSpaceBody = Type.Object({
  storedBytes: Type.Number({ description: 'distinct chunk bytes on disk that versions name' }),
  logicalBytes: Type.Number({ description: 'data of all versions, each counted in full' }),
  referencedBytes: Type.Number({ description: 'chunk bytes per use: logical − referenced is what compression saves, referenced − stored what dedup saves' }),
  dedupSavings: Type.Number(), compressionSavings: Type.Number(), versionCount: Type.Integer(),
  images: Type.Array(Type.Object({
    name: Type.String(), logicalBytes: Type.Number(), referencedBytes: Type.Number(),
    attributedBytes: Type.Number({ description: "the image's share: chunks shared with other images split between them; the shares add up to storedBytes" }),
    exclusiveBytes: Type.Number(), sharedBytes: Type.Number(), dedupSavings: Type.Number(),
  })),
});

// Forms send text; an empty field is a rule left off.
const FormPolicy = Type.Object({
  ...Object.fromEntries(POLICY_KEYS.map((k) => [k, Type.Optional(Type.String({ maxLength: 12 }))])),
  dryRun: Type.Optional(Type.String({ maxLength: 8 })),
  do: Type.Optional(Type.Union([Type.Literal('save'), Type.Literal('preview')])),
  _csrf: Type.Optional(Type.String()),
});
const FormProtect = Type.Object({ protected: Type.Union([Type.Literal('0'), Type.Literal('1')]), _csrf: Type.Optional(Type.String()) });
const FormNote = Type.Object({ note: Type.Optional(Type.String({ maxLength: 2000 })), _csrf: Type.Optional(Type.String()) });

/** The keep rules a form or query gave; undefined when every field is empty. */
export function policyOfForm(f: Readonly<Record<string, unknown>>): RetentionPolicy | undefined {
  const raw: Record<string, number> = {};
  for (const k of POLICY_KEYS) {
    const v = typeof f[k] === 'string' ? (f[k] as string).trim() : '';
    if (v === '') continue;
    if (!/^\d{1,6}$/.test(v)) throw new CommandError(400, `${k.replace('keep', '')} must be a whole number of versions to keep, not "${v.slice(0, 20)}"`);
    raw[k] = Number(v);
  }
  if (Object.keys(raw).length === 0) return undefined;
  try {
    return parsePolicy(raw);
  } catch (e) {
    if (e instanceof RetentionPolicyError) throw new CommandError(400, e.message);
    throw e;
  }
}

function sendHtml(reply: FastifyReply, body: string): FastifyReply {
  return reply.code(200).type('text/html; charset=utf-8').header('Cache-Control', 'no-store').send(body);
}

function pruneFlash(r: PruneResult): string {
  if (r.removed.length === 0) return `Nothing removed from ${r.image}: ${describePolicy(r.policy)} keeps every version.`;
  return `Removed version${r.removed.length === 1 ? '' : 's'} ${r.removed.join(', ')} of ${r.image} (${describePolicy(r.policy)}); gc freed ${formatBytes(r.gc?.freedBytes ?? 0)}.`;
}

export function registerRetentionRoutes(app: FastifyInstance, ctx: WebContext, verifier: VerifyTracker): void {
  const { commands } = ctx;

  // ---- API ----
  app.post<{ Params: Static<typeof S.ImageParams>; Body: Static<typeof PruneBody> | undefined }>('/api/v1/images/:name/prune', {
    schema: { tags: ['images'], summary: 'Remove versions by retention policy (the body\'s rules, else the stored policy), then gc; dryRun only says what would go', security, params: S.ImageParams, body: PruneBody, response: { 200: PruneResultBody, ...err } },
  }, async (req) => {
    const { dryRun, ...rules } = req.body ?? {};
    const policy = Object.keys(rules).length > 0 ? policyOfBody(rules) : undefined;
    return commands.pruneImage(operatorOf(req), req.params.name, { policy, dryRun: dryRun === true });
  });

  app.get<{ Params: Static<typeof S.ImageParams> }>('/api/v1/images/:name/retention', {
    schema: { tags: ['images'], summary: 'The image\'s stored retention policy', security, params: S.ImageParams, response: { 200: RetentionView, ...err } },
  }, async (req) => commands.imageRetention(operatorOf(req), req.params.name));

  app.put<{ Params: Static<typeof S.ImageParams>; Body: Static<typeof S.RetentionPolicyBody> }>('/api/v1/images/:name/retention', {
    schema: { tags: ['images'], summary: 'Store the image\'s retention policy (applied after each capture); {} clears it', security, params: S.ImageParams, body: S.RetentionPolicyBody, response: { 200: RetentionView, ...err } },
  }, async (req) => {
    const policy = policyOfBody(req.body);
    return commands.imageRetention(operatorOf(req), req.params.name, Object.keys(policy).length > 0 ? policy : null);
  });

  app.put<{ Params: Static<typeof S.VersionParams> }>('/api/v1/images/:name/versions/:n/protect', {
    schema: { tags: ['images'], summary: 'Protect a version: no prune removes it, and it cannot be deleted until unprotected', security, params: S.VersionParams, response: { 200: VersionMetaView, ...err } },
  }, async (req) => commands.protectVersion(operatorOf(req), req.params.name, req.params.n, true));

  app.delete<{ Params: Static<typeof S.VersionParams> }>('/api/v1/images/:name/versions/:n/protect', {
    schema: { tags: ['images'], summary: 'Unprotect a version', security, params: S.VersionParams, response: { 200: VersionMetaView, ...err } },
  }, async (req) => commands.protectVersion(operatorOf(req), req.params.name, req.params.n, false));

  app.put<{ Params: Static<typeof S.VersionParams>; Body: Static<typeof NoteBody> }>('/api/v1/images/:name/versions/:n/note', {
    schema: { tags: ['images'], summary: 'Set a version\'s note (one line, at most 500 characters; "" clears it)', security, params: S.VersionParams, body: NoteBody, response: { 200: VersionMetaView, ...err } },
  }, async (req) => commands.noteVersion(operatorOf(req), req.params.name, req.params.n, req.body.note));

  app.get('/api/v1/store/space', {
    schema: { tags: ['images'], summary: 'What the whole store holds on disk against all versions\' data, and each image\'s share', security, response: { 200: StoreSpaceBody, ...err } },
  }, async (req) => commands.storeSpace(operatorOf(req)));

  // ---- the image page's forms ----
  app.get<{ Params: Static<typeof S.ImageParams>; Querystring: Static<typeof FormPolicy> }>('/images/:name/prune', {
    schema: { hide: true, params: S.ImageParams, querystring: FormPolicy },
  }, async (req, reply) => {
    // A preview is a GET: reloading it is safe, and it removes nothing.
    const actor = operatorOf(req);
    const preview = await commands.pruneImage(actor, req.params.name, { policy: policyOfForm(req.query), dryRun: true });
    const image = await commands.showImage(actor, req.params.name);
    const body = imagePage({ image, verify: verifier.get(req.params.name), csrf: csrfFor(req, reply), preview });
    return sendHtml(reply, renderPage(req, reply, { title: req.params.name, section: 'images', body }));
  });

  app.post<{ Params: Static<typeof S.ImageParams>; Body: Static<typeof FormPolicy> }>('/images/:name/prune', {
    schema: { hide: true, params: S.ImageParams, body: FormPolicy },
  }, async (req, reply) => {
    const r = await commands.pruneImage(operatorOf(req), req.params.name, { policy: policyOfForm(req.body) });
    setFlash(req, pruneFlash(r));
    return reply.redirect(`/images/${req.params.name}`, 303);
  });

  app.post<{ Params: Static<typeof S.ImageParams>; Body: Static<typeof FormPolicy> }>('/images/:name/retention', {
    schema: { hide: true, params: S.ImageParams, body: FormPolicy },
  }, async (req, reply) => {
    if (req.body.do === 'preview') {
      // The one policy form also previews: the preview is a GET of its own, so a reload repeats the dry run, never a removal.
      const rules = policyOfForm(req.body) ?? {};
      const query = new URLSearchParams([['dryRun', '1'], ...POLICY_KEYS.filter((k) => rules[k]).map((k) => [k, String(rules[k])])]);
      return reply.redirect(`/images/${req.params.name}/prune?${query.toString()}#prune-preview`, 303);
    }
    const r = await commands.imageRetention(operatorOf(req), req.params.name, policyOfForm(req.body) ?? null);
    setFlash(req, r.retention ? `Retention of ${r.image}: ${describePolicy(r.retention)}; applied after each capture.` : `Retention policy of ${r.image} removed; keep-versions applies.`);
    return reply.redirect(`/images/${req.params.name}#retention`, 303);
  });

  app.post<{ Params: Static<typeof S.VersionParams>; Body: Static<typeof FormProtect> }>('/images/:name/versions/:n/protect', {
    schema: { hide: true, params: S.VersionParams, body: FormProtect },
  }, async (req, reply) => {
    const on = req.body.protected === '1';
    await commands.protectVersion(operatorOf(req), req.params.name, req.params.n, on);
    setFlash(req, `Version ${req.params.n} of ${req.params.name} ${on ? 'protected: no prune removes it' : 'unprotected'}.`);
    return reply.redirect(`/images/${req.params.name}#v${req.params.n}`, 303);
  });

  app.post<{ Params: Static<typeof S.VersionParams>; Body: Static<typeof FormNote> }>('/images/:name/versions/:n/note', {
    schema: { hide: true, params: S.VersionParams, body: FormNote },
  }, async (req, reply) => {
    const m = await commands.noteVersion(operatorOf(req), req.params.name, req.params.n, req.body.note ?? '');
    setFlash(req, m.note ? `Note on version ${req.params.n} saved.` : `Note on version ${req.params.n} cleared.`);
    return reply.redirect(`/images/${req.params.name}#v${req.params.n}`, 303);
  });
}

function policyOfBody(rules: Readonly<Record<string, unknown>>): RetentionPolicy {
  try {
    return parsePolicy(rules);
  } catch (e) {
    if (e instanceof RetentionPolicyError) throw new CommandError(400, e.message);
    throw e;
  }
}
