/**
 * The signed chain's files on our TFTP server: Debian's network GRUB reads `grub/grub.cfg`, then this
 * PC's own `grub/pc/<mac>`, then the imaging client's kernel and initrd. The boot policy decides what
 * the per-PC file says (the same Booter the iPXE script asks); this module carries out its side
 * effects, as web/boot-routes.ts does for iPXE: it records the sighting and mints the task token.
 *
 * What a stranger on the LAN can do here: ask for any MAC's file. The policy gives the task token only
 * to the address DHCP tied to that MAC lately (BootAddresses), as for the iPXE script; anyone else gets
 * the menu that asks for a technician's login. Every other name falls through to the loaders directory.
 */
import path from 'node:path';
import type { BootAddresses } from '../domain/boot-addresses.js';
import type { Booter } from '../domain/boot-policy.js';
import type { TaskRecord } from '../domain/database.js';
import type { HostService } from '../domain/hosts.js';
import type { TaskService } from '../domain/tasks.js';
import { GRUB_CLIENT_FILES, grubBootstrap, grubClient, macOfGrubPath, renderGrubDecision } from '../pxe/grub-config.js';
import type { VirtualFile } from '../pxe/tftp/server.js';
import type { Logger } from '../lib/log.js';

export interface SignedBootContext {
  readonly logger: Logger;
  readonly booter: Booter<TaskRecord>;
  readonly hosts: HostService;
  readonly tasks: TaskService;
  readonly bootAddresses: BootAddresses;
  /** host:port of the HTTP server as PCs reach it (the client's netclone.server). */
  readonly httpBase: () => string;
  readonly bootDir: string;
  readonly menuTimeoutSeconds: number;
}

export function signedBootFiles(ctx: SignedBootContext) {
  const client: ReadonlyMap<string, string> = new Map([
    [GRUB_CLIENT_FILES.kernel, path.join(ctx.bootDir, 'dist', 'vmlinuz')],
    [GRUB_CLIENT_FILES.initrd, path.join(ctx.bootDir, 'dist', 'initrd.img')],
  ]);
  const text = (s: string): VirtualFile => ({ kind: 'data', data: Buffer.from(s, 'utf8') });

  return async function virtualFiles(segments: readonly string[], from: { readonly address: string }): Promise<VirtualFile | null> {
    const name = segments.join('/');
    const clientFile = client.get(name);
    if (clientFile) return { kind: 'file', path: clientFile };
    if (name === 'grub/grub.cfg') return text(grubBootstrap());
    const mac = macOfGrubPath(segments);
    if (!mac) return null;
    const ip = from.address;
    const { isNew } = await ctx.hosts.sighted({ mac, ip, firmware: 'uefi', arch: 'x86_64' });
    const gctx = { httpBase: ctx.httpBase(), mac, menuTimeoutSeconds: ctx.menuTimeoutSeconds };
    // GRUB has no ${net0/chip}: the undionly hop is for BIOS iPXE and never applies here.
    const decision = ctx.booter.script({ mac, platform: 'efi', chip: null, address: ctx.bootAddresses.check(mac, ip) });
    ctx.logger[decision.kind === 'unconfirmed' ? 'warn' : 'info']({ mac, ip, loader: 'grub', decision: decision.kind, newHost: isNew }, `boot: ${decision.reason}`);
    if (decision.kind === 'client') {
      const token = await ctx.tasks.beginBoot(decision.task, ip);
      return text(grubClient(gctx, decision.task, token));
    }
    return text(renderGrubDecision(gctx, decision));
  };
}
