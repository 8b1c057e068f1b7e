/**
 * The agent's progress reports (its heartbeat): one call out at a time, the last counters always
 * delivered, nothing sent after stop(), and a refused token stopping the transfer.
 */
import { describe, expect, it } from 'vitest';
import { ApiError, type ProgressReport } from '../../src/agent/api.js';
import { Counters, ProgressReporter } from '../../src/agent/progress.js';

/** A server whose progress answers the test releases one by one. */
class HeldServer {
  readonly reports: ProgressReport[] = [];
  private readonly waiting: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  progress = (r: ProgressReport): Promise<void> => {
    this.reports.push(r);
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  };
  get out(): number {
    return this.waiting.length;
  }
  async answer(err?: Error): Promise<void> {
    const w = this.waiting.shift();
    if (!w) throw new Error('no report is out');
    if (err) w.reject(err);
    else w.resolve();
    // Let the reporter's handlers run.
    await new Promise((r) => setImmediate(r));
  }
}

describe('progress reporter', () => {
  it('sends one report at a time, and a report asked for meanwhile follows with the counters as they are then', async () => {
    const server = new HeldServer();
    const counters = new Counters(10);
    const reporter = new ProgressReporter(server, counters, 60_000);
    counters.examined = 1;
    reporter.post();
    counters.examined = 2;
    reporter.post();
    counters.examined = 3;
    reporter.post();
    expect(server.out).toBe(1);
    await server.answer();
    expect(server.reports.map((r) => r.examined)).toEqual([1, 3]);
    const stopped = reporter.stop();
    await server.answer();
    await stopped;
    expect(server.out).toBe(0);
    expect(server.reports).toHaveLength(2);
    expect(server.reports[1]).toEqual({ phase: 'transferring', examined: 3, reusedChunks: 0, sentChunks: 0, zeroChunks: 0, totalChunks: 10 });
  });

  it('stop() waits for the report that is out and the one waiting behind it', async () => {
    const server = new HeldServer();
    const reporter = new ProgressReporter(server, new Counters(1), 60_000);
    reporter.post();
    reporter.post();
    let done = false;
    const stopped = reporter.stop().then(() => (done = true));
    await server.answer();
    expect(done).toBe(false);
    await server.answer();
    await stopped;
    expect(server.reports).toHaveLength(2);
  });

  it('a setPhase report is sent even while another is out', async () => {
    const server = new HeldServer();
    const reporter = new ProgressReporter(server, new Counters(1), 60_000);
    reporter.post();
    const phased = reporter.setPhase('verifying');
    await server.answer();
    await server.answer();
    await phased;
    expect(server.reports.map((r) => r.phase)).toEqual(['transferring', 'verifying']);
  });

  it('a refused token ends the transfer; a lost report does not', async () => {
    const server = new HeldServer();
    const warned: string[] = [];
    const reporter = new ProgressReporter(server, new Counters(1), 60_000, (m) => warned.push(m));
    reporter.post();
    await server.answer(new Error('fetch failed'));
    expect(() => reporter.check()).not.toThrow();
    expect(warned[0]).toMatch(/progress report not delivered \(fetch failed\)/);
    reporter.post();
    await server.answer(new ApiError('progress', 403, 'this task token is not valid (wrong, or its task has ended); reboot the PC to start over'));
    expect(() => reporter.check()).toThrow(/^the server ended this task \(this task token is not valid/);
    reporter.post();
    expect(server.out).toBe(0);
    await reporter.stop();
  });
});
