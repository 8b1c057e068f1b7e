/**
 * The busy-poll proved by what it does, not by how fast it is: while a window is open the event loop
 * keeps iterating without sleeping, so an ACK is picked up by one of those polling iterations; every
 * DATA send opens a new window; a window that passes ends the polling by itself. The window's clock is
 * driven by the test, so nothing here depends on the machine's speed. What the polling is worth in
 * throughput is measured in bench/tftp.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import dgram, { type RemoteInfo, type Socket } from 'node:dgram';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BusyPoll } from '../../../src/pxe/tftp/busy-poll.js';
import { Opcode, decodePacket } from '../../../src/pxe/tftp/codec.js';
import { negotiateRead } from '../../../src/pxe/tftp/negotiate.js';
import { MemorySource } from '../../../src/pxe/tftp/source.js';
import { ReadTransfer, type TransferInfo } from '../../../src/pxe/tftp/transfer.js';
import { nullLogger } from '../../../src/lib/log.js';

/** A clock that only moves when the test says so. */
function manualClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 0;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

/** One event-loop iteration: resolves from the check phase of the next iteration. */
const nextIteration = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Two loop turns for the poller to notice its window ended; then it stays off. Returns its iteration count. */
async function expectStopped(poll: BusyPoll): Promise<number> {
  await nextIteration();
  await nextIteration();
  expect(poll.active).toBe(false);
  const stoppedAt = poll.iterations;
  for (let i = 0; i < 10; i++) await nextIteration();
  expect(poll.iterations).toBe(stoppedAt);
  return stoppedAt;
}

const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

describe('BusyPoll window', () => {
  it('polls on every loop iteration while the window is open and stops by itself once it has passed', async () => {
    const clock = manualClock();
    const poll = new BusyPoll(1, { now: clock.now });
    cleanups.push(() => clock.advance(1e9));
    expect(poll.active).toBe(false);
    poll.kick();
    expect(poll.active).toBe(true);
    // The loop is kept from sleeping, not blocked: a timer still fires while it polls.
    await new Promise((r) => setTimeout(r, 0));
    expect(poll.active).toBe(true);
    let last = poll.iterations;
    for (let i = 0; i < 10; i++) {
      await nextIteration();
      expect(poll.iterations).toBeGreaterThan(last);
      last = poll.iterations;
    }
    // A second kick inside the window (at 0.5 of 1 ms) extends it to 1.5; it does not start a second poller.
    clock.advance(0.5);
    poll.kick();
    const before = poll.iterations;
    for (let i = 0; i < 10; i++) await nextIteration();
    expect(poll.iterations - before).toBeLessThanOrEqual(11);
    clock.advance(0.7);
    await nextIteration();
    await nextIteration();
    expect(poll.active).toBe(true);

    clock.advance(0.3);
    const stoppedAt = await expectStopped(poll);

    // A kick after the window has passed starts polling again.
    poll.kick();
    expect(poll.active).toBe(true);
    await nextIteration();
    expect(poll.iterations).toBeGreaterThan(stoppedAt);
  });

  it('never polls when the window is 0', async () => {
    const poll = new BusyPoll(0);
    poll.kick();
    expect(poll.active).toBe(false);
    for (let i = 0; i < 5; i++) await nextIteration();
    expect(poll.iterations).toBe(0);
  });
});

interface AckSeen {
  readonly block: number;
  /** Whether the poller was running when the ACK was handed to us. */
  readonly polling: boolean;
  /** Polling iterations since the previous ACK. */
  readonly spinsSincePrevious: number;
}

/**
 * Serves one file to a real atftp client through ReadTransfer (the server's transfer code), with
 * `poll` passed as the transfer's busy-poll. Before the transfer sees each ACK, the test notes whether
 * the poller was running and then moves the clock past the window, so polling continues only if the
 * transfer kicks it again when it sends the next DATA.
 */
async function serveWithAtftp(poll: BusyPoll, clock: { advance: (ms: number) => void }, content: Buffer): Promise<{ acks: AckSeen[]; info: TransferInfo; received: Buffer }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'nctftp-busypoll-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const listener = dgram.createSocket('udp4');
  cleanups.push(() => void listener.close());
  await new Promise<void>((r) => listener.bind(0, '127.0.0.1', () => r()));
  const rrq = new Promise<{ msg: Buffer; rinfo: RemoteInfo }>((r) => listener.once('message', (msg, rinfo) => r({ msg, rinfo })));

  const dest = path.join(dir, 'out.bin');
  const client = spawn('atftp', ['-g', '-r', 'boot.bin', '-l', dest, '127.0.0.1', String(listener.address().port)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  client.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => client.on('exit', (code) => r(code)));
  cleanups.push(() => void (client.exitCode === null && client.kill()));

  const { msg, rinfo } = await rrq;
  const req = decodePacket(msg);
  if (req.op !== 'RRQ') throw new Error(`atftp sent ${req.op}, expected RRQ`);

  const strangers: Socket = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  const socket: Socket = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  await new Promise<void>((r) => strangers.bind(0, '127.0.0.1', () => r()));
  await new Promise<void>((r) => socket.bind(strangers.address().port, '127.0.0.1', () => r()));
  await new Promise<void>((r) => socket.connect(rinfo.port, rinfo.address, () => r()));

  const acks: AckSeen[] = [];
  let spinsAtPrevious = poll.iterations;
  let done!: (info: TransferInfo) => void;
  const finished = new Promise<TransferInfo>((r) => (done = r));
  const transfer = new ReadTransfer({
    socket,
    strangers,
    peer: { address: rinfo.address, port: rinfo.port },
    file: req.filename,
    path: 'boot.bin',
    source: new MemorySource(content),
    negotiated: negotiateRead(req.options, content.length, { maxBlksize: 1468, maxWindowsize: 1, defaultTimeoutMs: 1000 }),
    retries: 5,
    busyPoll: poll,
    logger: nullLogger(),
    onDone: (info) => done(info),
  });
  // Runs before the transfer's own handler (prepended), i.e. before it can kick the poller again.
  socket.prependListener('message', (m: Buffer) => {
    if (m.length !== 4 || m.readUInt16BE(0) !== Opcode.ACK) return;
    acks.push({ block: m.readUInt16BE(2), polling: poll.active, spinsSincePrevious: poll.iterations - spinsAtPrevious });
    spinsAtPrevious = poll.iterations;
    clock.advance(1e6);
  });
  transfer.start();
  const info = await finished;
  const code = await exited;
  expect(code, stderr).toBe(0);
  return { acks, info, received: await readFile(dest) };
}

describe('busy-poll in a real TFTP transfer (atftp client)', () => {
  /** 100 full 512-byte blocks and a short last one, each byte telling where it came from. */
  const content = Buffer.from(Array.from({ length: 100 * 512 + 77 }, (_, i) => (i * 131 + 7) & 0xff));

  it('after each DATA send the loop polls for the ACK and picks it up while polling, then stops polling', async () => {
    const clock = manualClock();
    const poll = new BusyPoll(1, { now: clock.now });
    cleanups.push(() => clock.advance(1e9));
    const { acks, info, received } = await serveWithAtftp(poll, clock, content);

    expect(info.status).toBe('complete');
    expect(received.equals(content)).toBe(true);
    expect(acks.length).toBeGreaterThanOrEqual(info.blocks);
    // Every ACK, the last included, arrived while the poller was running. The test ended the window
    // at each ACK, so only a kick on the next DATA send can have kept it running.
    expect(acks.filter((a) => !a.polling)).toEqual([]);
    // Some ACKs are already queued when the transfer finishes sending (libuv reads several datagrams
    // per wake-up); the others came after the loop had gone round polling at least once, i.e. the loop
    // was spinning, not asleep, when they arrived. There are always some of those: the read loop
    // ends when the socket is empty, or after 32 datagrams at most.
    expect(acks.filter((a) => a.spinsSincePrevious > 0).length).toBeGreaterThan(0);

    // The last ACK sent nothing, so nothing kicked: polling ends by itself and stays ended.
    await expectStopped(poll);
  });

  it('with the window at 0 the loop never polls: each ACK has to wake it', async () => {
    const clock = manualClock();
    const poll = new BusyPoll(0, { now: clock.now });
    const { acks, info, received } = await serveWithAtftp(poll, clock, content);
    expect(info.status).toBe('complete');
    expect(received.equals(content)).toBe(true);
    expect(acks.length).toBeGreaterThanOrEqual(info.blocks);
    expect(acks.every((a) => !a.polling && a.spinsSincePrevious === 0)).toBe(true);
    expect(poll.iterations).toBe(0);
  });
});
