/** How tests configure a real appliance: everything on loopback, ephemeral ports, no DHCP, state under one directory. */
import { join } from 'node:path';
import { resolveConfig, type Config } from '../../src/domain/config.js';

/**
 * `data` holds the state and images; boot files come from `bootDir` (by default `data`/boot). Tasks
 * move their disks over NBD unless they ask for the chunk transport (the tests written before it
 * play the NBD client).
 */
export function loopbackConfig(data: string, bootDir = join(data, 'boot')): Config {
  return resolveConfig({ data, listen: '127.0.0.1', 'http-port': '0', 'nbd-port': '0', 'tftp-port': '0', dhcp: 'off', 'boot-dir': bootDir, transport: 'nbd' });
}
