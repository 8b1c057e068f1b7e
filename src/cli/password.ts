/** Read a new password twice: from the terminal without echo, or two lines of standard input. */
import { createInterface } from 'node:readline';
import { UsageError } from './args.js';

async function readLines(count: number): Promise<string[]> {
  const rl = createInterface({ input: process.stdin, terminal: false });
  const lines: string[] = [];
  for await (const line of rl) {
    lines.push(line);
    if (lines.length === count) break;
  }
  rl.close();
  return lines;
}

async function askHidden(prompt: string): Promise<string> {
  process.stderr.write(prompt);
  const stdin = process.stdin;
  stdin.setRawMode(true);
  stdin.resume();
  stdin.setEncoding('utf8');
  return new Promise((resolve, reject) => {
    let value = '';
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') {
          stdin.setRawMode(false);
          stdin.pause();
          stdin.off('data', onData);
          process.stderr.write('\n');
          resolve(value);
          return;
        }
        if (ch === '\u0003') {
          stdin.setRawMode(false);
          reject(new UsageError('cancelled'));
          return;
        }
        if (ch === '\u007f') value = value.slice(0, -1);
        else value += ch;
      }
    };
    stdin.on('data', onData);
  });
}

export async function readPasswordTwice(): Promise<string> {
  let first: string;
  let second: string;
  if (process.stdin.isTTY) {
    first = await askHidden('New admin password: ');
    second = await askHidden('Again: ');
  } else {
    [first = '', second = ''] = await readLines(2);
  }
  if (first !== second) throw new UsageError('the two passwords differ; nothing changed');
  if (first.length < 8) throw new UsageError('the password must have at least 8 characters');
  return first;
}
