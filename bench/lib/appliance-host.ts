/**
 * The bench's handle on an appliance child process (appliance-child.ts): started directly, or inside a
 * network namespace through `ip netns exec NS` (exec keeps the PID, so /proc/PID/stat is the server's).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SERVER_NODE_FLAGS } from '../../src/serve/node-flags.js';
import type { ApplianceReady, ApplianceReply, ApplianceRequest, TaskView } from './appliance-protocol.js';
import { IpcRpc, type RequestBody } from './ipc-rpc.js';

export interface ApplianceChildOptions {
  readonly dataDir: string;
  /** The address the server listens on (127.0.0.1, or the server namespace's address). */
  readonly listen: string;
  /** Run inside this network namespace (created by the caller). */
  readonly netns?: string;
  /** Extra node flags, e.g. ['--cpu-prof', '--cpu-prof-dir=DIR'] to profile the server. */
  readonly nodeArgs?: readonly string[];
}

export class ApplianceChild {
  private readonly rpc: IpcRpc<ApplianceRequest, ApplianceReply>;

  private constructor(
    private readonly child: ChildProcess,
    readonly base: string,
    readonly nbdPort: number,
  ) {
    this.rpc = new IpcRpc(child, 'the appliance process');
  }

  get pid(): number {
    return this.child.pid as number;
  }

  static async start(opts: ApplianceChildOptions): Promise<ApplianceChild> {
    const entry = fileURLToPath(new URL('./appliance-child.ts', import.meta.url));
    const node = [process.execPath, '--import', 'tsx', ...SERVER_NODE_FLAGS, ...(opts.nodeArgs ?? []), entry, opts.dataDir, opts.listen];
    const [cmd, ...args] = opts.netns ? ['ip', 'netns', 'exec', opts.netns, ...node] : node;
    const child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const ready = await new Promise<ApplianceReady>((resolve, reject) => {
      const onExit = (code: number | null): void => reject(new Error(`appliance process exited with ${code} before it was ready`));
      child.once('message', (m: ApplianceReady) => {
        child.off('exit', onExit);
        resolve(m);
      });
      child.once('exit', onExit);
    });
    return new ApplianceChild(child, `http://${opts.listen}:${ready.http}`, ready.nbd);
  }

  private call(body: RequestBody<ApplianceRequest>): Promise<Extract<ApplianceReply, { ok: true }>> {
    return this.rpc.call(body);
  }

  async queue(kind: 'capture' | 'deploy', image: string, transport: 'chunks' | 'nbd', clientIp: string): Promise<TaskView> {
    return (await this.call({ op: 'queue', kind, image, transport, clientIp })).task as TaskView;
  }

  async task(taskId: string): Promise<TaskView> {
    return (await this.call({ op: 'task', taskId })).task as TaskView;
  }

  /** Stops the appliance cleanly; killed by PID if it has not exited 15 s later. */
  stop(): Promise<void> {
    return this.rpc.stop(15_000);
  }

  kill(): void {
    this.rpc.kill();
  }
}
