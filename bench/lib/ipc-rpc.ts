/**
 * Request/reply over a child process's IPC channel, for the bench's handles on the processes it runs
 * its servers in (server-host.ts, appliance-host.ts): each request carries an id, each reply the same
 * id and `ok`; a child that exits fails what is still waiting instead of leaving it hanging.
 */
import type { ChildProcess } from 'node:child_process';

export type RpcReply = { readonly id: number; readonly ok: true } | { readonly id: number; readonly ok: false; readonly error: string };

/** A request without its id (distributes over the union so each op keeps its own fields). */
export type RequestBody<R extends { readonly id: number }> = R extends unknown ? Omit<R, 'id'> : never;

export class IpcRpc<Req extends { readonly id: number; readonly op: string }, Rep extends RpcReply> {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve(r: Rep): void; reject(e: Error): void }>();
  private done = false;
  /** Settles when the child has exited. */
  readonly gone: Promise<void>;

  constructor(
    private readonly child: ChildProcess,
    /** What the child is, for messages: "NBD server process". */
    private readonly what: string,
  ) {
    this.gone = new Promise((resolve) => child.once('exit', () => resolve()));
    child.on('message', (m: Rep) => {
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      w.resolve(m);
    });
    child.on('exit', (code, signal) => {
      this.done = true;
      for (const w of this.waiting.values()) w.reject(new Error(`${what} exited (${code ?? signal}) with a request pending`));
      this.waiting.clear();
    });
  }

  get exited(): boolean {
    return this.done;
  }

  async call(body: RequestBody<Req>): Promise<Extract<Rep, { ok: true }>> {
    if (this.done) throw new Error(`${this.what} has exited`);
    const id = this.nextId++;
    const reply = await new Promise<Rep>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.child.send({ ...body, id });
    });
    if (!reply.ok) throw new Error(`${this.what}: ${body.op} failed: ${(reply as Extract<RpcReply, { ok: false }>).error}`);
    return reply as Extract<Rep, { ok: true }>;
  }

  /** Asks the child to shut down (`shutdown` op) and waits for it to exit; killed by PID after `graceMs`. */
  async stop(graceMs: number): Promise<void> {
    if (this.done) return;
    const timer = setTimeout(() => this.kill(), graceMs);
    try {
      await this.call({ op: 'shutdown' } as RequestBody<Req>).catch(() => this.kill());
      await this.gone;
    } finally {
      clearTimeout(timer);
    }
  }

  kill(): void {
    if (!this.done && this.child.pid !== undefined) process.kill(this.child.pid, 'SIGKILL');
  }
}
