/**
 * Option haggling of the fixed newstyle handshake, as a synchronous state machine: the
 * connection hands it one option at a time and writes the replies it returns. Keeping it free of
 * sockets lets tests drive every option directly.
 *
 * Policy choices (documented for admins and clients):
 * - NBD_OPT_LIST answers NBD_REP_ERR_POLICY: export names carry secret tokens and are never listed.
 * - NBD_OPT_STARTTLS answers NBD_REP_ERR_POLICY: the appliance serves a trusted imaging LAN without TLS.
 * - A name the resolver refuses gets NBD_REP_ERR_UNKNOWN or NBD_REP_ERR_POLICY (as the resolver
 *   decides) with a message, and a log line; NBD_OPT_EXPORT_NAME cannot carry errors, so the
 *   connection is closed instead.
 */
import type { Logger } from '../lib/log.js';
import { ExportError, type NbdExport, type ExportResolver, type PeerInfo } from './export.js';
import {
  INFO,
  OPT,
  REP,
  TFLAG,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeOptionError,
  encodeOptionReply,
  encodeRepMetaContext,
  parseExportNameOption,
  parseGoOption,
  parseMetaContextOption,
} from './protocol.js';

export const ALLOCATION_CONTEXT = 'base:allocation';
/** Context ids are opaque to clients; one fixed id is enough for the one context we offer. */
export const ALLOCATION_CONTEXT_ID = 1;
/** Largest option payload we accept; GO with a 4096-byte name plus info requests fits easily. */
export const MAX_OPTION_LENGTH = 64 * 1024;
export const MAX_META_QUERIES = 128;
/** Upper bound on the payload of one request, whatever an export advertises: bounds per-request memory. */
export const MAX_PAYLOAD_CAP = 32 * 1024 * 1024;

export interface EffectiveBlockSizes {
  readonly minimum: number;
  readonly preferred: number;
  readonly maximum: number;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** Block sizes the server advertises and enforces; out-of-spec export values fall back to safe ones. */
export function effectiveBlockSizes(exp: NbdExport): EffectiveBlockSizes {
  const b = exp.blockSizes;
  const minimum = isPowerOfTwo(b.minimum) && b.minimum <= 65536 ? b.minimum : 1;
  let preferred = isPowerOfTwo(b.preferred) ? b.preferred : 4096;
  preferred = Math.max(preferred, minimum, 512);
  let maximum = Number.isInteger(b.maximum) && b.maximum > 0 ? Math.min(b.maximum, MAX_PAYLOAD_CAP) : MAX_PAYLOAD_CAP;
  maximum = Math.max(maximum, preferred);
  return { minimum, preferred, maximum: Math.min(maximum, MAX_PAYLOAD_CAP) };
}

export function transmissionFlags(exp: NbdExport, structured: boolean): number {
  const c = exp.capabilities;
  let f = TFLAG.HAS_FLAGS | TFLAG.SEND_FLUSH;
  if (c.readOnly) {
    f |= TFLAG.READ_ONLY;
  } else {
    f |= TFLAG.SEND_FUA;
    if (c.trim) f |= TFLAG.SEND_TRIM;
    if (c.writeZeroes) {
      f |= TFLAG.SEND_WRITE_ZEROES;
      if (c.fastZero) f |= TFLAG.SEND_FAST_ZERO;
    }
  }
  if (structured) f |= TFLAG.SEND_DF;
  if (c.multiConn) f |= TFLAG.CAN_MULTI_CONN;
  if (c.cache) f |= TFLAG.SEND_CACHE;
  return f;
}

/** What the connection needs to enter the transmission phase. */
export interface Negotiated {
  readonly name: string;
  readonly export: NbdExport;
  readonly structured: boolean;
  readonly allocationContextId: number | undefined;
  readonly flags: number;
  readonly blockSizes: EffectiveBlockSizes;
}

export type OptionOutcome =
  | { readonly kind: 'continue'; readonly replies: Buffer[] }
  | { readonly kind: 'transmission'; readonly replies: Buffer[]; readonly negotiated: Negotiated }
  | { readonly kind: 'close'; readonly replies: Buffer[]; readonly reason: string };

export interface HandshakeOptions {
  readonly resolver: ExportResolver;
  readonly peer: PeerInfo;
  readonly logger: Logger;
  readonly noZeroes: boolean;
  readonly isShuttingDown: () => boolean;
  /** Asked before an export is attached; a string refuses the client (the server's connection limit). */
  readonly admit?: () => string | undefined;
}

export function optionName(option: number): string {
  for (const [k, v] of Object.entries(OPT)) if (v === option) return `NBD_OPT_${k}`;
  return `option ${option}`;
}

export class Handshake {
  private structured = false;
  private meta: { name: string; selected: boolean } | undefined;

  constructor(private readonly o: HandshakeOptions) {}

  handleOption(option: number, data: Buffer): OptionOutcome {
    if (this.o.isShuttingDown() && option !== OPT.ABORT) {
      const r = [encodeOptionError(option, REP.ERR_SHUTDOWN, 'server is shutting down; try again later')];
      if (option === OPT.EXPORT_NAME) return { kind: 'close', replies: [], reason: 'server shutting down' };
      return { kind: 'continue', replies: r };
    }
    switch (option) {
      case OPT.EXPORT_NAME:
        return this.exportName(data);
      case OPT.ABORT:
        return { kind: 'close', replies: [encodeOptionReply(option, REP.ACK)], reason: 'client sent NBD_OPT_ABORT' };
      case OPT.LIST:
        if (data.length !== 0) return this.error(option, REP.ERR_INVALID, 'NBD_OPT_LIST takes no data');
        return this.error(option, REP.ERR_POLICY, 'export listing is disabled: export names are secret; take the nbd:// URL from the netclone task');
      case OPT.STARTTLS:
        return this.error(option, REP.ERR_POLICY, 'TLS is not offered by this server');
      case OPT.STRUCTURED_REPLY:
        if (data.length !== 0) return this.error(option, REP.ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
        this.structured = true;
        return { kind: 'continue', replies: [encodeOptionReply(option, REP.ACK)] };
      case OPT.INFO:
      case OPT.GO:
        return this.infoOrGo(option, data);
      case OPT.LIST_META_CONTEXT:
      case OPT.SET_META_CONTEXT:
        return this.metaContext(option, data);
      default:
        return this.error(option, REP.ERR_UNSUP, `${optionName(option)} is not supported by this server`);
    }
  }

  private error(option: number, rep: number, message: string): OptionOutcome {
    return { kind: 'continue', replies: [encodeOptionError(option, rep, message)] };
  }

  /** Resolves a name; a refusal becomes the option error to send (and a log line). */
  private resolve(option: number, name: string): NbdExport | { rep: number; message: string } {
    let r: ReturnType<ExportResolver['resolve']>;
    try {
      r = this.o.resolver.resolve(name, this.o.peer);
    } catch (err) {
      this.o.logger.error({ err, peer: this.o.peer, option: optionName(option) }, 'nbd: export resolver threw');
      return { rep: REP.ERR_POLICY, message: 'server error while looking up the export' };
    }
    if ('refused' in r) {
      this.o.logger.warn({ peer: this.o.peer, option: optionName(option), refused: r.refused, reason: r.reason }, 'nbd: export refused');
      const rep = r.refused === 'unknown' ? REP.ERR_UNKNOWN : REP.ERR_POLICY;
      return { rep, message: r.reason };
    }
    return r;
  }

  /** Calls export.attach; a thrown error becomes the refusal message. */
  private attach(option: number, exp: NbdExport): string | undefined {
    const full = this.o.admit?.();
    if (full !== undefined) {
      this.o.logger.warn({ peer: this.o.peer, option: optionName(option), reason: full }, 'nbd: connection refused at attach');
      return full;
    }
    try {
      exp.attach(this.o.peer);
      return undefined;
    } catch (err) {
      if (err instanceof ExportError) {
        this.o.logger.warn({ peer: this.o.peer, option: optionName(option), reason: err.message }, 'nbd: export refused attach');
        return err.message;
      }
      this.o.logger.error({ err, peer: this.o.peer, option: optionName(option) }, 'nbd: export attach threw');
      return 'server error while opening the export';
    }
  }

  private negotiated(name: string, exp: NbdExport): Negotiated {
    const selected = this.meta !== undefined && this.meta.selected && this.meta.name === name && exp.capabilities.blockStatus;
    return {
      name,
      export: exp,
      structured: this.structured,
      allocationContextId: selected ? ALLOCATION_CONTEXT_ID : undefined,
      flags: transmissionFlags(exp, this.structured),
      blockSizes: effectiveBlockSizes(exp),
    };
  }

  private exportName(data: Buffer): OptionOutcome {
    const parsed = parseExportNameOption(data);
    if (!parsed.ok) return { kind: 'close', replies: [], reason: `bad NBD_OPT_EXPORT_NAME: ${parsed.message}` };
    const exp = this.resolve(OPT.EXPORT_NAME, parsed.value);
    if (!('size' in exp)) return { kind: 'close', replies: [], reason: `export refused: ${exp.message}` };
    const refusal = this.attach(OPT.EXPORT_NAME, exp);
    if (refusal !== undefined) return { kind: 'close', replies: [], reason: `export refused attach: ${refusal}` };
    const n = this.negotiated(parsed.value, exp);
    return { kind: 'transmission', replies: [encodeExportNameReply(exp.size, n.flags, this.o.noZeroes)], negotiated: n };
  }

  private infoOrGo(option: number, data: Buffer): OptionOutcome {
    const parsed = parseGoOption(data);
    if (!parsed.ok) return this.error(option, REP.ERR_INVALID, parsed.message);
    const { name, infoRequests } = parsed.value;
    const exp = this.resolve(option, name);
    if (!('size' in exp)) return this.error(option, exp.rep, exp.message);
    if (option === OPT.GO) {
      const refusal = this.attach(option, exp);
      if (refusal !== undefined) return this.error(option, REP.ERR_POLICY, refusal);
    }
    const n = this.negotiated(name, exp);
    const replies: Buffer[] = [encodeOptionReply(option, REP.INFO, encodeInfoExport(exp.size, n.flags))];
    // Block sizes go out even unrequested (spec allows it) because clients that do ask must obey them.
    replies.push(encodeOptionReply(option, REP.INFO, encodeInfoBlockSize(n.blockSizes.minimum, n.blockSizes.preferred, n.blockSizes.maximum)));
    if (infoRequests.includes(INFO.NAME)) replies.push(encodeOptionReply(option, REP.INFO, encodeInfoString(INFO.NAME, name)));
    if (infoRequests.includes(INFO.DESCRIPTION) && exp.description !== '') {
      replies.push(encodeOptionReply(option, REP.INFO, encodeInfoString(INFO.DESCRIPTION, exp.description)));
    }
    replies.push(encodeOptionReply(option, REP.ACK));
    if (option === OPT.INFO) return { kind: 'continue', replies };
    return { kind: 'transmission', replies, negotiated: n };
  }

  private metaContext(option: number, data: Buffer): OptionOutcome {
    const set = option === OPT.SET_META_CONTEXT;
    // SET replaces the selection even when it fails.
    if (set) this.meta = undefined;
    if (!this.structured) return this.error(option, REP.ERR_INVALID, 'negotiate NBD_OPT_STRUCTURED_REPLY first');
    const parsed = parseMetaContextOption(data, MAX_META_QUERIES);
    if (!parsed.ok) {
      const rep = parsed.message.startsWith('too many queries') ? REP.ERR_TOO_BIG : REP.ERR_INVALID;
      return this.error(option, rep, parsed.message);
    }
    const { name, queries } = parsed.value;
    const exp = this.resolve(option, name);
    if (!('size' in exp)) return this.error(option, exp.rep, exp.message);
    let matches: boolean;
    if (!exp.capabilities.blockStatus) {
      matches = false;
    } else if (set) {
      // "base:" alone must be ignored by SET; unknown namespaces and leaves are ignored.
      matches = queries.includes(ALLOCATION_CONTEXT);
    } else {
      matches = queries.length === 0 || queries.some((q) => q === 'base:' || q === ALLOCATION_CONTEXT);
    }
    const replies: Buffer[] = [];
    if (matches) replies.push(encodeOptionReply(option, REP.META_CONTEXT, encodeRepMetaContext(set ? ALLOCATION_CONTEXT_ID : 0, ALLOCATION_CONTEXT)));
    replies.push(encodeOptionReply(option, REP.ACK));
    if (set) this.meta = { name, selected: matches };
    return { kind: 'continue', replies };
  }
}
