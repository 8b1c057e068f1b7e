/** Plain-text output of the retention commands (issue 13); --json prints the same results as JSON. */
import type { PruneResult } from '../domain/retention.js';
import { describePolicy, type RetentionPolicy } from '../imaging/retention.js';
import { formatBytes } from './progress.js';

const SOURCE_TEXT: Readonly<Record<PruneResult['policySource'], string>> = {
  given: 'the keep flags given',
  stored: "the image's stored policy",
  'keep-versions': 'keep-versions from the configuration (the image has no policy)',
};

/** What a prune kept and why, what went (or would go), and what gc freed. */
export function renderPrune(r: PruneResult): string {
  const lines = [`image ${r.image}: ${describePolicy(r.policy)} (${SOURCE_TEXT[r.policySource]})${r.dryRun ? ', dry run: nothing removed' : ''}`];
  for (const d of r.decisions) {
    const what = d.keep ? 'keep  ' : r.dryRun ? 'would remove' : r.removed.includes(d.version) ? 'removed' : 'kept  ';
    lines.push(`  v${String(d.version).padEnd(4)} ${d.created}  ${what.padEnd(12)} ${d.reasons.map((x) => x.text).join(', ')}`.trimEnd());
  }
  const going = r.decisions.filter((d) => !d.keep).length;
  if (r.dryRun) lines.push(going === 0 ? 'nothing would be removed' : `${going} version${going === 1 ? '' : 's'} would be removed; run without --dry-run to remove them`);
  else if (r.removed.length === 0) lines.push('nothing removed');
  else lines.push(`removed ${r.removed.length} version${r.removed.length === 1 ? '' : 's'}; gc freed ${formatBytes(r.gc?.freedBytes ?? 0)}`);
  if (r.spared.length > 0) lines.push(`kept after all (a task took them or they were protected meanwhile): ${r.spared.map((v) => `v${v}`).join(', ')}`);
  return `${lines.join('\n')}\n`;
}

export function renderRetention(r: { image: string; retention: RetentionPolicy | null }): string {
  return r.retention
    ? `image ${r.image}: retention ${describePolicy(r.retention)}; applied after each capture and by "netclone image prune ${r.image}"\n`
    : `image ${r.image}: no retention policy; keep-versions from the configuration applies at each capture\n`;
}
