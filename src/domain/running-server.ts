/**
 * What only a running server provides to the commands and pages: the state of its network
 * services, whether the files PCs boot from are in place, and nbd:// URLs (they need a live NBD
 * listener).
 */

export interface ServiceStatus {
  readonly name: 'http' | 'nbd' | 'tftp' | 'dhcp' | 'control';
  readonly state: 'running' | 'off' | 'failed';
  /** e.g. "proxy mode on 0.0.0.0:67", or why it did not start. */
  readonly detail: string;
}

/**
 * A set of boot files that PCs need and that is missing or out of date. Missing means PCs cannot
 * network-boot (loaders) or cannot capture or deploy (client). Outdated means the files were not
 * built from this server's version; they may not work with this server's boot scripts or client API.
 */
export interface BootFileProblem {
  readonly files: 'loaders' | 'client';
  readonly state: 'missing' | 'outdated';
  /** What is wrong and what PCs will run into, e.g. "the imaging client is missing from /opt/netclone/boot/dist: initrd.img; …". */
  readonly message: string;
  /** The shell command that fixes it, e.g. "cd /opt/netclone && npm run build:client". */
  readonly fix: string;
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
