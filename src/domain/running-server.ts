/**
 * What only a running server provides to the commands and pages: the state of its network
 * services, and nbd:// URLs (they need a live NBD listener).
 */

export interface ServiceStatus {
  readonly name: 'http' | 'nbd' | 'tftp' | 'dhcp' | 'control';
  readonly state: 'running' | 'off' | 'failed';
  /** e.g. "proxy mode on 0.0.0.0:67", or why it did not start. */
  readonly detail: string;
}

export interface NbdUrl {
  readonly uri: string;
  readonly exportName: string;
  readonly expiresAt: string;
}

export interface NbdUrlRequest {
  readonly image: string;
  readonly write: boolean;
  /** Required for a writable (capture) export: the disk size in bytes. */
  readonly size?: number;
  readonly ttlSeconds?: number;
  /** Host name or address to put in the URI (what the caller reached us on). */
  readonly host?: string;
}

export interface NbdAccess {
  /** Issue an unguessable export name for an image (read: newest version; write: a new capture). */
  createUrl(request: NbdUrlRequest): Promise<NbdUrl>;
}
