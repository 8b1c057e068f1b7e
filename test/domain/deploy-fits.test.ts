/** The fits being prepared for deploys onto smaller disks: one preparation per disk size, its steps, its outcome told once. */
import { describe, expect, it } from 'vitest';
import { DeployFits, type FitFn } from '../../src/domain/deploy-fits.js';
import { nullLogger } from '../../src/lib/log.js';

interface Call {
  readonly args: [string, number, number];
  step(s: string): void;
  resolve(r: { image: string; version: number }): void;
  reject(e: Error): void;
}

function fake(): { fn: FitFn; calls: Call[] } {
  const calls: Call[] = [];
  const fn: FitFn = (image, version, size, onProgress) =>
    new Promise((resolve, reject) => calls.push({ args: [image, version, size], step: onProgress, resolve, reject }));
  return { fn, calls };
}

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('deploy fits', () => {
  it('starts one preparation per image, version and disk size, tells its step, then hands out the fitted version', async () => {
    const { fn, calls } = fake();
    const fits = new DeployFits(fn, nullLogger(), 5);
    expect(await fits.poll('win', 3, 1000)).toEqual({ state: 'preparing', step: 'starting' });
    expect(await fits.poll('win', 3, 1000)).toEqual({ state: 'preparing', step: 'starting' });
    expect(await fits.poll('win', 3, 2000)).toEqual({ state: 'preparing', step: 'starting' });
    expect(calls.map((c) => c.args)).toEqual([['win', 3, 1000], ['win', 3, 2000]]);
    calls[0].step('shrinking the ntfs filesystem of partition 3');
    expect(await fits.poll('win', 3, 1000)).toEqual({ state: 'preparing', step: 'shrinking the ntfs filesystem of partition 3' });
    calls[0].resolve({ image: 'win.fit-1m', version: 1 });
    await settle();
    expect(await fits.poll('win', 3, 1000)).toEqual({ state: 'ready', image: 'win.fit-1m', version: 1 });
    expect(calls).toHaveLength(2);
  });

  it('answers at once when the fit is quick (a fitted version the store already holds)', async () => {
    const calls: number[] = [];
    const fits = new DeployFits(async (_i, _v, size) => {
      calls.push(size);
      return { image: 'win.fit-1m', version: 4 };
    }, nullLogger(), 60_000);
    expect(await fits.poll('win', 3, 1000)).toEqual({ state: 'ready', image: 'win.fit-1m', version: 4 });
    // Forgotten once handed out: the next PC's ask finds the kept version through a new fit.
    expect(await fits.poll('win', 3, 1000)).toEqual({ state: 'ready', image: 'win.fit-1m', version: 4 });
    expect(calls).toEqual([1000, 1000]);
  });

  it('throws a failed preparation once, then tries again', async () => {
    const { fn, calls } = fake();
    const fits = new DeployFits(fn, nullLogger(), 5);
    await fits.poll('win', 1, 1000);
    calls[0].reject(new Error('the image needs a disk of at least 2 MiB'));
    await settle();
    await expect(fits.poll('win', 1, 1000)).rejects.toThrow('the image needs a disk of at least 2 MiB');
    expect(await fits.poll('win', 1, 1000)).toEqual({ state: 'preparing', step: 'starting' });
    expect(calls).toHaveLength(2);
  });
});
