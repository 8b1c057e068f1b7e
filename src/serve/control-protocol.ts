/**
 * The control socket protocol between the CLI and a running server: HTTP over a unix
 * socket inside the data directory (mode 0600, so only the owner of the appliance's
 * files may act through it).
 *
 *   POST /op              body {"op": name, "args": {...}}          → NDJSON lines
 *   POST /import?name=&size=&source=   body: raw disk bytes          → NDJSON lines
 *   GET  /export?name=                 → raw disk bytes, header x-netclone-size
 *
 * NDJSON lines: {"progress":{"done":N,"total":N}} … then {"result":…} or {"error":{"message","status"}}.
 */
import path from 'node:path';

export function controlSocketPath(dataDir: string): string {
  return path.join(dataDir, 'state', 'control.sock');
}

export interface ProgressUpdate {
  readonly done: number;
  readonly total: number;
  readonly label?: string;
}

export type ControlLine =
  | { readonly progress: ProgressUpdate }
  | { readonly result: unknown }
  | { readonly error: { readonly message: string; readonly status: number } };

export class ControlError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = 'ControlError';
  }
}
