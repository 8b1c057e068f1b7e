/** A progress bar for long CLI operations, drawn only on a terminal (scripts get clean output). */
import type { ProgressUpdate } from '../serve/control-protocol.js';

function human(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatBytes(bytes: number): string {
  return human(bytes);
}

export class ProgressBar {
  private readonly started = Date.now();
  private lastDraw = 0;
  private readonly enabled: boolean;

  constructor(private readonly label: string, private readonly stream: NodeJS.WriteStream = process.stderr) {
    this.enabled = Boolean(stream.isTTY);
  }

  update(p: ProgressUpdate): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.lastDraw < 100 && p.done < p.total) return;
    this.lastDraw = now;
    const frac = p.total > 0 ? Math.min(1, p.done / p.total) : 0;
    const width = 30;
    const filled = Math.round(frac * width);
    const secs = (now - this.started) / 1000;
    const rate = secs > 0 ? p.done / secs : 0;
    const line = `${p.label ?? this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(frac * 100).toFixed(1)}% ${human(p.done)}/${human(p.total)} ${human(rate)}/s`;
    this.stream.write(`\r${line.padEnd(100)}`);
  }

  done(): void {
    if (this.enabled) this.stream.write('\n');
  }
}
