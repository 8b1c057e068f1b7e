import { describe, expect, it } from 'vitest';
import { BusyPoll } from '../../../src/pxe/tftp/busy-poll.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('BusyPoll', () => {
  it('keeps the loop polling after a kick and stops by itself once the window has passed', async () => {
    const poll = new BusyPoll(5);
    expect(poll.active).toBe(false);
    poll.kick();
    expect(poll.active).toBe(true);
    // Timers still fire while it polls: the loop is not blocked, only kept from sleeping.
    await sleep(1);
    poll.kick();
    expect(poll.active).toBe(true);
    await sleep(50);
    expect(poll.active).toBe(false);
  });

  it('does nothing when the window is 0', () => {
    const poll = new BusyPoll(0);
    poll.kick();
    expect(poll.active).toBe(false);
  });
});
