/**
 * A scriptable DHCP client socket, run as a child (inside a client namespace) by the tests.
 * stdin JSON: { bindAddress, bindPort, target: {address, port}, packets: hex[], waitForXids: number[],
 *                 maxWaitMs, gapEvery?, gapMs? }.
 * Sends every packet, then collects replies until each xid in waitForXids was answered (or maxWaitMs,
 * a hang guard). Prints one JSON line: { replies: [{ hex, address, port }], unanswered, sendErrors }.
 */
import { createSocket } from 'node:dgram';

interface SenderConfig {
  bindAddress: string;
  bindPort: number;
  target: { address: string; port: number };
  packets: string[];
  waitForXids: number[];
  maxWaitMs: number;
  /** Pause gapMs after every gapEvery packets so a flood does not just overflow socket buffers. */
  gapEvery?: number;
  gapMs?: number;
}

const chunks: Buffer[] = [];
for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
const cfg = JSON.parse(Buffer.concat(chunks).toString('utf8')) as SenderConfig;
const sock = createSocket({ type: 'udp4' });
const replies: { hex: string; address: string; port: number }[] = [];
const waiting = new Set(cfg.waitForXids);
const sendErrors: string[] = [];

const done = new Promise<void>((resolve) => {
  const timer = setTimeout(resolve, cfg.maxWaitMs);
  sock.on('message', (msg, rinfo) => {
    replies.push({ hex: msg.toString('hex'), address: rinfo.address, port: rinfo.port });
    if (msg.length >= 8) waiting.delete(msg.readUInt32BE(4));
    if (waiting.size === 0) {
      clearTimeout(timer);
      resolve();
    }
  });
  if (waiting.size === 0 && cfg.maxWaitMs === 0) resolve();
});

await new Promise<void>((resolve) => sock.bind({ address: cfg.bindAddress, port: cfg.bindPort }, () => resolve()));
sock.setBroadcast(true);
let n = 0;
for (const hex of cfg.packets) {
  await new Promise<void>((resolve) =>
    sock.send(Buffer.from(hex, 'hex'), cfg.target.port, cfg.target.address, (err) => {
      if (err) sendErrors.push(err.message);
      resolve();
    }),
  );
  n += 1;
  if (cfg.gapEvery && n % cfg.gapEvery === 0) await new Promise((r) => setTimeout(r, cfg.gapMs ?? 1));
}
await done;
process.stdout.write(`${JSON.stringify({ replies, unanswered: [...waiting], sendErrors })}\n`);
sock.close();
