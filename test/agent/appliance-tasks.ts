/**
 * A chunk-transport task on a loopback appliance as the thin client sees it: queued for a PC, its token
 * taken from the PC's boot script, and its result posted from the agent's outcome.
 */
import type { RunningAppliance } from '../../src/serve/runtime.js';
import { runCommand } from '../../src/domain/command-table.js';
import type { TaskRecord } from '../../src/domain/database.js';
import { TEST_OPERATOR } from '../lib/actor.js';
import type { RunResult } from '../lib/run.js';
import { agentLine, agentReason } from './disks.js';

/** Queues a chunk-transport task for the PC `mac` (its boot address is loopback) and returns it with its token. */
export async function queueChunkTask(app: RunningAppliance, kind: 'capture' | 'deploy', mac: string, image: string): Promise<{ task: TaskRecord; token: string }> {
  const task = (await runCommand(app.core.commands, TEST_OPERATOR, 'task.create', { kind, mac, image, transport: 'chunks' }, () => undefined)) as TaskRecord;
  app.core.hosts.bootAddresses.note(mac, '127.0.0.1');
  const script = await (await fetch(`http://127.0.0.1:${app.ports.http}/boot/ipxe?mac=${mac}&platform=efi&arch=x86_64&chip=undionly`)).text();
  const m = /netclone\.token=([A-Za-z0-9_-]+)/.exec(script);
  if (!m) throw new Error(`no token in the boot script:\n${script}`);
  return { task, token: m[1] };
}

/** What the thin client does after the agent: post the task's result from the agent's outcome. */
export async function postAgentResult(app: RunningAppliance, token: string, r: RunResult): Promise<{ state: string; reason: string | null; status: number }> {
  const body = r.code === 0 ? { ok: true, digest: agentLine(r).digest } : { ok: false, message: agentReason(r).replace(/^agent: /, '') };
  const res = await fetch(`http://127.0.0.1:${app.ports.http}/api/client/v1/result`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { ...((await res.json()) as { state: string; reason: string | null }), status: res.status };
}
