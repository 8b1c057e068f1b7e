/**
 * A promise whose failure nobody handles ends the server (Node's default) or, with the serve
 * safety net, leaves an operation half done. Every promise in src/ is awaited or handled with
 * .catch / a rejection handler; the few fire-and-forget ones (`void p`) are listed below, each
 * with the reason it cannot reject. A new `void` on a promise that can fail (the kind that let
 * a full disk kill the server: `void this.db.write()`) fails this test until it is handled or
 * reviewed and listed.
 */
import { describe, expect, it } from 'vitest';
import { ESLint } from 'eslint';
import tseslint from 'typescript-eslint';
import { readFileSync } from 'node:fs';
import path from 'node:path';

/** Reviewed fire-and-forget promises: "file: source line" → why it never rejects. */
const REVIEWED = new Map<string, string>([
  ['src/imaging/upload-journal.ts: if (!this.writing) void this.flush();', 'flush catches each append failure and hands it to the waiting callers; it cannot reject'],
  ['src/transport/grants.ts: this.sweeper = setInterval(() => void this.sweep(), 10_000);', 'sweep only calls revoke(), which catches close failures'],
  ["src/transport/grants.ts: if (grant.opened.finished() && grant.connections === 0) void this.revoke(name, 'finished');", 'revoke() catches close failures'],
  ['src/serve/runtime.ts: if (events) void events.record(\'error\', message);', 'EventLog.record never rejects'],
  ["src/serve/runtime.ts: onCommitted: (v) => void core.events.record('info', `image ${req.image} version ${v.version} committed from an nbd:// URL: ${meter.describe()}`),", 'EventLog.record never rejects'],
  [
    "src/serve/runtime.ts: onFailed: (reason) => void core.events.record('warn', `capture of ${req.image} through an nbd:// URL failed: ${reason}${diskFullAdvice(reason, config.imagesDir)}`),",
    'EventLog.record never rejects',
  ],
  ['src/domain/tasks.ts: this.watchdog = setInterval(() => void this.checkLiveness(), this.livenessCheckMs);', 'checkLiveness catches the failure of each fail() it makes'],
  ["src/web/app.ts: void ctx.events.record(state.state === 'ok' ? 'info' : 'error', `verify of image ${name}: ${state.message}`);", 'EventLog.record never rejects'],
  ['src/web/verify-tracker.ts: void promise.then((done) => {', 'promise has both handlers, so it never rejects; the callback only updates maps and calls onDone (which records an event)'],
  ['src/imaging/chunk-upload.ts: void done.then(() => this.inflight.delete(done));', 'done has both handlers, so it never rejects; the callback only deletes from a set'],
  ['src/imaging/capture.ts: void tail.then(() => {', 'tail has both handlers, so it never rejects'],
  ['src/imaging/capture.ts: void pr.finally(() => this.releasing.delete(pr));', 'pr ends in .catch'],
  ['src/imaging/capture.ts: void pr.finally(() => {', 'pr ends in .catch'],
  ['src/pxe/dhcp/server.ts: void p.finally(() => this.inflight.delete(p));', 'receive() catches every error of one packet'],
  ['src/domain/alerts.ts: this.timer = setInterval(() => void this.tick(), every);', 'tick() ends its work in .catch (logged); it never rejects'],
  ['src/domain/scheduler.ts: if (schedule.wake) void this.wake(run.mac, host?.ip ?? null, task);', 'wake() catches every failure and records it as an event (EventLog.record never rejects)'],
]);

describe('promises in src/', () => {
  it('every promise is awaited or handled; every fire-and-forget one is reviewed', async () => {
    const root = path.resolve('.');
    const eslint = new ESLint({
      cwd: root,
      overrideConfigFile: true,
      overrideConfig: [
        {
          files: ['src/**/*.ts'],
          languageOptions: { parser: tseslint.parser, parserOptions: { project: './tsconfig.json', tsconfigRootDir: root } },
          plugins: { '@typescript-eslint': tseslint.plugin },
          rules: {
            '@typescript-eslint/no-floating-promises': ['error', { ignoreVoid: false }],
            '@typescript-eslint/no-misused-promises': 'error',
          },
        },
      ],
    });
    const results = await eslint.lintFiles(['src/**/*.ts']);
    expect(results.length).toBeGreaterThan(50);
    const found: string[] = [];
    for (const r of results) {
      const lines = readFileSync(r.filePath, 'utf8').split('\n');
      for (const m of r.messages) found.push(`${path.relative(root, r.filePath)}: ${(lines[m.line - 1] ?? '').trim()}`);
    }
    const unreviewed = found.filter((f) => !REVIEWED.has(f));
    expect(unreviewed, 'promises nobody handles: await them, add .catch, or review and list them here').toEqual([]);
  });
});
