/**
 * A throwaway test network: one server namespace with a bridge, and client namespaces each joined
 * to the bridge by a veth pair. Everything carries the `ncdhcp` prefix and is deleted in cleanup().
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export async function sh(cmd: string, args: string[]): Promise<string> {
  const { stdout } = await run(cmd, args, { maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

export interface ClientNs {
  readonly ns: string;
  /** Interface name inside the client namespace. */
  readonly ifname: string;
  readonly mac: string;
}

export interface TestNet {
  readonly serverNs: string;
  readonly bridge: string;
  readonly serverIp: string;
  readonly prefix: string;
  readonly clients: readonly ClientNs[];
  cleanup(): Promise<void>;
}

async function killNamespaceProcesses(ns: string): Promise<void> {
  let pids: string[];
  try {
    pids = (await sh('ip', ['netns', 'pids', ns])).split(/\s+/).filter(Boolean);
  } catch {
    return;
  }
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

/**
 * Back to "firmware with no address". Removing the last address also makes the kernel drop every
 * route through the device, including the broadcast host route, so that is put back.
 */
export async function resetClient(c: ClientNs): Promise<void> {
  await sh('ip', ['-n', c.ns, 'addr', 'flush', 'dev', c.ifname]);
  await sh('ip', ['-n', c.ns, 'route', 'replace', '255.255.255.255/32', 'dev', c.ifname]);
}

/** Namespaces left by an earlier run of ours that was killed before its cleanup ran (the name carries its PID). */
async function sweepStale(): Promise<void> {
  const names = (await sh('ip', ['netns', 'list'])).split('\n').map((l) => l.split(' ')[0]);
  for (const ns of names) {
    const m = /^ncdhcp-[a-z0-9]+-(\d+)-/.exec(ns);
    if (!m) continue;
    let alive = true;
    try {
      process.kill(Number(m[1]), 0);
    } catch {
      alive = false;
    }
    if (alive) continue;
    await killNamespaceProcesses(ns);
    await sh('ip', ['netns', 'del', ns]).catch(() => undefined);
  }
}

export async function createTestNet(tag: string, clientCount: number): Promise<TestNet> {
  await sweepStale();
  const base = `ncdhcp-${tag}-${process.pid}`;
  const serverNs = `${base}-s`;
  const clients: ClientNs[] = [];
  const created: string[] = [];
  const prefix = '10.99.7';
  const serverIp = `${prefix}.1`;
  const cleanup = async (): Promise<void> => {
    for (const ns of [...created].reverse()) {
      await killNamespaceProcesses(ns);
      await sh('ip', ['netns', 'del', ns]).catch(() => undefined);
    }
  };
  try {
    await sh('ip', ['netns', 'add', serverNs]);
    created.push(serverNs);
    const s = (...args: string[]): Promise<string> => sh('ip', ['-n', serverNs, ...args]);
    await s('link', 'set', 'lo', 'up');
    await s('link', 'add', 'br0', 'type', 'bridge');
    await s('link', 'set', 'br0', 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0');
    await s('addr', 'add', `${serverIp}/24`, 'dev', 'br0');
    await s('link', 'set', 'br0', 'up');
    // No default route in a fresh namespace: without this, sending to 255.255.255.255 is ENETUNREACH.
    await s('route', 'add', '255.255.255.255/32', 'dev', 'br0');
    for (let i = 1; i <= clientCount; i++) {
      const ns = `${base}-c${i}`;
      await sh('ip', ['netns', 'add', ns]);
      created.push(ns);
      const mac = `02:00:00:99:07:${i.toString(16).padStart(2, '0')}`;
      await s('link', 'add', `v${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
      await s('link', 'set', `v${i}`, 'master', 'br0');
      await s('link', 'set', `v${i}`, 'up');
      const c = (...args: string[]): Promise<string> => sh('ip', ['-n', ns, ...args]);
      await c('link', 'set', 'lo', 'up');
      await c('link', 'set', 'eth0', 'address', mac);
      await c('link', 'set', 'eth0', 'up');
      await c('route', 'add', '255.255.255.255/32', 'dev', 'eth0');
      clients.push({ ns, ifname: 'eth0', mac });
    }
  } catch (err) {
    await cleanup();
    throw err;
  }
  return { serverNs, bridge: 'br0', serverIp, prefix, clients, cleanup };
}
