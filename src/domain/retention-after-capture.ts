/**
 * The image's retention policy applied after each successful capture (issue 13): when a capture
 * task ends done, its image is pruned by its stored policy, then gc runs (RetentionService.prune).
 * An image without a policy was already pruned to keep-versions when the version was committed.
 */
import type { TaskRecord } from './database.js';
import type { RetentionService } from './retention.js';
import type { TaskService } from './tasks.js';
import type { EventLog } from './events.js';
import type { Logger } from '../lib/log.js';

export interface AfterCaptureDeps {
  readonly tasks: TaskService;
  readonly retention: RetentionService;
  readonly store: { meta(name: string): Promise<{ readonly retention: unknown }> };
  readonly events: EventLog;
  readonly logger: Logger;
}

/**
 * Subscribes to the tasks' 'changed' events. `stop` unsubscribes and waits for a prune under way;
 * `settled` (tests) resolves when the prunes started so far have ended.
 */
export function pruneAfterCaptures(deps: AfterCaptureDeps): { stop(): Promise<void>; settled(): Promise<void> } {
  const seen = new Set<string>();
  let chain: Promise<void> = Promise.resolve();
  const onChanged = (task: TaskRecord): void => {
    if (task.kind !== 'capture' || task.state !== 'done' || seen.has(task.id)) return;
    seen.add(task.id);
    // One prune at a time: two captures ending together would otherwise race over the same decisions.
    chain = chain.then(() => pruneOne(deps, task));
  };
  deps.tasks.on('changed', onChanged);
  return {
    // A prune under way finishes before the store closes.
    stop: async () => {
      deps.tasks.off('changed', onChanged);
      await chain;
    },
    settled: () => chain,
  };
}

async function pruneOne(deps: AfterCaptureDeps, task: TaskRecord): Promise<void> {
  try {
    if ((await deps.store.meta(task.image)).retention === null) return;
    const r = await deps.retention.prune(task.image);
    if (r.removed.length === 0) deps.logger.debug({ image: task.image, task: task.id }, 'retention after capture: nothing to remove');
  } catch (e) {
    // The capture succeeded; a failed prune only keeps versions longer. Say so where people look.
    const why = e instanceof Error ? e.message : String(e);
    deps.logger.error({ image: task.image, task: task.id, err: why }, 'retention after capture failed');
    await deps.events.record('warn', `image ${task.image}: retention after the capture failed (${why}); its versions are kept until the next capture or "netclone image prune ${task.image}"`, task.mac).catch(() => undefined);
  }
}
