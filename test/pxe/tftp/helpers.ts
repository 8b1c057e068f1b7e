/**
 * Test-side TFTP client with fault injection (dropped / duplicated ACKs) and small process helpers.
 * Deliberately independent of the server's transfer logic; it shares only the codec.
 */
import dgram, { type Socket } from 'node:dgram';
import { decodePacket, encodeAck, encodeError, encodeRequest, type TftpOptions } from '../../../src/pxe/tftp/codec.js';

import { prng } from '../../lib/prng.js';
import { run as runProgram, type RunOptions, type RunResult } from '../../lib/run.js';

export { prng };

export interface FetchOptions {
  readonly port: number;
  readonly file: string;
  readonly mode?: string;
  readonly options?: Record<string, string>;
  /** Probability an ACK (other than the final one) is silently not sent. */
  readonly dropAck?: number;
  /** Probability an ACK is sent twice. */
  readonly dupAck?: number;
  readonly seed?: number;
  /** Client re-sends its last ACK after this much silence. */
  readonly timeoutMs?: number;
  /** Give up after this much total silence. */
  readonly giveUpMs?: number;
  /** Send ERROR 8 right after the OACK instead of ACK 0 (edk2 tsize probe). */
  readonly abortAfterOack?: boolean;
  /** Use this (already bound) socket instead of a fresh one. */
  readonly socket?: Socket;
  /** Called with the server's transfer port on the first reply. */
  readonly onTid?: (port: number) => void;
}

export interface FetchResult {
  readonly data: Buffer;
  readonly oack?: TftpOptions;
  readonly error?: { code: number; message: string };
  /** DATA packets received, duplicates included. */
  readonly dataPackets: number;
  /** Distinct blocks the file needed. */
  readonly blocks: number;
  readonly serverPort: number;
  readonly clientPort: number;
}

export async function fetchFile(o: FetchOptions): Promise<FetchResult> {
  const sock = o.socket ?? (await bindSocket());
  const rand = prng(o.seed ?? 1);
  const opts: TftpOptions = new Map(Object.entries(o.options ?? {}));
  let blksize = 512;
  let windowsize = 1;
  let serverPort = 0;
  let lastBlock = 0; // absolute, last block received in order
  let inWindow = 0;
  let dataPackets = 0;
  let oack: TftpOptions | undefined;
  const chunks: Buffer[] = [];
  let lastAck: Buffer = encodeRequest('RRQ', o.file, o.mode ?? 'octet', opts);
  let lastAckTo = o.port;
  let silentSince = Date.now();

  return await new Promise<FetchResult>((resolve, reject) => {
    const clientPort = sock.address().port;
    const done = (r: Omit<FetchResult, 'dataPackets' | 'blocks' | 'serverPort' | 'clientPort'>): void => {
      clearInterval(timer);
      sock.removeAllListeners('message');
      // Close only after the last ACK / ERROR has actually left; closing at once would drop it.
      if (!o.socket) setTimeout(() => sock.close(), 50);
      resolve({ ...r, dataPackets, blocks: lastBlock, serverPort, clientPort });
    };
    const send = (pkt: Buffer, final = false): void => {
      lastAck = pkt;
      lastAckTo = serverPort;
      if (!final && rand() < (o.dropAck ?? 0)) return;
      sock.send(pkt, serverPort, '127.0.0.1');
      if (rand() < (o.dupAck ?? 0)) sock.send(pkt, serverPort, '127.0.0.1');
    };
    const timer = setInterval(() => {
      const silent = Date.now() - silentSince;
      if (silent > (o.giveUpMs ?? 10_000)) {
        clearInterval(timer);
        if (!o.socket) sock.close();
        reject(new Error(`test client: no answer for ${silent} ms (got ${lastBlock} blocks, ${dataPackets} DATA packets)`));
      } else if (silent > (o.timeoutMs ?? 500)) {
        sock.send(lastAck, lastAckTo, '127.0.0.1');
        silentSince = Date.now() - (o.timeoutMs ?? 500) / 2;
      }
    }, 20);
    sock.on('message', (msg, rinfo) => {
      if (serverPort === 0) {
        serverPort = rinfo.port;
        o.onTid?.(serverPort);
      }
      if (rinfo.port !== serverPort) return;
      silentSince = Date.now();
      const pkt = decodePacket(msg);
      if (pkt.op === 'ERROR') return done({ data: Buffer.concat(chunks), error: { code: pkt.code, message: pkt.message }, oack });
      if (pkt.op === 'OACK') {
        oack = pkt.options;
        if (o.abortAfterOack) {
          sock.send(encodeError(8, 'tsize probe done'), serverPort, '127.0.0.1');
          return done({ data: Buffer.alloc(0), oack });
        }
        blksize = Number(pkt.options.get('blksize') ?? 512);
        windowsize = Number(pkt.options.get('windowsize') ?? 1);
        send(encodeAck(0));
        return;
      }
      if (pkt.op !== 'DATA') return;
      dataPackets++;
      if (pkt.block === ((lastBlock + 1) & 0xffff)) {
        lastBlock++;
        inWindow++;
        chunks.push(Buffer.from(pkt.data));
        const last = pkt.data.length < blksize;
        if (last) {
          send(encodeAck(pkt.block), true);
          return done({ data: Buffer.concat(chunks), oack });
        }
        if (inWindow >= windowsize) {
          inWindow = 0;
          send(encodeAck(pkt.block));
        }
      } else {
        // Duplicate or out of order: re-acknowledge what we have, as real clients do.
        inWindow = 0;
        send(encodeAck(lastBlock & 0xffff));
      }
    });
    sock.send(lastAck, o.port, '127.0.0.1');
  });
}

export async function bindSocket(): Promise<Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return s;
}

/** Sends one datagram and waits for one reply (or undefined after `ms`). */
export async function exchange(pkt: Buffer, port: number, ms = 2000): Promise<{ msg: Buffer; port: number } | undefined> {
  const s = await bindSocket();
  try {
    return await new Promise((resolve) => {
      const t = setTimeout(() => resolve(undefined), ms);
      s.once('message', (msg, rinfo) => {
        clearTimeout(t);
        resolve({ msg, port: rinfo.port });
      });
      s.send(pkt, port, '127.0.0.1');
    });
  } finally {
    s.close();
  }
}

export type { RunResult };

/** Runs a real program with a hard deadline (60 s unless given); the child is killed by PID if it overruns. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return runProgram(cmd, args, { timeoutMs: 60_000, ...opts });
}
