/**
 * What the thin client does around a transfer, for benches: fetch the boot script (its token is bound
 * to the address that fetched it), start an NBD task, post the result. From the bench process on
 * loopback, or with curl inside the client's network namespace.
 */
import { run } from '../../test/lib/run.js';

export interface ClientSide {
  /** The address the server sees the client at. */
  readonly ip: string;
  /** Prefix that runs a command on the client side (`ip netns exec NS`), or nothing. */
  readonly prefix: readonly string[];
}

export const LOOPBACK_CLIENT: ClientSide = { ip: '127.0.0.1', prefix: [] };

interface HttpAnswer {
  readonly status: number;
  readonly text: string;
}

async function request(side: ClientSide, method: 'GET' | 'POST', url: string, token?: string, json?: unknown): Promise<HttpAnswer> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (json !== undefined) headers['content-type'] = 'application/json';
  if (side.prefix.length === 0) {
    const res = await fetch(url, { method, headers, body: json === undefined ? undefined : JSON.stringify(json) });
    return { status: res.status, text: await res.text() };
  }
  const args = ['-sS', '-X', method, '-w', '\n%{http_code}', ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), ...(json === undefined ? [] : ['--data-binary', '@-']), url];
  const [cmd, ...rest] = [...side.prefix, 'curl', ...args];
  const r = await run(cmd, rest, json === undefined ? {} : { input: JSON.stringify(json) });
  if (r.code !== 0) throw new Error(`curl ${method} ${url} failed (exit ${r.code}): ${r.stderr.trim()}`);
  const cut = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(cut + 1)), text: r.stdout.slice(0, cut) };
}

/** The task token from the PC's boot script. */
export async function bootToken(side: ClientSide, base: string, mac: string): Promise<string> {
  const a = await request(side, 'GET', `${base}/boot/ipxe?mac=${mac}&platform=efi&arch=x86_64&chip=undionly`);
  const m = /netclone\.token=([A-Za-z0-9_-]+)/.exec(a.text);
  if (!m) throw new Error(`no token in the boot script for ${mac} (HTTP ${a.status}):\n${a.text}`);
  return m[1];
}

/** POST start for an NBD task: the nbd:// URL of its export. */
export async function startNbd(side: ClientSide, base: string, token: string, size: number): Promise<string> {
  const a = await request(side, 'POST', `${base}/api/client/v1/start`, token, { disk: { name: 'sda', size, logicalSectorSize: 512, serial: 'BENCH' } });
  const body = JSON.parse(a.text) as { transport?: string; nbd?: string; error?: string };
  if (a.status !== 200 || !body.nbd) throw new Error(`start answered ${a.status}: ${body.error ?? a.text}`);
  return body.nbd;
}

/** POST result as the thin client does after a successful transfer; returns the task's state. */
export async function postResult(side: ClientSide, base: string, token: string, digest: string | null): Promise<{ state: string; reason: string | null }> {
  const a = await request(side, 'POST', `${base}/api/client/v1/result`, token, { ok: true, digest });
  if (a.status !== 200) throw new Error(`result answered ${a.status}: ${a.text}`);
  return JSON.parse(a.text) as { state: string; reason: string | null };
}
