/**
 * When things happened during one VM's network boot and transfer: milestones read from the server's
 * pino lines (their `time` field), and from the VM's serial console, which carries no clock of its own,
 * so a watcher notes the host time at which each pattern first appears (resolution: its poll interval).
 * Both are wall-clock milliseconds, comparable with the moment QEMU was spawned.
 */
import type { LogEntry } from '../../test/e2e/lab.js';

export type Firmware = 'bios' | 'uefi';

export interface Mark {
  readonly name: string;
  readonly source: 'server' | 'serial';
  /** Wall-clock ms, or null when the milestone was not seen. */
  readonly at: number | null;
}

const timeOf = (e: LogEntry | undefined): number | null => {
  if (!e || typeof e.time !== 'string') return null;
  const t = Date.parse(e.time);
  return Number.isFinite(t) ? t : null;
};

/** The loader a PC fetches by TFTP on its way to iPXE: BIOS chains undionly.kpxe, OVMF's PXE gets snponly.efi. */
export const loaderFile = (fw: Firmware): string => (fw === 'bios' ? 'undionly.kpxe' : 'snponly.efi');

/** Every milestone name, in the order they happen in a boot-and-transfer (for tables that read as a timeline). */
export const MILESTONE_ORDER: readonly string[] = [
  'firmware DHCP ACK', 'first iPXE script served', 'loader TFTP done', 'client script served', 'vmlinuz requested', 'initrd requested',
  'initrd loaded', 'Linux started', 'client init', 'client DHCP ACK', 'task fetched', 'client has address', 'copy start', 'NBD attached',
  'NBD detached', 'copy end', 'verified',
];

/**
 * Server-side milestones of one boot-and-transfer of MAC. `entries` must cover only this VM's run (the
 * bench runs one VM at a time); some lines (TFTP, kernel fetch, NBD) carry the client's address, not its MAC.
 */
export function serverMarks(entries: readonly LogEntry[], mac: string, fw: Firmware): Mark[] {
  const at = (name: string, pred: (e: LogEntry) => boolean, last = false): Mark => {
    const hits = entries.filter(pred);
    return { name, source: 'server', at: timeOf(last ? hits[hits.length - 1] : hits[0]) };
  };
  const kernelReq = entries.find((e) => e.component === 'boot' && e.msg === 'boot: serving the imaging client' && e.file === 'vmlinuz');
  const kernelAt = timeOf(kernelReq) ?? Infinity;
  return [
    at('firmware DHCP ACK', (e) => e.component === 'dhcp' && e.mac === mac && String(e.step ?? '').startsWith('ACK')),
    at('first iPXE script served', (e) => e.component === 'boot' && e.mac === mac && typeof e.decision === 'string'),
    at('loader TFTP done', (e) => e.component === 'tftp' && e.msg === 'tftp transfer end' && e.file === loaderFile(fw) && e.status === 'complete'),
    at('client script served', (e) => e.component === 'boot' && e.mac === mac && e.decision === 'client'),
    at('vmlinuz requested', (e) => e === kernelReq),
    // iPXE fetches one file after the other: the initrd request is also when vmlinuz had arrived.
    at('initrd requested', (e) => e.component === 'boot' && e.msg === 'boot: serving the imaging client' && e.file === 'initrd.img'),
    // The thin client's own lease (udhcpc): a plain DHCP ACK after the kernel was fetched.
    at('client DHCP ACK', (e) => e.component === 'dhcp' && e.mac === mac && String(e.msg).startsWith('DHCP ACK') && (timeOf(e) ?? 0) >= kernelAt),
    at('task fetched', (e) => e.component === 'client-api' && e.mac === mac && e.msg === 'client fetched its task'),
    at('NBD attached', (e) => e.component === 'nbd' && e.msg === 'nbd: export attached'),
    at('NBD detached', (e) => e.component === 'nbd' && e.msg === 'nbd: export detached', true),
  ];
}

/** Serial patterns worth a timestamp: what the server cannot see (loader done, kernel running, client steps). */
export const SERIAL_PATTERNS: ReadonlyArray<readonly [string, RegExp]> = [
  // BIOS iPXE's progress line is cut off by the kernel's screen clear, so often only UEFI shows this.
  ['initrd loaded', /initrd\.img\.\.\.[^\n]*ok/],
  ['Linux started', /Linux version/],
  ['client init', /netclone: netclone client starting/],
  ['client has address', /netclone: address /],
  ['copy start', /netclone: (capturing|deploying) /],
  ['copy end', /netclone: (capture done|verifying: )/],
  ['verified', /netclone: verified: /],
];

/** Polls a growing console text and records when each pattern first matched. */
export class SerialWatch {
  private readonly seen = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly read: () => string,
    private readonly patterns: ReadonlyArray<readonly [string, RegExp]> = SERIAL_PATTERNS,
    everyMs = 100,
  ) {
    this.timer = setInterval(() => this.poll(), everyMs);
  }

  private poll(): void {
    if (this.seen.size === this.patterns.length) return;
    const text = this.read();
    const now = Date.now();
    for (const [name, re] of this.patterns) if (!this.seen.has(name) && re.test(text)) this.seen.set(name, now);
  }

  /** Takes a last look (the VM may have printed its final lines and exited between polls) and stops. */
  stop(): Mark[] {
    clearInterval(this.timer);
    this.poll();
    return this.patterns.map(([name]) => ({ name, source: 'serial' as const, at: this.seen.get(name) ?? null }));
  }
}
