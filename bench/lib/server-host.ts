/** The bench's handle on the child process running our NBD server (server-child.ts). */
import { fork, type ChildProcess } from 'node:child_process';
import { SERVER_NODE_FLAGS } from '../../src/serve/node-flags.js';
import { fileURLToPath } from 'node:url';
import type { CommittedVersion, ReadyMessage, ServerReply, ServerRequest } from './server-protocol.js';
import { IpcRpc, type RequestBody } from './ipc-rpc.js';

export interface ServerChildOptions {
  /** Extra node flags, e.g. ['--cpu-prof', '--cpu-prof-dir=DIR'] to profile the server. */
  readonly nodeArgs?: readonly string[];
}

export class ServerChild {
  private readonly rpc: IpcRpc<ServerRequest, ServerReply>;

  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
  ) {
    this.rpc = new IpcRpc(child, 'NBD server process');
  }

  get pid(): number {
    return this.child.pid as number;
  }

  static async start(opts: ServerChildOptions = {}): Promise<ServerChild> {
    const entry = fileURLToPath(new URL('./server-child.ts', import.meta.url));
    // The flags the shipped server runs with, so the bench measures what ships.
    const execArgv = ['--import', 'tsx', ...SERVER_NODE_FLAGS, ...(opts.nodeArgs ?? [])];
    const child = fork(entry, [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const port = await new Promise<number>((resolve, reject) => {
      const onMsg = (m: ReadyMessage): void => {
        if (m.ready) {
          child.off('exit', onExit);
          resolve(m.port);
        }
      };
      const onExit = (code: number | null): void => reject(new Error(`NBD server process exited with ${code} before it was ready`));
      child.once('message', onMsg);
      child.once('exit', onExit);
    });
    return new ServerChild(child, port);
  }

  uri(exportName: string): string {
    return `nbd://127.0.0.1:${this.port}/${exportName}`;
  }

  private call(body: RequestBody<ServerRequest>): Promise<Extract<ServerReply, { ok: true }>> {
    return this.rpc.call(body);
  }

  async openStore(dir: string): Promise<void> {
    await this.call({ op: 'openStore', dir });
  }

  async closeStore(dir: string): Promise<void> {
    await this.call({ op: 'closeStore', dir });
  }

  async importFile(dir: string, image: string, path: string): Promise<{ ms: number; digest: string }> {
    const r = await this.call({ op: 'import', dir, image, path });
    return { ms: r.ms as number, digest: r.digest as string };
  }

  async deploy(dir: string, image: string): Promise<string> {
    return (await this.call({ op: 'deploy', dir, image })).exportName as string;
  }

  async capture(dir: string, image: string, size: number): Promise<string> {
    return (await this.call({ op: 'capture', dir, image, size })).exportName as string;
  }

  async awaitCapture(exportName: string): Promise<CommittedVersion> {
    return (await this.call({ op: 'awaitCapture', exportName })).committed as CommittedVersion;
  }

  async revoke(exportName: string): Promise<void> {
    await this.call({ op: 'revoke', exportName });
  }

  /** Closes the server and stores cleanly, then waits for the process to exit (killed by PID after 10 s). */
  stop(): Promise<void> {
    return this.rpc.stop(10_000);
  }

  kill(): void {
    this.rpc.kill();
  }
}
