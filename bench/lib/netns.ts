/**
 * A shaped link for benches: two network namespaces joined by a veth pair with private addresses and a
 * token bucket (tc tbf) on both ends' egress, so each direction runs at `rate`. Needs root. close()
 * deletes both namespaces (and with them the veth pair); kill what runs inside first, by PID.
 */
import { execFileSync } from 'node:child_process';

export interface ShapedLink {
  readonly serverNs: string;
  readonly clientNs: string;
  readonly serverIp: string;
  readonly clientIp: string;
  /** Bytes each end has sent so far, as its veth counts them (frames: payload plus TCP/IP/Ethernet headers). */
  counters(): { serverTx: number; clientTx: number };
  close(): void;
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** `rate` in tc's syntax, e.g. "1gbit". */
export function createShapedLink(rate: string): ShapedLink {
  const tag = String(process.pid % 100000);
  const serverNs = `ncb-srv-${tag}`;
  const clientNs = `ncb-cli-${tag}`;
  const serverIf = `ncbs${tag}`;
  const clientIf = `ncbc${tag}`;
  const octet = (process.pid % 250) + 1;
  const serverIp = `10.99.${octet}.1`;
  const clientIp = `10.99.${octet}.2`;
  const close = (): void => {
    for (const ns of [serverNs, clientNs]) {
      try {
        ip('netns', 'del', ns);
      } catch {
        // not created (setup failed before it), or already gone
      }
    }
  };
  try {
    ip('netns', 'add', serverNs);
    ip('netns', 'add', clientNs);
    ip('link', 'add', serverIf, 'type', 'veth', 'peer', 'name', clientIf);
    ip('link', 'set', serverIf, 'netns', serverNs);
    ip('link', 'set', clientIf, 'netns', clientNs);
    for (const [ns, dev, addr] of [[serverNs, serverIf, serverIp], [clientNs, clientIf, clientIp]] as const) {
      ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', dev);
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'link', 'set', dev, 'up');
      // burst ≥ rate/HZ and a few GSO frames; latency bounds the queue (tbf drops beyond it, as a switch would).
      execFileSync('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '20ms'], { stdio: 'pipe' });
    }
  } catch (err) {
    close();
    throw new Error(`could not set up the shaped link (needs root, ip and tc): ${(err as { stderr?: Buffer }).stderr?.toString().trim() || (err as Error).message}`, { cause: err });
  }
  const txBytes = (ns: string, dev: string): number => {
    const j = JSON.parse(ip('-n', ns, '-j', '-s', 'link', 'show', 'dev', dev)) as Array<{ stats64: { tx: { bytes: number } } }>;
    return j[0].stats64.tx.bytes;
  };
  return {
    serverNs,
    clientNs,
    serverIp,
    clientIp,
    counters: () => ({ serverTx: txBytes(serverNs, serverIf), clientTx: txBytes(clientNs, clientIf) }),
    close,
  };
}
