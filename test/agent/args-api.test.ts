/**
 * The agent's command line and its HTTP client on their own: what it refuses before touching a disk,
 * and how a failed call reads (the server's own words, or what the network did and what to do).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs, DEFAULT_JOBS } from '../../src/agent/args.js';
import { AgentApi, ApiError, NetworkError } from '../../src/agent/api.js';

const base = ['--server', 'http://10.0.0.1:8080', '--token', 'abcdefghijklmnopqrstuvwxyz', '--disk', '/dev/sda', '--disk-name', 'sda'];

describe('agent command line', () => {
  it('reads the contract\'s options with their defaults', () => {
    expect(parseArgs(['capture', ...base])).toEqual({ mode: 'capture', server: 'http://10.0.0.1:8080', token: 'abcdefghijklmnopqrstuvwxyz', disk: '/dev/sda', diskName: 'sda', serial: undefined, size: undefined, sectorSize: 512, jobs: DEFAULT_JOBS, wholeDisk: false });
    expect(parseArgs(['capture', ...base, '--whole-disk'])).toMatchObject({ wholeDisk: true });
    expect(() => parseArgs(['capture', ...base, '--whole-disk', '--whole-disk'])).toThrow(/--whole-disk given twice/);
    expect(parseArgs(['deploy', ...base, '--serial', 'S 1', '--size', '1048576', '--sector-size', '4096', '--jobs', '8'])).toMatchObject({ mode: 'deploy', serial: 'S 1', size: 1048576, sectorSize: 4096, jobs: 8 });
  });

  it('refuses what it cannot use, naming the option', () => {
    expect(() => parseArgs([])).toThrow(/say capture or deploy/);
    expect(() => parseArgs(['backup', ...base])).toThrow(/unknown command "backup"/);
    expect(() => parseArgs(['capture', ...base.slice(2)])).toThrow(/--server is required/);
    expect(() => parseArgs(['capture', ...base, '--jobs', '0'])).toThrow(/--jobs 0 is out of range/);
    expect(() => parseArgs(['capture', ...base, '--size', '1e9'])).toThrow(/--size wants a whole number/);
    expect(() => parseArgs(['capture', ...base, '--verbose'])).toThrow(/unknown option "--verbose"/);
    expect(() => parseArgs(['capture', ...base, '--jobs'])).toThrow(/--jobs needs a value/);
    expect(() => parseArgs(['capture', ...base, '--disk', '/dev/sdb'])).toThrow(/--disk given twice/);
    expect(() => parseArgs(['capture', ...base.slice(0, 6), '--disk-name', 'sda/../x'])).toThrow(/is not a disk name/);
    expect(() => parseArgs(['capture', '--server', 'ftp://x', ...base.slice(2)])).toThrow(/--server wants http/);
  });
});

describe('agent HTTP client', () => {
  let server: Server;
  let url: string;
  let unavailable = 0;
  let startCalls = 0;
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/api/client/v1/chunks/commit') {
        res.writeHead(409, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: '2 listed chunks are missing', missing: ['a'.repeat(64), 'not-a-hash', 'b'.repeat(64)] }));
      } else if (req.url === '/api/client/v1/chunks/' + 'f'.repeat(64)) {
        unavailable++;
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'the server is shutting down' }));
      } else if (req.url === '/api/client/v1/start') {
        // A server preparing a fitted version answers 503 until it is ready.
        if (++startCalls < 3) {
          res.writeHead(503, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: 'preparing version 1 of win fitted to this disk' }));
        } else {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ transport: 'nbd', nbd: 'nbd://127.0.0.1:1/x' }));
        }
      } else if (req.url === '/api/client/v1/chunks/list') {
        res.writeHead(502, { 'content-type': 'text/html' });
        res.end('<h1>Bad gateway</h1>');
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ known: ['c'.repeat(64), 'd'.repeat(64)] }));
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('carries the server\'s error text and the missing hashes of a commit', async () => {
    const api = new AgentApi({ server: url, token: 't'.repeat(32) });
    const err = await api.commit(new Uint8Array(32)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(409);
    expect((err as ApiError).message).toBe('commit: the server answered 409: 2 listed chunks are missing');
    expect((err as ApiError).missing).toEqual(['a'.repeat(64), 'b'.repeat(64)]);
    await expect(api.list()).rejects.toThrow(/chunk list: the server answered 502: <h1>Bad gateway<\/h1>/);
  });

  it('repeats a repeatable call the server answers 503 (it is restarting), and says so when that does not end', async () => {
    const retries: string[] = [];
    const api = new AgentApi({ server: url, token: 't'.repeat(32), attempts: 3, backoffMs: 1, onRetry: (m) => retries.push(m) });
    unavailable = 0;
    await expect(api.getChunk('f'.repeat(64))).rejects.toThrow(/^download of chunk f{64}: the server answered 503: the server is shutting down$/);
    expect(unavailable).toBe(3);
    expect(retries).toHaveLength(2);
  });

  it('asks start again while the server answers 503 (preparing a version), telling each wait', async () => {
    const retries: string[] = [];
    const api = new AgentApi({ server: url, token: 't'.repeat(32), startPollMs: 1, onRetry: (m) => retries.push(m) });
    startCalls = 0;
    expect(await api.start({ name: 'sda', size: 1, logicalSectorSize: 512 })).toEqual({ transport: 'nbd', nbd: 'nbd://127.0.0.1:1/x' });
    expect(startCalls).toBe(3);
    expect(retries).toEqual(['start: preparing version 1 of win fitted to this disk; asking again in 0.001 s', 'start: preparing version 1 of win fitted to this disk; asking again in 0.001 s']);
  });

  it('keeps of a known answer only hashes it asked about', async () => {
    const api = new AgentApi({ server: url, token: 't'.repeat(32) });
    expect(await api.known(['c'.repeat(64), 'e'.repeat(64)])).toEqual(new Set(['c'.repeat(64)]));
  });

  it('repeats a repeatable call while the server is unreachable, then says what happened and what to do', async () => {
    // A port nothing listens on (fetch refuses low ports like 1 outright, without trying).
    const gone = createServer();
    await new Promise<void>((resolve) => gone.listen(0, '127.0.0.1', resolve));
    const port = (gone.address() as AddressInfo).port;
    await new Promise<void>((resolve) => gone.close(() => resolve()));
    const retries: string[] = [];
    const api = new AgentApi({ server: `http://127.0.0.1:${port}`, token: 't'.repeat(32), attempts: 3, backoffMs: 1, onRetry: (m) => retries.push(m) });
    const err = await api.getChunk('a'.repeat(64)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetworkError);
    expect((err as Error).message).toMatch(/^download of chunk a{64}: could not reach the server at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED.*\) after 3 attempts; check the network cable and that netclone serve is running, then retry the task$/);
    expect(retries).toHaveLength(2);
    // start is not repeated: the server acts on it once.
    retries.length = 0;
    await expect(api.start({ name: 'sda', size: 1, logicalSectorSize: 512 })).rejects.toThrow(/^start: could not reach the server .*ECONNREFUSED[^)]*\);/);
    expect(retries).toHaveLength(0);
  });
});
