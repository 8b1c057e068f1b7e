/**
 * A private network lab for end-to-end tests: one network namespace with a bridge, a tap per VM and an
 * IPv6 router advertisement (so iPXE does not wait ~16 s for IPv6), the real `netclone serve` running
 * inside it, QEMU (TCG only) VMs on the taps, and the CLI run against the server's control socket.
 * Everything started here is tracked by PID and stopped in `close()`, which also deletes the namespaces.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { copyFileSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stopProcess } from '../lib/run.js';
import { waitFor } from '../lib/wait.js';

export const repoRoot = resolve(import.meta.dirname, '..', '..');
export const artifactsDir = join(repoRoot, 'test-artifacts', 'e2e');
const BIN = join(repoRoot, 'bin', 'netclone.js');
const PREFIX = 'nce2e-';

export const SERVER_IP = '10.77.0.1';
export const OFFICE_DHCP_IP = '10.77.0.2';
export const DHCP_RANGE = '10.77.0.100-10.77.0.150';
const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';
/** OVMF with Microsoft's keys enrolled and Secure Boot enforced (the VARS copy starts with it on). */
const OVMF_CODE_MS = '/usr/share/OVMF/OVMF_CODE_4M.ms.fd';
const OVMF_VARS_MS = '/usr/share/OVMF/OVMF_VARS_4M.ms.fd';

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr ?? e.message}`, { cause: err });
  }
}

const pidAlive = (pid: number): boolean => existsSync(`/proc/${pid}`);

/**
 * Namespaces and scratch directories left by a run that was killed (its PID, part of the name, is gone):
 * stop what still runs inside them (their own QEMU/servers, found by namespace) and delete them. Live
 * runs are left alone.
 */
export function sweepStaleNamespaces(): void {
  const names = existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(PREFIX)) : [];
  for (const ns of names) {
    const owner = Number(/^nce2e-(\d+)-/.exec(ns)?.[1]);
    if (Number.isInteger(owner) && pidAlive(owner)) continue;
    const pids = run('ip', ['netns', 'pids', ns]).split('\n').filter(Boolean).map(Number);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    run('ip', ['netns', 'del', ns]);
  }
  // Their scratch directories (disks, data dirs) too.
  for (const dir of readdirSync(tmpdir()).filter((n) => n.startsWith(PREFIX))) {
    const owner = Number(/^nce2e-(\d+)-/.exec(dir)?.[1]);
    if (Number.isInteger(owner) && !pidAlive(owner)) rmSync(join(tmpdir(), dir), { recursive: true, force: true });
  }
}

/** A process inside the namespace whose stdout+stderr go to a file and to memory. */
export class LabProcess {
  private text = '';
  private readonly file: WriteStream;
  readonly exited: Promise<number | null>;

  constructor(
    readonly proc: ChildProcess,
    logPath: string,
  ) {
    this.file = createWriteStream(logPath);
    const append = (b: Buffer): void => {
      this.text += b.toString('latin1');
      this.file.write(b);
    };
    proc.stdout?.on('data', append);
    proc.stderr?.on('data', append);
    this.exited = new Promise((res) =>
      proc.on('exit', (code) => {
        this.file.end();
        res(code);
      }),
    );
  }

  output(): string {
    return this.text;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }
}

export interface LogEntry {
  level: number;
  msg: string;
  component?: string;
  [key: string]: unknown;
}

export class NetcloneServer {
  constructor(
    private readonly t: LabProcess,
    readonly dhcpMode: 'full' | 'proxy',
  ) {}

  get pid(): number | undefined {
    return this.t.proc.pid;
  }

  output(): string {
    return this.t.output();
  }

  /** The server's pino lines, parsed; non-JSON lines (should be none) are skipped. */
  entries(): LogEntry[] {
    const out: LogEntry[] = [];
    for (const line of this.t.output().split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as LogEntry);
      } catch {
        // a line still being written
      }
    }
    return out;
  }

  /** Log entries after `mark` (an index from `entries().length`). */
  since(mark: number): LogEntry[] {
    return this.entries().slice(mark);
  }

  async stop(): Promise<void> {
    await stopProcess(this.t.proc);
  }
}

export interface VmDisk {
  readonly path: string;
  readonly bus: 'ahci' | 'nvme';
  readonly serial: string;
}

export interface VmSpec {
  /** Artifact name: the serial log is test-artifacts/e2e/NAME.serial.log. */
  readonly name: string;
  readonly firmware: 'bios' | 'uefi';
  readonly mac: string;
  readonly disk?: VmDisk;
  /** UEFI only: Microsoft's keys enrolled and Secure Boot on, as an office PC ships. */
  readonly secureBoot?: boolean;
  /** UEFI only: 'http' leaves OVMF only its HTTP boot client (DHCP architecture 16); default PXE. */
  readonly netBoot?: 'pxe' | 'http';
}

/** Bytes that crossed a VM's tap device, from the host's side of it. */
export interface TapBytes {
  /** Sent by the VM (tap rx). */
  readonly fromVm: number;
  /** Received by the VM (tap tx). */
  readonly toVm: number;
}

export class Vm {
  constructor(
    private readonly t: LabProcess,
    readonly spec: VmSpec,
    /** The tap device the VM's NIC is on, inside the lab's namespace. */
    readonly tap: string,
    private readonly ns: string,
  ) {}

  /** The tap's counters (read while the tap exists: before Lab.close()). */
  tapBytes(): TapBytes {
    const read = (what: string): number => Number(run('ip', ['netns', 'exec', this.ns, 'cat', `/sys/class/net/${this.tap}/statistics/${what}`]).trim());
    return { fromVm: read('rx_bytes'), toVm: read('tx_bytes') };
  }

  get pid(): number | undefined {
    return this.t.proc.pid;
  }

  get exited(): Promise<number | null> {
    return this.t.exited;
  }

  get running(): boolean {
    return this.t.running;
  }

  serial(): string {
    return this.t.output();
  }

  /** Waits for text on the serial console (the cap turns a hang into a failure with the console tail). */
  async waitSerial(what: string | RegExp, capMs = 180_000): Promise<void> {
    const hit = (): boolean => (typeof what === 'string' ? this.serial().includes(what) : what.test(this.serial()));
    await waitFor(`serial text ${String(what)} from VM ${this.spec.name}`, () => hit() || !this.running, { timeoutMs: capMs, everyMs: 250, context: () => this.serial().slice(-4000) });
    if (!hit()) throw new Error(`VM ${this.spec.name} exited before printing ${String(what)}\n${this.serial().slice(-4000)}`);
  }

  /** Waits for QEMU to end by itself (-no-reboot turns the client's reboot/poweroff into an exit). */
  async finished(capMs = 240_000): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const cap = new Promise<'hang'>((r) => (timer = setTimeout(() => r('hang'), capMs)));
    const code = await Promise.race([this.t.exited, cap]);
    clearTimeout(timer);
    if (code === 'hang') throw new Error(`VM ${this.spec.name} did not finish\n${this.serial().slice(-4000)}`);
    return code;
  }

  sendKeys(text: string): void {
    this.t.proc.stdin?.write(text);
  }

  async kill(): Promise<void> {
    await stopProcess(this.t.proc, 'SIGKILL');
  }
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export class Lab {
  readonly ns: string;
  readonly officeNs: string;
  readonly tmp: string;
  readonly dataDir: string;
  readonly bootDir: string;
  private readonly procs = new Set<ChildProcess>();
  private officeUp = false;
  private taps = 0;

  private constructor(readonly tag: string) {
    this.ns = `${PREFIX}${process.pid}-${tag}`;
    this.officeNs = `${PREFIX}${process.pid}-${tag}-office`;
    this.tmp = mkdtempSync(join(tmpdir(), `${PREFIX}${process.pid}-${tag}-`));
    this.dataDir = join(this.tmp, 'data');
    this.bootDir = join(this.tmp, 'boot');
  }

  /**
   * Builds the namespace: bridge br0 with SERVER_IP/24 and fd00::1/64, the broadcast route, and a
   * dnsmasq that only sends IPv6 router advertisements. Also a boot dir: loaders copied by
   * boot/setup-loaders.sh plus boot/dist (the thin client) linked in.
   */
  static async create(tag: string): Promise<Lab> {
    sweepStaleNamespaces();
    mkdirSync(artifactsDir, { recursive: true });
    const lab = new Lab(tag);
    try {
      mkdirSync(lab.bootDir);
      run('bash', [join(repoRoot, 'boot', 'setup-loaders.sh'), join(lab.bootDir, 'loaders')]);
      symlinkSync(join(repoRoot, 'boot', 'dist'), join(lab.bootDir, 'dist'));
      const ip = (...args: string[]): void => void run('ip', ['-n', lab.ns, ...args]);
      run('ip', ['netns', 'add', lab.ns]);
      ip('link', 'set', 'lo', 'up');
      ip('link', 'add', 'br0', 'type', 'bridge');
      ip('link', 'set', 'br0', 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0');
      ip('addr', 'add', `${SERVER_IP}/24`, 'dev', 'br0');
      ip('addr', 'add', 'fd00::1/64', 'dev', 'br0', 'nodad');
      ip('link', 'set', 'br0', 'up');
      // Without a default route, UDP to 255.255.255.255 fails with ENETUNREACH inside a namespace.
      ip('route', 'add', '255.255.255.255/32', 'dev', 'br0');
      lab.spawn('ra-dnsmasq', ['dnsmasq', '--no-daemon', '--conf-file=/dev/null', '--port=0', '--interface=br0', '--bind-interfaces',
        '--enable-ra', '--dhcp-range=fd00::,ra-only', `--pid-file=${join(lab.tmp, 'ra-dnsmasq.pid')}`, `--dhcp-leasefile=${join(lab.tmp, 'ra.leases')}`]);
      return lab;
    } catch (err) {
      await lab.close();
      throw err;
    }
  }

  private spawn(name: string, cmd: string[], ns = this.ns, stdin: 'ignore' | 'pipe' = 'ignore'): LabProcess {
    // `ip netns exec` execs the command, so the PID we hold is the program's own.
    const proc = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: [stdin, 'pipe', 'pipe'], env: { ...process.env, NETCLONE_CONFIG: '' } });
    this.procs.add(proc);
    proc.on('exit', () => this.procs.delete(proc));
    return new LabProcess(proc, join(artifactsDir, `${this.tag}.${name}.log`));
  }

  /** Starts `netclone serve` inside the namespace and waits for "netclone is up". */
  async startServer(dhcp: 'full' | 'proxy', logName: string, extra: string[] = []): Promise<NetcloneServer> {
    const args = ['node', BIN, 'serve', '--data', this.dataDir, '--dhcp', dhcp, '--server-ip', SERVER_IP, '--interface', 'br0',
      '--http-port', '80', '--tftp-port', '69', '--nbd-port', '10809', '--boot-dir', this.bootDir, '--log-level', 'debug', ...extra];
    if (dhcp === 'full') args.push('--dhcp-range', DHCP_RANGE);
    const t = this.spawn(logName, args);
    const server = new NetcloneServer(t, dhcp);
    await waitFor('netclone serve to start', () => t.output().includes('netclone is up') || !t.running, { timeoutMs: 30_000, everyMs: 250, context: () => t.output() });
    if (!t.running) throw new Error(`netclone serve exited:\n${t.output()}`);
    const up = server.entries().find((e) => e.msg === 'netclone is up') as LogEntry & { services: Array<{ name: string; state: string; detail: string }> };
    const down = up.services.filter((s) => s.state !== 'running');
    if (down.length > 0) throw new Error(`netclone services not running: ${JSON.stringify(down)}`);
    return server;
  }

  /**
   * The "office DHCP server" for proxy mode: Debian's dnsmasq handing out addresses only, on its own
   * namespace joined to the lab bridge by a veth pair, as a separate machine would be.
   */
  startOfficeDhcp(): LabProcess {
    if (!this.officeUp) {
      run('ip', ['netns', 'add', this.officeNs]);
      run('ip', ['-n', this.ns, 'link', 'add', 'office0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.officeNs]);
      run('ip', ['-n', this.ns, 'link', 'set', 'office0', 'master', 'br0']);
      run('ip', ['-n', this.ns, 'link', 'set', 'office0', 'up']);
      run('ip', ['-n', this.officeNs, 'link', 'set', 'lo', 'up']);
      run('ip', ['-n', this.officeNs, 'addr', 'add', `${OFFICE_DHCP_IP}/24`, 'dev', 'eth0']);
      run('ip', ['-n', this.officeNs, 'link', 'set', 'eth0', 'up']);
      this.officeUp = true;
    }
    const [start, end] = DHCP_RANGE.split('-');
    return this.spawn('office-dnsmasq', ['dnsmasq', '--no-daemon', '--conf-file=/dev/null', '--port=0', '--bind-interfaces', '-i', 'eth0',
      `--dhcp-range=${start},${end},255.255.255.0,1h`, `--dhcp-leasefile=${join(this.tmp, 'office.leases')}`,
      `--pid-file=${join(this.tmp, 'office-dnsmasq.pid')}`, '--log-dhcp'], this.officeNs);
  }

  async stopProcess(t: LabProcess): Promise<void> {
    await stopProcess(t.proc);
  }

  private newTap(): string {
    const tap = `tap${this.taps++}`;
    run('ip', ['-n', this.ns, 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
    run('ip', ['-n', this.ns, 'link', 'set', tap, 'master', 'br0']);
    run('ip', ['-n', this.ns, 'link', 'set', tap, 'up']);
    return tap;
  }

  /** Powers on a VM (TCG, 1 GiB, one CPU, network first in the boot order); serial on stdio. */
  startVm(spec: VmSpec): Vm {
    const tap = this.newTap();
    // The client's initramfs unpacks to ~150 MB of tmpfs; a 512 MiB OVMF VM runs out while unpacking it.
    const args = ['qemu-system-x86_64', '-accel', 'tcg', '-m', '1024', '-smp', '1', '-nographic', '-no-reboot',
      '-netdev', `tap,id=n0,ifname=${tap},script=no,downscript=no`];
    if (spec.firmware === 'bios') {
      // QEMU's e1000 option ROM is iPXE; bootindex keeps SeaBIOS from trying a disk with a boot signature first.
      args.push('-machine', 'pc', '-device', `e1000,netdev=n0,mac=${spec.mac},bootindex=0`);
    } else {
      const vars = join(this.tmp, `${spec.name}.OVMF_VARS.fd`);
      copyFileSync(spec.secureBoot ? OVMF_VARS_MS : OVMF_VARS, vars);
      // Secure Boot needs SMM, with the variable store writable only from it.
      const machine = spec.secureBoot ? ['-machine', 'q35,smm=on', '-global', 'driver=cfi.pflash01,property=secure,value=on'] : ['-machine', 'q35'];
      // Empty romfile: OVMF's own virtio-net driver and PXE client run (DHCP arch 7, TFTP snponly.efi).
      args.push(...machine, '-drive', `if=pflash,format=raw,readonly=on,file=${spec.secureBoot ? OVMF_CODE_MS : OVMF_CODE}`, '-drive', `if=pflash,format=raw,file=${vars}`,
        '-device', `virtio-net-pci,netdev=n0,romfile=,mac=${spec.mac},bootindex=0`);
      // OVMF reads these switches from fw_cfg: without its PXE clients, the NIC's boot option is HTTP boot.
      if (spec.netBoot === 'http') args.push('-fw_cfg', 'name=opt/org.tianocore/IPv4PXESupport,string=n', '-fw_cfg', 'name=opt/org.tianocore/IPv6PXESupport,string=n');
    }
    if (spec.disk) {
      args.push('-drive', `file=${spec.disk.path},format=raw,if=none,id=d0`);
      if (spec.disk.bus === 'nvme') args.push('-device', `nvme,serial=${spec.disk.serial},drive=d0,bootindex=1`);
      else args.push('-device', 'ahci,id=ahci0', '-device', `ide-hd,drive=d0,bus=ahci0.0,serial=${spec.disk.serial},bootindex=1`);
    }
    return new Vm(this.spawn(`${spec.name}.serial`, args, this.ns, 'pipe'), spec, tap, this.ns);
  }

  /** Runs the CLI (outside the namespace: it reaches the server through the control socket in the data dir). */
  cli(args: string[]): Promise<CliResult> {
    return new Promise((resolveCli, reject) => {
      const p = spawn(process.execPath, [BIN, ...args, '--data', this.dataDir], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NETCLONE_CONFIG: '' } });
      this.procs.add(p);
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      p.on('error', reject);
      p.on('close', (code) => {
        this.procs.delete(p);
        resolveCli({ code, stdout, stderr });
      });
    });
  }

  /** CLI call that must succeed; returns its parsed --json output. */
  async cliJson<T>(args: string[]): Promise<T> {
    const r = await this.cli([...args, '--json']);
    if (r.code !== 0) throw new Error(`netclone ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
    return JSON.parse(r.stdout) as T;
  }

  /** Stops every process this lab started (by PID), deletes its namespaces and temporary files. */
  async close(): Promise<void> {
    await Promise.all([...this.procs].map((p) => stopProcess(p)));
    for (const ns of [this.ns, this.officeNs]) if (existsSync(`/run/netns/${ns}`)) run('ip', ['netns', 'del', ns]);
    rmSync(this.tmp, { recursive: true, force: true });
  }
}
