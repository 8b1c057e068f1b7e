/**
 * The Scheduler against a clock the test moves: no test waits for a real due time. The database is
 * a real one in a temp dir, so "restart" reopens the same file with a new scheduler.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Commands } from '../../src/domain/commands.js';
import { forgetDatabase, openDatabase, type ScheduleRunRecord } from '../../src/domain/database.js';
import { EventLog } from '../../src/domain/events.js';
import { HostService } from '../../src/domain/hosts.js';
import { TaskService } from '../../src/domain/tasks.js';
import { Scheduler, type SchedulerClock, type TimerHandle } from '../../src/domain/scheduler.js';
import type { WolTarget } from '../../src/lib/wake-on-lan.js';
import { nullLogger } from '../../src/lib/log.js';
import { openTestDomain, type TestDomain } from '../lib/domain.js';
import { TEST_OPERATOR } from '../lib/actor.js';
import { waitFor } from '../lib/wait.js';

const MAC = '52:54:00:00:13:01';
const MAC2 = '52:54:00:00:13:02';
const MAC3 = '52:54:00:00:13:03';
const MIN = 60_000;

class FakeClock implements SchedulerClock {
  private readonly timers: Array<{ at: number; fn: () => void; done: boolean }> = [];
  constructor(private t: number) {}
  now(): Date {
    return new Date(this.t);
  }
  setTimer(ms: number, fn: () => void): TimerHandle {
    const timer = { at: this.t + ms, fn, done: false };
    this.timers.push(timer);
    return { cancel: () => { timer.done = true; } };
  }
  /** Move to `target`, firing every timer due on the way in order, letting `settle` finish after each. */
  async advanceTo(target: number, settle: () => Promise<void>): Promise<void> {
    for (;;) {
      await settle();
      const due = this.timers.filter((x) => !x.done && x.at <= target).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.t = Math.max(this.t, due.at);
      due.done = true;
      due.fn();
    }
    this.t = target;
    await settle();
  }
  get time(): number {
    return this.t;
  }
}

interface Rig {
  readonly d: TestDomain;
  readonly commands: Commands;
  readonly scheduler: Scheduler;
  readonly clock: FakeClock;
  readonly packets: Array<{ mac: string; ip: string | null; at: number }>;
  readonly ended: ScheduleRunRecord[];
  advanceTo(t: number): Promise<void>;
}

let saved: string | undefined;
beforeAll(() => {
  saved = process.env.TZ;
  process.env.TZ = 'UTC';
});
afterAll(() => {
  if (saved === undefined) delete process.env.TZ;
  else process.env.TZ = saved;
});

let d: TestDomain;
const schedulers: Scheduler[] = [];
beforeEach(async () => {
  d = await openTestDomain('netclone-scheduler-');
});
afterEach(async () => {
  for (const s of schedulers.splice(0)) s.stop();
  await d.close();
});

async function rig(start: number, domain: Pick<TestDomain, 'db' | 'events' | 'hosts' | 'tasks' | 'store' | 'config' | 'logger'> = d, clock = new FakeClock(start)): Promise<Rig> {
  const packets: Rig['packets'] = [];
  const commands = new Commands({ ...domain, nbd: () => null, now: () => clock.now() });
  const scheduler = new Scheduler({
    db: domain.db, commands, tasks: domain.tasks, hosts: domain.hosts, events: domain.events, logger: nullLogger(), clock,
    wake: async (mac, ip): Promise<WolTarget> => {
      packets.push({ mac, ip: ip ?? null, at: clock.time });
      return { address: '10.9.9.255', port: 9 };
    },
  });
  schedulers.push(scheduler);
  const ended: ScheduleRunRecord[] = [];
  scheduler.onRun((r) => ended.push({ ...r }));
  const settle = async (): Promise<void> => {
    for (let i = 0; i < 5; i++) {
      await scheduler.idle();
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  await scheduler.start();
  return { d: domain as TestDomain, commands, scheduler, clock, packets, ended, advanceTo: (t) => clock.advanceTo(t, settle) };
}

/** 2026-06-10 (a Wednesday), hh:mm UTC. */
function june10(hh: number, mm = 0): number {
  return Date.UTC(2026, 5, 10, hh, mm);
}

describe('scheduler', () => {
  it('a due run queues the capture through the commands, wakes the PC 3 times 1 s apart, and it powers off afterwards', async () => {
    const r = await rig(june10(1, 0));
    await d.hosts.add(MAC, 'Reception 1');
    d.hosts.get(MAC)!.ip = '10.9.9.20';
    await r.commands.addSchedule(TEST_OPERATOR, { mac: MAC, capture: 'reception', daily: '02:00', wake: true });
    await r.advanceTo(june10(1, 59));
    expect(d.tasks.list()).toHaveLength(0);

    await r.advanceTo(june10(2, 0));
    const [task] = d.tasks.list();
    expect(task).toMatchObject({ kind: 'capture', mac: MAC, image: 'reception', after: 'poweroff', state: 'queued' });
    expect(r.packets).toEqual([{ mac: MAC, ip: '10.9.9.20', at: june10(2, 0) }]);
    await r.advanceTo(june10(2, 0) + 1000);
    await r.advanceTo(june10(2, 0) + 2000);
    await waitFor('three packets', () => r.packets.length === 3);
    expect(r.packets.map((p) => p.at - june10(2, 0))).toEqual([0, 1000, 2000]);
    await waitFor('the wake note', () => d.tasks.require(task.id).log.some((l) => /magic packet sent 3 times to 10\.9\.9\.255:9/.test(l.message)));
    const [run] = d.db.data.scheduleRuns;
    expect(run).toMatchObject({ mac: MAC, state: 'pending', taskId: task.id, dueAt: new Date(june10(2, 0)).toISOString() });
    expect(d.db.data.schedules[0].lastRunAt).toBe(new Date(june10(2, 0)).toISOString());
    // The actor the commands saw is the scheduler's.
    expect(d.db.data.events.some((e) => /capture task for 52:54:00:00:13:01 with image reception queued/.test(e.message))).toBe(true);
  });

  it('without --wake no packet is sent and the PC reboots afterwards; the next day runs again', async () => {
    const r = await rig(june10(1, 0));
    await r.commands.addSchedule(TEST_OPERATOR, { mac: MAC, capture: 'reception', daily: '02:00' });
    await r.advanceTo(june10(2, 0));
    const task = d.tasks.list()[0];
    expect(task.after).toBe('reboot');
    expect(r.packets).toEqual([]);
    await d.tasks.beginBoot(task, '10.9.9.20');
    await d.tasks.markRunning(d.tasks.require(task.id), { name: 'sda', size: 1, logicalSectorSize: 512, serial: 's' }, '10.9.9.20', 1);
    await d.tasks.succeed(d.tasks.require(task.id), { version: 1, digest: 'x', bytesOnWire: 1 }, 'done');
    await r.advanceTo(june10(2, 1));
    expect(r.ended.map((e) => e.state)).toEqual(['done']);
    await r.advanceTo(june10(2, 0) + 24 * 60 * MIN);
    expect(d.tasks.list()).toHaveLength(2);
  });

  it('a PC that never boots within the window: run missed, task cancelled with the reason, warn event, run event', async () => {
    const r = await rig(june10(1, 0));
    await r.commands.addSchedule(TEST_OPERATOR, { mac: MAC, capture: 'reception', daily: '02:00', wake: true, windowMinutes: 30 });
    await r.advanceTo(june10(2, 0));
    const task = d.tasks.list()[0];
    await r.advanceTo(june10(2, 29));
    expect(d.tasks.require(task.id).state).toBe('queued');
    await r.advanceTo(june10(2, 30));
    const cancelled = d.tasks.require(task.id);
    expect(cancelled.state).toBe('cancelled');
    expect(cancelled.reason).toMatch(/missed its backup window: the PC did not start its capture within 30 minutes/);
    expect(r.ended).toMatchObject([{ mac: MAC, state: 'missed', taskId: task.id }]);
    const warn = d.db.data.events.find((e) => e.level === 'warn' && /missed/.test(e.message));
    expect(warn).toMatchObject({ mac: MAC });
    expect(d.db.data.scheduleRuns[0].state).toBe('missed');
  });

  it('a PC that booted in time but is still booting at the window end is missed too; one that is running is not', async () => {
    const r = await rig(june10(1, 0));
    await d.hosts.add(MAC);
    await d.hosts.add(MAC2);
    for (const mac of [MAC, MAC2]) await r.commands.setHostGroup(TEST_OPERATOR, mac, 'Lab 2');
    await r.commands.addSchedule(TEST_OPERATOR, { group: 'lab 2', capture: 'lab', daily: '02:00', windowMinutes: 10});
    await r.advanceTo(june10(2, 0));
    const [a, b] = [d.tasks.activeFor(MAC)!, d.tasks.activeFor(MAC2)!];
    await d.tasks.beginBoot(a, '10.9.9.21');
    await d.tasks.beginBoot(b, '10.9.9.22');
    await d.tasks.markRunning(d.tasks.require(b.id), { name: 'sda', size: 1, logicalSectorSize: 512, serial: 's' }, '10.9.9.22', 1);
    await r.advanceTo(june10(2, 10));
    expect(d.tasks.require(a.id).state).toBe('cancelled');
    expect(d.tasks.require(b.id).state).toBe('running');
    const runs = Object.fromEntries(d.db.data.scheduleRuns.map((x) => [x.mac, x.state]));
    expect(runs).toEqual({ [MAC]: 'missed', [MAC2]: 'running' });
  });

  it('a group schedule queues one capture per host, each into its own image', async () => {
    const r = await rig(june10(1, 0));
    await d.hosts.add(MAC, 'Front desk');
    await d.hosts.add(MAC2);
    await d.hosts.add(MAC3, 'Not in it');
    await r.commands.setHostGroup(TEST_OPERATOR, MAC, 'Front office');
    await r.commands.setHostGroup(TEST_OPERATOR, MAC2, 'front office');
    await r.commands.addSchedule(TEST_OPERATOR, { group: 'Front office', capture: 'office', weekly: { day: 'wed', time: '02:00' } });
    await r.advanceTo(june10(2, 0));
    const images = d.tasks.list().map((t) => `${t.mac} ${t.image}`).sort();
    expect(images).toEqual([`${MAC} office-Front-desk`, `${MAC2} office-pc-525400001302`]);
  });

  it('a host that already has a task is skipped with the reason; the others run', async () => {
    const r = await rig(june10(1, 0));
    await d.hosts.add(MAC);
    await d.hosts.add(MAC2);
    for (const mac of [MAC, MAC2]) await r.commands.setHostGroup(TEST_OPERATOR, mac, 'Lab');
    const busy = (await r.commands.startTask(TEST_OPERATOR, { kind: 'capture', mac: MAC, image: 'manual' })).task;
    await r.commands.addSchedule(TEST_OPERATOR, { group: 'Lab', capture: 'lab-{host}', daily: '02:00' });
    await r.advanceTo(june10(2, 0));
    expect(r.ended).toHaveLength(1);
    expect(r.ended[0]).toMatchObject({ mac: MAC, state: 'missed', taskId: null });
    expect(r.ended[0].reason).toContain(`skipped: the PC already had a capture task (${busy.id}, queued)`);
    expect(d.tasks.activeFor(MAC)!.id).toBe(busy.id);
    expect(d.tasks.activeFor(MAC2)!.image).toBe('lab-pc-525400001302');
  });

  it('restart: a run due while the server was down is run once if its window is open, never again after another restart', async () => {
    const r1 = await rig(june10(1, 0));
    await r1.commands.addSchedule(TEST_OPERATOR, { mac: MAC, capture: 'reception', daily: '02:00', windowMinutes: 120 });
    r1.scheduler.stop();

    // Down from 01:00 to 03:00: 02:00's window (to 04:00) is still open.
    const r2 = await rig(june10(3, 0));
    expect(d.tasks.list()).toHaveLength(1);
    expect(d.db.data.scheduleRuns).toMatchObject([{ state: 'pending', dueAt: new Date(june10(2, 0)).toISOString() }]);
    r2.scheduler.stop();

    // Restart again, from the file on disk: the same due time does not run a second time.
    forgetDatabase(d.dir);
    const db = await openDatabase(d.dir);
    const events = new EventLog(db, nullLogger());
    const reopened = { ...d, db, events, hosts: new HostService(db, events), tasks: new TaskService(db, events) };
    await rig(june10(3, 30), reopened);
    expect(reopened.tasks.list()).toHaveLength(1);
    expect(db.data.scheduleRuns).toHaveLength(1);
  });

  it('restart after the window closed: the run is marked missed (no task), with the reason and a warn event', async () => {
    const r1 = await rig(june10(1, 0));
    await r1.commands.addSchedule(TEST_OPERATOR, { mac: MAC, capture: 'reception', daily: '02:00', windowMinutes: 60 });
    r1.scheduler.stop();
    // Down until 04:00: 02:00's window ended at 03:00.
    const r2 = await rig(june10(4, 0));
    expect(d.tasks.list()).toHaveLength(0);
    expect(r2.ended).toMatchObject([{ state: 'missed', taskId: null, dueAt: new Date(june10(2, 0)).toISOString() }]);
    expect(r2.ended[0].reason).toMatch(/the server was not running/);
    expect(d.db.data.events.some((e) => e.level === 'warn' && /missed: the server was not running/.test(e.message))).toBe(true);
    r2.scheduler.stop();
    const r3 = await rig(june10(4, 30));
    expect(d.db.data.scheduleRuns).toHaveLength(1);
    expect(r3.ended).toEqual([]);
  });

  it('a run whose task ended while the scheduler was stopped takes that outcome on start', async () => {
    const r1 = await rig(june10(1, 0));
    await r1.commands.addSchedule(TEST_OPERATOR, { mac: MAC, capture: 'reception', daily: '02:00' });
    await r1.advanceTo(june10(2, 0));
    r1.scheduler.stop();
    const task = d.tasks.list()[0];
    await d.tasks.fail(task, 'the PC lost power');
    const r2 = await rig(june10(2, 30));
    expect(r2.ended).toMatchObject([{ state: 'failed', reason: 'the PC lost power', taskId: task.id }]);
  });

  it('a schedule added after its due time today waits for tomorrow; removing it stops its runs', async () => {
    const r = await rig(june10(3, 0));
    const view = await r.commands.addSchedule(TEST_OPERATOR, { mac: MAC, capture: 'reception', daily: '02:00' });
    expect(view.nextRunAt).toBe(new Date(june10(26, 0)).toISOString());
    await r.advanceTo(june10(5, 0));
    expect(d.tasks.list()).toHaveLength(0);
    await r.commands.removeSchedule(TEST_OPERATOR, view.id);
    await r.advanceTo(june10(26, 0));
    expect(d.tasks.list()).toHaveLength(0);
  });
});
