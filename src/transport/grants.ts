/**
 * Who may open which NBD export. Every export name is an unguessable token issued here
 * (for a task, or for `netclone image url`); the resolver refuses anything else, expired
 * names, and task exports asked for from another address than the task's PC.
 */
import type { DetachInfo, ExportRefusal, ExportResolver, NbdExport, PeerInfo } from '../nbd/export.js';
import { PassThroughExport } from '../nbd/filters/pass-through.js';
import type { TransferMeter } from './transfer-meter.js';
import { newToken } from '../lib/tokens.js';
import { plainAddress } from '../lib/ipv4.js';
import type { Logger } from '../lib/log.js';

export interface OpenedExport {
  readonly export: NbdExport;
  /** Release what the export holds (a version reader's pins, or an unfinished capture). */
  close(reason: string): Promise<void>;
  /** True once a capture committed or failed: no more connections make sense. */
  finished(): boolean;
}

export interface GrantRequest {
  readonly kind: 'deploy' | 'capture';
  readonly image: string;
  readonly ttlSeconds: number;
  readonly allowedAddress?: string | null;
  readonly taskId?: string | null;
  /** Counts what moves through this grant's export; of the same kind as the grant. */
  readonly meter: TransferMeter;
  readonly open: () => Promise<OpenedExport>;
}

interface Grant {
  readonly name: string;
  readonly kind: 'deploy' | 'capture';
  readonly image: string;
  readonly expiresAt: number;
  readonly allowedAddress: string | null;
  readonly taskId: string | null;
  readonly opened: OpenedExport;
  readonly export: NbdExport;
  readonly meter: TransferMeter;
  connections: number;
}

/** The outermost filter of a granted export: tells the grant when a connection arrives and leaves. */
class ConnectionCount extends PassThroughExport {
  constructor(
    next: NbdExport,
    private readonly on: { attached(): void; detached(): void },
  ) {
    super(next);
  }

  override attach(peer: PeerInfo): void {
    super.attach(peer);
    this.on.attached();
  }

  override detach(peer: PeerInfo, info: DetachInfo): void {
    super.detach(peer, info);
    this.on.detached();
  }
}

/** IPv4-mapped IPv6 ("::ffff:10.0.0.5") and plain IPv4 name the same PC. */
function sameAddress(a: string, b: string): boolean {
  return plainAddress(a) === plainAddress(b);
}

/** Names of grants the sweep removed because they expired, kept a while so a late client hears "expired", not "unknown". */
const EXPIRED_REMEMBERED = 1024;
const EXPIRED_REMEMBER_MS = 3600_000;

export class NbdGrants implements ExportResolver {
  private readonly grants = new Map<string, Grant>();
  private readonly expired = new Map<string, number>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly logger: Logger) {
    this.sweeper = setInterval(() => void this.sweep(), 10_000);
    this.sweeper.unref();
  }

  async grant(request: GrantRequest): Promise<{ name: string; expiresAt: Date }> {
    if (request.meter.kind !== request.kind) throw new Error(`a ${request.kind} grant was given a ${request.meter.kind} meter: create the meter with the grant's kind`);
    const opened = await request.open();
    const name = `${request.kind === 'deploy' ? 'd' : 'c'}-${newToken()}`;
    const grant: Grant = {
      name,
      kind: request.kind,
      image: request.image,
      expiresAt: Date.now() + request.ttlSeconds * 1000,
      allowedAddress: request.allowedAddress ?? null,
      taskId: request.taskId ?? null,
      opened,
      meter: request.meter,
      connections: 0,
      export: new ConnectionCount(request.meter.measure(opened.export), {
        attached: () => {
          grant.connections++;
        },
        detached: () => {
          grant.connections--;
          if (grant.opened.finished() && grant.connections === 0) void this.revoke(name, 'finished');
        },
      }),
    };
    this.grants.set(name, grant);
    this.logger.info({ image: request.image, kind: request.kind, task: grant.taskId, expiresAt: new Date(grant.expiresAt) }, 'NBD export issued');
    return { name, expiresAt: new Date(grant.expiresAt) };
  }

  resolve(name: string, peer: PeerInfo): NbdExport | ExportRefusal {
    const grant = this.grants.get(name);
    const who = `${peer.address}:${peer.port}`;
    if (!grant && this.expired.has(name)) {
      this.logger.warn({ peer: who }, 'NBD client used an expired export token');
      return { refused: 'policy', reason: 'this export token has expired; ask netclone for a new URL' };
    }
    if (!grant) {
      this.logger.warn({ peer: who }, 'NBD client asked for an unknown export name (wrong or expired token)');
      return { refused: 'unknown', reason: 'no such export: the token is wrong or has expired; ask netclone for a new URL' };
    }
    if (Date.now() > grant.expiresAt) {
      this.logger.warn({ peer: who, image: grant.image }, 'NBD client used an expired export token');
      return { refused: 'policy', reason: 'this export token has expired; ask netclone for a new URL' };
    }
    if (grant.allowedAddress !== null && !sameAddress(grant.allowedAddress, peer.address)) {
      this.logger.warn({ peer: who, image: grant.image, task: grant.taskId }, 'NBD task export refused: wrong client address');
      return { refused: 'policy', reason: "this export belongs to another PC's task" };
    }
    if (grant.opened.finished()) {
      return { refused: 'policy', reason: 'this capture has already ended' };
    }
    return grant.export;
  }

  /** Revoke every grant of a task (cancelled or failed): open connections get errors from the closed export. */
  async revokeTask(taskId: string, reason: string): Promise<void> {
    for (const g of [...this.grants.values()]) if (g.taskId === taskId) await this.revoke(g.name, reason);
  }

  async revoke(name: string, reason: string): Promise<void> {
    const grant = this.grants.get(name);
    if (!grant) return;
    this.grants.delete(name);
    this.logger.info({ image: grant.image, kind: grant.kind, task: grant.taskId, reason, bytesOnWire: grant.meter.wireBytes, coveredBytes: grant.meter.coveredBytes }, `NBD export closed (${reason}): ${grant.meter.describe()}`);
    await grant.opened.close(reason).catch((err: unknown) => {
      this.logger.error({ err, image: grant.image }, 'closing an NBD export failed');
    });
  }

  private async sweep(): Promise<void> {
    const now = Date.now();
    for (const [name, at] of this.expired) if (now - at > EXPIRED_REMEMBER_MS || this.expired.size > EXPIRED_REMEMBERED) this.expired.delete(name);
    for (const g of [...this.grants.values()]) {
      if (g.connections > 0) continue;
      if (now > g.expiresAt) {
        this.expired.set(g.name, now);
        await this.revoke(g.name, 'expired');
      }
      // A capture that committed after its last connection left (CaptureExport waits a moment first) is done with its grant.
      else if (g.opened.finished()) await this.revoke(g.name, 'finished');
    }
  }

  async closeAll(reason: string): Promise<void> {
    clearInterval(this.sweeper);
    for (const name of [...this.grants.keys()]) await this.revoke(name, reason);
  }

  count(): number {
    return this.grants.size;
  }
}
