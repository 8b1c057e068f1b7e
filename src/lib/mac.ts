/** MAC addresses are the host's identity everywhere; one spelling: lowercase, colon-separated. */
const MAC_RE = /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i;

export function normalizeMac(input: string): string | null {
  const m = MAC_RE.exec(input.trim());
  if (!m) return null;
  const sep = input.trim()[2];
  if (input.trim().split('').filter((c) => c === ':' || c === '-').some((c) => c !== sep)) return null;
  return m.slice(1).join(':').toLowerCase();
}

export function macFromBytes(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 6), (b) => b.toString(16).padStart(2, '0')).join(':');
}

export function macToBytes(mac: string): Buffer {
  return Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
}
