/**
 * A changed admin password ends every session logged in with the old one, whichever way it was
 * changed: the Settings page, or `netclone admin passwd` (the CLI's command through the control
 * socket runs on the same command layer the web app listens to).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { runCommand } from '../../src/domain/command-table.js';
import { TEST_OPERATOR } from '../lib/actor.js';
import { login, makeHarness, PASSWORD, type Harness } from './helpers.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe('password change', () => {
  it('from the CLI logs out every browser that logged in with the old password', async () => {
    h = await makeHarness();
    const first = await login(h.app);
    const second = await login(h.app);
    await first.agent.get('/').expect(200);
    await runCommand(h.ctx.commands, TEST_OPERATOR, 'admin.passwd', { password: 'a brand new password' }, () => undefined);
    for (const { agent } of [first, second]) {
      const r = await agent.get('/');
      expect(r.status).toBe(302);
      expect(r.headers.location).toMatch(/^\/login/);
    }
  });

  it('from the Settings page keeps the person who changed it logged in and logs out the others', async () => {
    h = await makeHarness();
    const changer = await login(h.app);
    const other = await login(h.app);
    await changer.agent.post('/settings/password').type('form').send({ _csrf: changer.csrf, current: PASSWORD, password: 'a brand new password' }).expect(303);
    await changer.agent.get('/settings').expect(200);
    expect((await other.agent.get('/')).status).toBe(302);
  });
});
