/**
 * A whole appliance (startAppliance: HTTP client API with the chunk routes, NBD, the store) in its own
 * node process, so the bench can read its CPU time from /proc alone and the agents' and nbdcopy's
 * work never shares its event loop. Started by appliance-host.ts, possibly inside a network namespace
 * (`ip netns exec`), and driven over the IPC channel: queue tasks, read them back, shut down.
 *
 * argv: DATA_DIR LISTEN_ADDRESS
 */
import { join } from 'node:path';
import { resolveConfig } from '../../src/domain/config.js';
import { runCommand } from '../../src/domain/command-table.js';
import type { TaskRecord } from '../../src/domain/database.js';
import { nullLogger } from '../../src/lib/log.js';
import { startAppliance } from '../../src/serve/runtime.js';
import type { ApplianceReady, ApplianceReply, ApplianceRequest, TaskView } from './appliance-protocol.js';

const [data, listen] = process.argv.slice(2);
if (!data || !listen) throw new Error('usage: appliance-child DATA_DIR LISTEN_ADDRESS');
if (!process.send) throw new Error('appliance-child must be started with an IPC channel');

const config = resolveConfig({ data, listen, 'http-port': '0', 'nbd-port': '0', 'tftp-port': '0', dhcp: 'off', 'boot-dir': join(data, 'boot'), transport: 'chunks' });
const app = await startAppliance(config, nullLogger());
const operator = { kind: 'operator', name: 'bench', via: 'cli' } as const;
let macs = 0;

function view(t: TaskRecord): TaskView {
  return { id: t.id, state: t.state, reason: t.reason, result: t.result, log: t.log, mac: t.mac };
}

async function handle(req: ApplianceRequest): Promise<ApplianceReply> {
  switch (req.op) {
    case 'queue': {
      macs++;
      const mac = `52:54:00:be:${(macs >> 8).toString(16).padStart(2, '0')}:${(macs & 0xff).toString(16).padStart(2, '0')}`;
      const task = (await runCommand(app.core.commands, operator, 'task.create', { kind: req.kind, mac, image: req.image, transport: req.transport }, () => undefined)) as TaskRecord;
      // What DHCP would have recorded: the boot script (and its token) is only for the PC's own address.
      app.core.hosts.bootAddresses.note(mac, req.clientIp);
      return { id: req.id, ok: true, task: view(task) };
    }
    case 'task':
      return { id: req.id, ok: true, task: view(app.core.tasks.require(req.taskId)) };
    case 'shutdown':
      await app.stop();
      return { id: req.id, ok: true };
  }
}

process.on('message', (req: ApplianceRequest) => {
  handle(req).then(
    (reply) => {
      process.send!(reply);
      if (req.op === 'shutdown') process.disconnect();
    },
    (err: unknown) => process.send!({ id: req.id, ok: false, error: (err as Error).message } satisfies ApplianceReply),
  );
});
process.send({ ready: true, http: app.ports.http, nbd: app.ports.nbd } satisfies ApplianceReady);
