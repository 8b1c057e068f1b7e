/**
 * Runs one DhcpServer in its own process, so a test can place it inside a network namespace with
 * `ip netns exec NS node --import tsx test/pxe/dhcp/runner.ts` with the JSON config on stdin.
 * stdout: "READY {ports}" once listening, "HOOK {info}" per onPxeRequest call. Logs (pino JSON) go to stderr.
 */
import { pino } from 'pino';
import { DhcpServer, type DhcpServerOptions } from '../../../src/pxe/dhcp/index.js';
import { testBooter, type TestBooterOptions } from './booter.js';

type RunnerConfig = Omit<DhcpServerOptions, 'logger' | 'hooks' | 'booter'> & TestBooterOptions;

const chunks: Buffer[] = [];
for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
const config = JSON.parse(Buffer.concat(chunks).toString('utf8')) as RunnerConfig;
const logger = pino({ level: 'debug' }, pino.destination(2));

const server = new DhcpServer({
  ...config,
  logger,
  booter: testBooter(config),
  hooks: {
    onPxeRequest: (info) => process.stdout.write(`HOOK ${JSON.stringify(info)}\n`),
  },
});

await server.start();
process.stdout.write(`READY ${JSON.stringify(server.boundPorts)}\n`);

let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  void server.stop().then(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
