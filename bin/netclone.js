#!/usr/bin/env -S node --single-threaded-gc
// Entry point: runs the compiled CLI (npm run build). Kept as plain JS so the bin works without a TypeScript loader.
// The shebang's node flags are src/serve/node-flags.ts's (see there why).
import { run } from '../dist/cli/main.js';

await run(process.argv.slice(2));
