/**
 * The admin account, API tokens for scripts, and the secrets the web login needs.
 *
 * Passwords are stored as scrypt hashes ("scrypt$N$r$p$salt$hash", base64url parts) so the
 * cost can be raised later without breaking stored hashes. API tokens and the one-time
 * setup token are stored as sha256 hashes only: the database file never holds a usable secret.
 */
import { randomBytes, randomUUID, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import type { ApiTokenRecord, Database, UserRecord } from './database.js';
import { hashToken, newToken, tokenMatches } from '../lib/tokens.js';

export const ADMIN_USERNAME = 'admin';
export const MIN_PASSWORD_LENGTH = 8;
/** scrypt reads the whole password; a megabyte "password" is an attack, not a password. */
export const MAX_PASSWORD_LENGTH = 1024;

const SCRYPT = { N: 16384, r: 8, p: 1, keyLength: 32 } as const;

export class UserError extends Error {
  constructor(readonly status: 400 | 404 | 409, message: string) {
    super(message);
    this.name = 'UserError';
  }
}

function scryptAsync(password: string, salt: Buffer, keyLength: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keyLength, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

export function passwordProblem(password: string): string | null {
  if (typeof password !== 'string' || password.length < MIN_PASSWORD_LENGTH) {
    return `the password needs at least ${MIN_PASSWORD_LENGTH} characters`;
  }
  if (password.length > MAX_PASSWORD_LENGTH) return `the password may have at most ${MAX_PASSWORD_LENGTH} characters`;
  return null;
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, SCRYPT.keyLength, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p, maxmem: 64 * 1024 * 1024 });
  return ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64url'), key.toString('base64url')].join('$');
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  if (typeof password !== 'string' || password.length > MAX_PASSWORD_LENGTH) return false;
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number);
  if (![N, r, p].every((n) => Number.isInteger(n) && n > 0) || N > 2 ** 20 || r > 32 || p > 16) return false;
  const salt = Buffer.from(parts[4], 'base64url');
  const expected = Buffer.from(parts[5], 'base64url');
  if (expected.length < 16 || expected.length > 128) return false;
  const key = await scryptAsync(password, salt, expected.length, { N, r, p, maxmem: 256 * 1024 * 1024 });
  return timingSafeEqual(key, expected);
}

export function hasAdmin(db: Database): boolean {
  return db.data.users.some((u) => u.username === ADMIN_USERNAME && u.passwordHash !== '');
}

/** Set (or reset) the admin password. Also ends a pending first-run setup. */
export async function setAdminPassword(db: Database, password: string): Promise<UserRecord> {
  const problem = passwordProblem(password);
  if (problem) throw new UserError(400, problem);
  const passwordHash = await hashPassword(password);
  let user = db.data.users.find((u) => u.username === ADMIN_USERNAME);
  if (!user) {
    user = { username: ADMIN_USERNAME, passwordHash, createdAt: new Date().toISOString() };
    db.data.users.push(user);
  } else {
    user.passwordHash = passwordHash;
  }
  db.data.settings.setupToken = null;
  await db.write();
  return user;
}

/** Check a login. Runs scrypt even for an unknown user so timing does not reveal which usernames exist. */
export async function checkLogin(db: Database, username: string, password: string): Promise<UserRecord | null> {
  const user = db.data.users.find((u) => u.username === username && u.passwordHash !== '');
  const ok = await verifyPassword(password, user?.passwordHash ?? DUMMY_HASH);
  return ok && user ? user : null;
}

// A valid hash of a random password: verifying against it costs the same as a real check.
const DUMMY_HASH = `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${randomBytes(16).toString('base64url')}$${randomBytes(32).toString('base64url')}`;

/** The key that signs session cookies; created once and kept, so a restart does not matter to the signature. */
export async function ensureSessionSecret(db: Database): Promise<string> {
  if (!db.data.settings.sessionSecret) {
    db.data.settings.sessionSecret = randomBytes(32).toString('base64url');
    await db.write();
  }
  return db.data.settings.sessionSecret;
}

/**
 * First run: while no admin password exists, issue a one-time setup token (a fresh one each
 * start, since only its hash is stored). Returns null once an admin exists.
 */
export async function issueSetupToken(db: Database): Promise<string | null> {
  if (hasAdmin(db)) return null;
  const token = newToken();
  db.data.settings.setupToken = hashToken(token);
  await db.write();
  return token;
}

export function setupTokenValid(db: Database, token: string): boolean {
  const stored = db.data.settings.setupToken;
  if (!stored || hasAdmin(db) || typeof token !== 'string' || token.length === 0 || token.length > 200) return false;
  return tokenMatches(token, stored);
}

const TOKEN_NAME_RE = /^[\p{L}\p{N} ._()@-]{1,64}$/u;
/** Prefix that makes a leaked token recognisable in logs and secret scanners. */
const API_TOKEN_PREFIX = 'nct_';

export interface NewApiToken {
  readonly token: string;
  readonly record: ApiTokenRecord;
}

/** Create a token for scripts; the token itself is returned once and never stored. */
export async function createApiToken(db: Database, name: string): Promise<NewApiToken> {
  if (typeof name !== 'string' || !TOKEN_NAME_RE.test(name)) {
    throw new UserError(400, `token name "${String(name).slice(0, 80)}" must be 1-64 letters, digits, spaces or ._()@-`);
  }
  if (db.data.apiTokens.some((t) => t.name === name)) {
    throw new UserError(409, `a token named "${name}" exists already; revoke it first or pick another name`);
  }
  const token = API_TOKEN_PREFIX + newToken();
  const record: ApiTokenRecord = { id: randomUUID(), name, tokenHash: hashToken(token), createdAt: new Date().toISOString(), lastUsed: null };
  db.data.apiTokens.push(record);
  await db.write();
  return { token, record };
}

export function listApiTokens(db: Database): ApiTokenRecord[] {
  return [...db.data.apiTokens].sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

/** Revoke by id or by name. */
export async function revokeApiToken(db: Database, idOrName: string): Promise<ApiTokenRecord> {
  const record = db.data.apiTokens.find((t) => t.id === idOrName || t.name === idOrName);
  if (!record) throw new UserError(404, `no API token "${idOrName}"; the Settings page and GET /api/v1/tokens list them`);
  db.data.apiTokens = db.data.apiTokens.filter((t) => t !== record);
  await db.write();
  return record;
}

const LAST_USED_RESOLUTION_MS = 60_000;

/** The record a presented token belongs to, or undefined. Notes the use (at most once a minute, to spare the disk). */
export async function findApiToken(db: Database, token: string): Promise<ApiTokenRecord | undefined> {
  if (typeof token !== 'string' || !token.startsWith(API_TOKEN_PREFIX) || token.length > 200) return undefined;
  const record = db.data.apiTokens.find((t) => tokenMatches(token, t.tokenHash));
  if (record) {
    const now = Date.now();
    if (!record.lastUsed || now - Date.parse(record.lastUsed) > LAST_USED_RESOLUTION_MS) {
      record.lastUsed = new Date(now).toISOString();
      await db.write();
    }
  }
  return record;
}
