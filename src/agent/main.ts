/**
 * The imaging agent's command line (issue 11): `agent capture|deploy --server … --token … --disk …`.
 * On success one JSON line on stdout and exit 0; on failure the reason as the last line of stderr and
 * exit 1. It never posts the task's result: the thin client does, from this outcome.
 */
import { parseArgs, USAGE, UsageError } from './args.js';
import { runAgent } from './run.js';

async function main(): Promise<number> {
  try {
    const args = parseArgs(process.argv.slice(2));
    const result = await runAgent(args, { warn: (m) => process.stderr.write(`agent: ${m}\n`) });
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) process.stderr.write(`${USAGE}\n`);
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`agent: ${message.replace(/\n(?=.)/g, '\nagent: ')}\n`);
    return 1;
  }
}

process.exitCode = await main();
