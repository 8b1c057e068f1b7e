/** Messages between the bench and the child process that runs our NBD server (see server-child.ts). */

export type ServerRequest =
  | { readonly id: number; readonly op: 'openStore'; readonly dir: string }
  | { readonly id: number; readonly op: 'closeStore'; readonly dir: string }
  | { readonly id: number; readonly op: 'import'; readonly dir: string; readonly image: string; readonly path: string }
  | { readonly id: number; readonly op: 'deploy'; readonly dir: string; readonly image: string }
  | { readonly id: number; readonly op: 'capture'; readonly dir: string; readonly image: string; readonly size: number }
  | { readonly id: number; readonly op: 'awaitCapture'; readonly exportName: string }
  | { readonly id: number; readonly op: 'revoke'; readonly exportName: string }
  | { readonly id: number; readonly op: 'shutdown' };

export interface CommittedVersion {
  readonly version: number;
  readonly digest: string;
  readonly dataBytes: number;
  /** When the commit finished, as performance.timeOrigin + performance.now() in the child (ms since epoch). */
  readonly committedAt: number;
}

export type ServerReply =
  | { readonly id: number; readonly ok: true; readonly port?: number; readonly exportName?: string; readonly ms?: number; readonly digest?: string; readonly committed?: CommittedVersion }
  | { readonly id: number; readonly ok: false; readonly error: string };

export interface ReadyMessage {
  readonly ready: true;
  readonly port: number;
}
