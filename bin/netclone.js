#!/usr/bin/env node
// Entry point: runs the compiled CLI (npm run build). Kept as plain JS so the bin works without a TypeScript loader.
import { run } from '../dist/cli/main.js';

await run(process.argv.slice(2));
