/** The CLI side of the control socket: talk to a running server when there is one. */
import http from 'node:http';
import type { Readable } from 'node:stream';
import { ControlError, type ControlLine, type ProgressUpdate } from '../serve/control-protocol.js';

export class ControlClient {
  constructor(readonly socketPath: string) {}

  /** True when a server answers on the socket (a stale socket file from a killed server does not). */
  async reachable(): Promise<boolean> {
    return new Promise((resolve) => {
      const req = http.request({ socketPath: this.socketPath, path: '/ping', method: 'GET', timeout: 2000 }, (res) => {
        res.resume();
        resolve(true);
      });
      req.on('error', () => resolve(false));
      req.on('timeout', () => {
        req.destroy();
        resolve(false);
      });
      req.end();
    });
  }

  private ndjson(path: string, body: Readable | string, onProgress: (p: ProgressUpdate) => void): Promise<unknown> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (err: Error): void => {
        if (settled) return;
        settled = true;
        reject(err);
      };
      const req = http.request({ socketPath: this.socketPath, path, method: 'POST' }, (res) => {
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (text: string) => {
          buf += text;
          let nl: number;
          while (!settled && (nl = buf.indexOf('\n')) >= 0) {
            const text = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            let line: ControlLine;
            try {
              line = JSON.parse(text) as ControlLine;
            } catch {
              fail(new Error(`the server sent a line that is not JSON on the control socket (${text.slice(0, 80)}); is another program listening on ${this.socketPath}?`));
              res.destroy();
              return;
            }
            if ('progress' in line) onProgress(line.progress);
            else if ('result' in line) {
              settled = true;
              resolve(line.result);
            } else fail(new ControlError(line.error.status, line.error.message));
          }
        });
        // 'close' also comes when the server dies mid-answer, where 'end' never does.
        res.on('close', () => fail(new Error('the server closed the control connection without an answer (did it stop or crash?); see its log')));
        res.on('error', () => undefined); // 'close' follows and reports it
      });
      req.on('error', (err) => fail(new Error(`control socket ${this.socketPath}: ${err.message}`)));
      if (typeof body === 'string') req.end(body);
      else {
        // pipe() does not pass the input's errors on: without this a read error would crash the CLI.
        body.once('error', (err: Error) => {
          fail(new Error(`reading the input failed: ${err.message}; nothing was imported`));
          req.destroy();
        });
        body.pipe(req);
      }
    });
  }

  op(op: string, args: Record<string, unknown>, onProgress: (p: ProgressUpdate) => void): Promise<unknown> {
    return this.ndjson('/op', JSON.stringify({ op, args }), onProgress);
  }

  import(name: string, size: number | null, source: string, input: Readable, onProgress: (p: ProgressUpdate) => void): Promise<unknown> {
    const q = new URLSearchParams({ name, source });
    if (size !== null) q.set('size', String(size));
    return this.ndjson(`/import?${q}`, input, onProgress);
  }

  export(name: string): Promise<{ size: number; body: http.IncomingMessage }> {
    return new Promise((resolve, reject) => {
      const req = http.request({ socketPath: this.socketPath, path: `/export?${new URLSearchParams({ name })}`, method: 'GET' }, (res) => {
        if (res.statusCode !== 200) {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (t: string) => (text += t));
          res.on('end', () => reject(new ControlError(res.statusCode ?? 500, text || 'export failed')));
          return;
        }
        resolve({ size: Number(res.headers['x-netclone-size']), body: res });
      });
      req.on('error', reject);
      req.end();
    });
  }
}
