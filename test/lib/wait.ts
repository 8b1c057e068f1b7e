/** Polling until something holds, for tests that wait on another process, a socket or a timer. */

export interface WaitOptions {
  /** Gives up after this long. The cap only turns a hang into a readable failure; it is not an assertion. */
  readonly timeoutMs?: number;
  /** Pause between checks. */
  readonly everyMs?: number;
  /** Appended to the failure, e.g. the log of the process that did not get there. */
  readonly context?: () => string;
}

/**
 * Checks `check` until it returns something other than undefined or false, and returns that. A check that
 * throws fails the wait at once.
 */
export async function waitFor<T>(what: string, check: () => T | undefined | false | Promise<T | undefined | false>, options: WaitOptions = {}): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) {
      const context = options.context ? `\n--- context ---\n${options.context()}` : '';
      throw new Error(`gave up waiting for ${what} after ${options.timeoutMs ?? 30_000} ms${context}`);
    }
    await sleep(options.everyMs ?? 20);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
