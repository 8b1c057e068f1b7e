import type { FastifyPluginAsync } from 'fastify';
import type { AppContextBase } from '../domain/context.js';
import type { ImageCatalog } from './verify-tracker.js';
import type { WakeSender } from '../lib/wake-on-lan.js';

/** What the web app runs on: the appliance context plus the image store. */
export type WebContext = AppContextBase & { readonly store: ImageCatalog };

export interface WebAppOptions {
  /** The boot script and thin-client routes (`/boot/*`, `/api/client/v1/*`); they bring their own auth. */
  readonly extraPlugins?: readonly FastifyPluginAsync[];
  /** Wake-on-LAN sender; defaults to a broadcast on the configured interface, port 9. */
  readonly wake?: WakeSender;
  /** Login / setup attempts per client address per window (default 10 per minute). */
  readonly loginRateLimit?: { readonly max: number; readonly timeWindowMs: number };
  /** Idle session lifetime (default 8 hours). */
  readonly sessionIdleSeconds?: number;
  /** Log the first-run setup link (default true). */
  readonly announceSetup?: boolean;
  /** Fastify's own request logging (default off: our handlers log what matters). */
  readonly logRequests?: boolean;
}
