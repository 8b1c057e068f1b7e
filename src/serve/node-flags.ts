/**
 * Node/V8 flags the server runs with. They must be on node's command line (V8 aborts when its GC
 * flags change at run time), so they are spelled out in three places that cannot import this file:
 * the shebang of bin/netclone.js, `npm start` in package.json and ExecStart in
 * systemd/netclone.service. test/domain/node-flags.test.ts keeps them in step; bench/ starts its
 * server processes with these flags so it measures what ships.
 *
 * --single-threaded-gc: the codec workers keep both cores of a small appliance busy during a capture
 * or deploy, and V8's parallel and concurrent GC helper threads then only compete with them.
 * The heap is small (tens of MB: bulk data lives in buffers), so pauses stay short.
 * Measured (bench/nbd.ts, BENCHMARKS.md): deploy +7-10 % MB/s at 15 % less server CPU, re-capture +15-30 %.
 */
export const SERVER_NODE_FLAGS: readonly string[] = ['--single-threaded-gc'];
