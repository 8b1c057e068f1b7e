/** GET /api/v1/protection: each PC's backup status, as the dashboard's protection view shows it. */
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { protectionOf } from '../domain/protection-data.js';
import type { WebContext } from './context.js';
import { ErrorBody } from './schemas.js';

const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);

export const HostProtectionView = Type.Object({
  mac: Type.String(),
  name: Type.String(),
  lastGood: Type.Union([Type.Object({
    taskId: Type.String(), image: Type.String(), version: Type.Union([Type.Integer(), Type.Null()]), at: Type.String({ format: 'date-time' }),
  }), Type.Null()]),
  ageSeconds: Type.Union([Type.Integer(), Type.Null()], { description: 'seconds since the last good backup finished' }),
  scheduled: Type.Boolean(),
  nextRun: Nullable(Type.String({ format: 'date-time' })),
  allowedAgeSeconds: Type.Union([Type.Integer(), Type.Null()], { description: 'how old the last good backup may get under the host\'s schedules' }),
  lastFailure: Type.Union([Type.Object({
    kind: Type.Union([Type.Literal('failed'), Type.Literal('missed')]), taskId: Nullable(Type.String()), image: Type.String(),
    at: Type.String({ format: 'date-time' }), reason: Type.String(),
  }), Type.Null()]),
  overdue: Type.Boolean(),
  overdueSince: Nullable(Type.String({ format: 'date-time' })),
});

export function registerProtectionRoutes(app: FastifyInstance, ctx: Pick<WebContext, 'db'>): void {
  app.get('/api/v1/protection', {
    schema: {
      tags: ['hosts'],
      summary: 'Each PC\'s last good backup and its age, next scheduled run, last failure, and whether it is overdue (overdue first)',
      security: [{ bearer: [] }, { session: [] }],
      response: { 200: Type.Array(HostProtectionView), 401: ErrorBody, 403: ErrorBody },
    },
  }, async () => protectionOf(ctx.db.data, new Date()));
}
