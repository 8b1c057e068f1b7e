/**
 * Without PARAM_CMD (Debian's iPXE, QEMU's NIC ROMs) iPXE cannot POST a form: the menu then offers
 * the imaging client in menu mode, where the technician logs in and the client POSTs the action.
 */
import { describe, expect, it } from 'vitest';
import { menuActions } from '../../src/domain/boot-policy.js';
import { scriptMenu, scriptUnconfirmed, type ScriptContext } from '../../src/pxe/ipxe-script.js';
import { lintIpxe } from '../lib/ipxe-lint.js';

const ctx: ScriptContext = { httpBase: '10.0.0.1:8080', mac: '52:54:00:12:34:56', menuTimeoutSeconds: 7 };

/** The lines from `:label` up to the next label. */
function block(script: string, label: string): string[] {
  const lines = script.split('\n');
  const start = lines.indexOf(`:${label}`);
  if (start < 0) throw new Error(`no :${label} in\n${script}`);
  const end = lines.findIndex((l, i) => i > start && l.startsWith(':'));
  return lines.slice(start + 1, end < 0 ? undefined : end);
}

describe('the boot menu without PARAM_CMD offers the imaging client for a technician login', () => {
  for (const [title, script] of [
    ['menu of a PC with no task', scriptMenu(ctx, 'exit', { registered: false, name: '', actions: menuActions(false) })],
    ['menu of a registered PC', scriptMenu(ctx, 'sanboot', { registered: true, name: 'desk', actions: menuActions(true) })],
    ['screen of a PC whose waiting task was not confirmed', scriptUnconfirmed(ctx, 'exit', { registered: true, name: '' }, { kind: 'capture' })],
  ] as const) {
    it(`${title}: an item shown only when params is missing boots the client in menu mode, with no task and no token`, () => {
      expect(script).toMatch(/^iseq \$\{netclone-forms\} 1 \|\| item client /m);
      const lines = block(script, 'client');
      const kernel = lines.find((l) => l.startsWith('kernel '));
      expect(kernel).toBe(
        'kernel http://10.0.0.1:8080/boot/client/vmlinuz initrd=initrd.img console=ttyS0,115200 console=tty0 panic=0 ' +
          'netclone.server=10.0.0.1:8080 netclone.mode=menu || goto client-failed',
      );
      expect(lines).toContain('initrd --name initrd.img http://10.0.0.1:8080/boot/client/initrd.img || goto client-failed');
      expect(lines).toContain('boot || goto client-failed');
      expect(script).not.toMatch(/netclone\.(task|token)=/);
      // A loader that fails to fetch the client ends at the local disk, not in a loop.
      expect(block(script, 'client-failed')).toContain('goto local');
      expect(lintIpxe(script)).toEqual([]);
    });
  }

  it('keeps the form-POST items for iPXE builds that have params', () => {
    const s = scriptMenu(ctx, 'exit', { registered: false, name: '', actions: menuActions(false) });
    expect(s).toMatch(/^iseq \$\{netclone-forms\} 1 && item capture /m);
    expect(s).toMatch(/^iseq \$\{netclone-forms\} 1 && item deploy /m);
    expect(s).toMatch(/^iseq \$\{netclone-forms\} 1 && item register /m);
    expect(block(s, 'capture')).toContain('params || goto local');
  });
});
