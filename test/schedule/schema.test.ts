import { describe, expect, it } from 'vitest';
import { migrate, SCHEMA_VERSION } from '../../src/domain/database.js';

describe('database schema 2 (schedules)', () => {
  it('a version 1 file gains empty schedules and runs; its hosts keep no group', () => {
    const host = { mac: '52:54:00:00:00:01', name: 'pc' };
    const data = migrate({ schemaVersion: 1, hosts: [host], tasks: [], events: [], users: [], apiTokens: [], settings: {} });
    expect(SCHEMA_VERSION).toBe(2);
    expect(data.schemaVersion).toBe(2);
    expect(data.schedules).toEqual([]);
    expect(data.scheduleRuns).toEqual([]);
    expect(data.hosts[0]).toEqual(host);
  });

  it('a file whose schedules are not a list is refused as damaged', () => {
    expect(() => migrate({ schemaVersion: 2, hosts: [], tasks: [], events: [], users: [], apiTokens: [], schedules: {}, scheduleRuns: [] })).toThrow(/"schedules" is not a list/);
  });
});
