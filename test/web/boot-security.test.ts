/**
 * Issue 9, defects 7 and 8, from a hostile LAN neighbour's side: the real boot-script and
 * client-API routes, one test process playing both the PC (PC_IP, the address DHCP tied to its
 * MAC) and a stranger (STRANGER_IP).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { BOOT_ADDRESS_WINDOW_MS } from '../../src/domain/boot-addresses.js';
import { lintIpxe } from '../lib/ipxe-lint.js';
import { makeBootHarness, PC_IP, STRANGER_IP, TECHNICIAN, tokenIn, type BootHarness } from './boot-harness.js';

const MAC = '52:54:00:5e:c0:01';
const DISK = { name: 'sda', size: 8 * 1024 * 1024, logicalSectorSize: 512 };

let h: BootHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

function warnings(b: BootHarness): string[] {
  return b.logs.filter((l) => l.level >= 40).map((l) => l.msg);
}

describe('the boot script hands a task token only to the PC (defect 8)', () => {
  it('a stranger asking for a PC\'s script gets no token and leaves the PC\'s token alone; the log says why', async () => {
    h = await makeBootHarness();
    const task = await h.tasks.create({ kind: 'capture', mac: MAC, image: 'desk' });
    h.addresses.note(MAC, PC_IP);

    const stolen = await h.bootScript(MAC, STRANGER_IP);
    expect(stolen.statusCode).toBe(200);
    expect(tokenIn(stolen.body)).toBeNull();
    // It may offer the imaging client in menu mode (a technician login at the PC), never with a task or token.
    expect(stolen.body).not.toMatch(/netclone\.(task|token)=/);
    expect(lintIpxe(stolen.body)).toEqual([]);
    expect(task.state).toBe('queued');
    expect(warnings(h)).toContainEqual(expect.stringContaining(`DHCP tied this MAC to ${PC_IP}, but the request came from ${STRANGER_IP}`));

    const own = await h.bootScript(MAC, PC_IP);
    const token = tokenIn(own.body);
    expect(token).not.toBeNull();
    expect(lintIpxe(own.body)).toEqual([]);
    expect(task).toMatchObject({ state: 'booting', clientIp: PC_IP });

    // Once the PC holds its token, asking again from elsewhere neither gets one nor rotates the PC's.
    const again = await h.bootScript(MAC, STRANGER_IP);
    expect(tokenIn(again.body)).toBeNull();
    expect(h.tasks.byToken(token as string)).toBe(task);
    expect((await h.client(PC_IP, 'GET', `/api/client/v1/task?mac=${MAC}`, token)).statusCode).toBe(200);
  });

  it('gives no token without a DHCP exchange of the MAC, or after one older than the window', async () => {
    h = await makeBootHarness();
    const task = await h.tasks.create({ kind: 'deploy', mac: MAC, image: 'golden' });
    const none = await h.bootScript(MAC, PC_IP);
    expect(tokenIn(none.body)).toBeNull();
    // A technician at the PC can still start it: the script offers a login for that.
    expect(none.body).toContain('param do start');
    expect(warnings(h)).toContainEqual(expect.stringContaining('no DHCP/PXE exchange of this MAC was seen'));

    h.addresses.note(MAC, PC_IP, Date.now() - BOOT_ADDRESS_WINDOW_MS - 60_000);
    const stale = await h.bootScript(MAC, PC_IP);
    expect(tokenIn(stale.body)).toBeNull();
    expect(warnings(h)).toContainEqual(expect.stringMatching(/the last DHCP exchange of this MAC was \d+ s ago/));
    expect(task.state).toBe('queued');
  });
});

describe('task tokens are bound to the PC\'s address and start one transfer', () => {
  async function booted(b: BootHarness): Promise<string> {
    await b.tasks.create({ kind: 'capture', mac: MAC, image: 'desk' });
    b.addresses.note(MAC, PC_IP);
    const token = tokenIn((await b.bootScript(MAC, PC_IP)).body);
    if (!token) throw new Error('the PC got no token');
    return token;
  }

  it('refuses the PC\'s token presented from another address, and logs both addresses', async () => {
    h = await makeBootHarness();
    const token = await booted(h);
    const task = h.tasks.activeFor(MAC);
    const get = await h.client(STRANGER_IP, 'GET', `/api/client/v1/task?mac=${MAC}`, token);
    expect(get.statusCode).toBe(403);
    expect(get.json().error).toMatch(/another address/);
    const start = await h.client(STRANGER_IP, 'POST', '/api/client/v1/start', token, { disk: DISK });
    expect(start.statusCode).toBe(403);
    expect(task?.state).toBe('booting');
    expect(warnings(h)).toContainEqual(expect.stringContaining(`was issued to ${PC_IP}, not to ${STRANGER_IP}`));
    // The PC itself goes on.
    const own = await h.client(PC_IP, 'POST', '/api/client/v1/start', token, { disk: DISK });
    expect(own.statusCode).toBe(200);
    expect(task).toMatchObject({ state: 'running', clientIp: PC_IP });
  });

  it('starts one transfer per token: of two racing starts one wins, and a later one is refused', async () => {
    h = await makeBootHarness();
    const token = await booted(h);
    const both = await Promise.all([
      h.client(PC_IP, 'POST', '/api/client/v1/start', token, { disk: DISK }),
      h.client(PC_IP, 'POST', '/api/client/v1/start', token, { disk: DISK }),
    ]);
    expect(both.map((r) => r.statusCode).sort()).toEqual([200, 409]);
    const later = await h.client(PC_IP, 'POST', '/api/client/v1/start', token, { disk: DISK });
    expect(later.statusCode).toBe(409);
    // The token still carries the rest of the task.
    expect((await h.client(PC_IP, 'POST', '/api/client/v1/progress', token, { phase: 'transferring', message: 'copying' })).statusCode).toBe(200);
  });

  it('checks the token before the body: no token is 401 and a wrong one 403, whatever the body', async () => {
    h = await makeBootHarness();
    const token = await booted(h);
    for (const body of [{}, { disk: 'x' }, { nonsense: true }]) {
      const none = await h.client(PC_IP, 'POST', '/api/client/v1/start', null, body);
      expect(none.statusCode, JSON.stringify(body)).toBe(401);
      expect(none.json().error).toMatch(/task token is required/);
      expect((await h.client(PC_IP, 'POST', '/api/client/v1/start', 'A'.repeat(32), body)).statusCode).toBe(403);
      expect((await h.client(STRANGER_IP, 'POST', '/api/client/v1/hardware', token, body)).statusCode).toBe(403);
    }
    // With the right token from the PC, the schema speaks.
    expect((await h.client(PC_IP, 'POST', '/api/client/v1/start', token, { disk: 'x' })).statusCode).toBe(400);
  });
});

describe('boot files', () => {
  it('answers 404, not 500, for names that are properties of every object', async () => {
    h = await makeBootHarness();
    for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__']) {
      for (const url of [`/boot/client/${name}`, `/boot/${name}`]) {
        const r = await h.app.inject({ method: 'GET', url, remoteAddress: PC_IP });
        expect(r.statusCode, url).toBe(404);
      }
    }
  });
});

describe('the menu', () => {
  it('names no image before a login', async () => {
    h = await makeBootHarness({ images: ['golden-win11', 'finance-laptop'] });
    h.addresses.note(MAC, PC_IP);
    for (const ip of [PC_IP, STRANGER_IP]) {
      const menu = await h.bootScript(MAC, ip);
      expect(menu.body).toMatch(/^menu netclone/m);
      expect(menu.body).not.toContain('golden-win11');
      expect(menu.body).not.toContain('finance-laptop');
      expect(lintIpxe(menu.body)).toEqual([]);
    }
    const listed = await h.action(PC_IP, { mac: MAC, do: 'deploy-list' }, TECHNICIAN);
    expect(listed.body).toMatch(/^item img\d golden-win11$/m);
    expect(listed.body).toMatch(/^item img\d finance-laptop$/m);
    expect(lintIpxe(listed.body)).toEqual([]);
    const refused = await h.action(PC_IP, { mac: MAC, do: 'deploy-list' }, { username: 'admin', password: 'not the password' });
    expect(refused.body).not.toContain('golden-win11');
    expect(refused.body).toContain('wrong username or password');
  });
});
