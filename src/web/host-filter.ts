/**
 * The hosts list's search and filters, read from the query string so a filtered list is a link:
 * it works without JavaScript, survives a reload and can be bookmarked or exported as CSV.
 */
import type { HostRecord } from '../domain/database.js';
import type { HostState } from '../domain/commands.js';

export const HOST_STATES: readonly HostState[] = ['idle', 'task pending', 'imaging', 'failed'];

export interface HostFilter {
  /** Free text: a part of the name, MAC (any separators), IP, vendor, model, serial or group. */
  readonly q: string;
  /** Exact model label as the list shows it ("Dell Inc. OptiPlex 7010"); '' for any. */
  readonly model: string;
  /** Exact group name; '' for any. */
  readonly group: string;
  readonly state: HostState | '';
}

export const NO_FILTER: HostFilter = { q: '', model: '', group: '', state: '' };

function text(v: unknown): string {
  return typeof v === 'string' ? v.trim().slice(0, 100) : '';
}

/** Unknown or malformed values mean "any": a stale bookmark shows more hosts, never an error page. */
export function parseHostFilter(query: unknown): HostFilter {
  const q = (query ?? {}) as Record<string, unknown>;
  const state = text(q.state);
  return {
    q: text(q.q),
    model: text(q.model),
    group: text(q.group),
    state: (HOST_STATES as readonly string[]).includes(state) ? (state as HostState) : '',
  };
}

/** The filter as a query string ('' when none is set), for links, polling and exports. */
export function hostFilterQuery(f: HostFilter): string {
  const p = new URLSearchParams();
  for (const key of ['q', 'model', 'group', 'state'] as const) if (f[key]) p.set(key, f[key]);
  const s = p.toString();
  return s ? `?${s}` : '';
}

export function isFiltered(f: HostFilter): boolean {
  return hostFilterQuery(f) !== '';
}

export function modelLabel(h: HostRecord): string {
  return h.hardware ? `${h.hardware.dmi.vendor} ${h.hardware.dmi.model}`.trim() : '';
}

/** The host's group (null: in no group). */
export function groupOf(h: HostRecord): string | null {
  return h.group ? h.group : null;
}

const hex = (s: string): string => s.toLowerCase().replace(/[^0-9a-f]/g, '');

function matchesText(h: HostRecord, needle: string): boolean {
  const n = needle.toLowerCase();
  const fields = [h.name, h.mac, h.ip ?? '', modelLabel(h), h.hardware?.dmi.serial ?? '', groupOf(h) ?? ''];
  if (fields.some((f) => f.toLowerCase().includes(n))) return true;
  // "5254000a" or "52-54-00-0a" finds 52:54:00:0a:…; only when the needle is all hex digits and separators.
  const bare = hex(needle);
  return bare.length >= 2 && /^[0-9a-f:.\- ]+$/i.test(needle) && hex(h.mac).includes(bare);
}

export function filterHosts(hosts: readonly HostRecord[], states: ReadonlyMap<string, HostState>, f: HostFilter): HostRecord[] {
  return hosts.filter((h) =>
    (f.q === '' || matchesText(h, f.q))
    && (f.model === '' || modelLabel(h) === f.model)
    // Groups compare without regard to case, as the commands do ("lab 2" is "Lab 2").
    && (f.group === '' || groupOf(h)?.toLowerCase() === f.group.toLowerCase())
    && (f.state === '' || (states.get(h.mac) ?? 'idle') === f.state));
}

/** The values the filter's drop-downs offer: what the hosts have, sorted. */
export function filterChoices(hosts: readonly HostRecord[]): { models: string[]; groups: string[] } {
  const models = new Set<string>();
  const groups = new Set<string>();
  for (const h of hosts) {
    const m = modelLabel(h);
    if (m) models.add(m);
    const g = groupOf(h);
    if (g) groups.add(g);
  }
  const sort = (s: Set<string>): string[] => [...s].sort((a, b) => a.localeCompare(b));
  return { models: sort(models), groups: sort(groups) };
}
