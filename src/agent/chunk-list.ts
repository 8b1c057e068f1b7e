/** The ordered chunk list on the wire (contract of issue 11): 32 raw sha256 bytes a chunk, all zeros for a hole. */

export const LIST_ENTRY_BYTES = 32;

/** Chunk `index`'s name (hex sha256), or null for an all-zero chunk. */
export function hashAt(list: Buffer, index: number): string | null {
  const raw = list.subarray(index * LIST_ENTRY_BYTES, (index + 1) * LIST_ENTRY_BYTES);
  return raw.every((b) => b === 0) ? null : raw.toString('hex');
}

/** Records chunk `index`'s name in `list` (a hole needs nothing: a new list is all zeros). */
export function setHash(list: Buffer, index: number, hash: string): void {
  list.write(hash, index * LIST_ENTRY_BYTES, LIST_ENTRY_BYTES, 'hex');
}
