/** The whole-image digest as the imaging client computes it from a disk's bytes, written apart from src/ so tests check the server against it. */
import { createHash } from 'node:crypto';

/**
 * sha256 over "<sha256 hex of chunk>\n" for each chunkSize piece of the first `size` bytes (the last piece
 * may be shorter): what the client reports after a deploy's read-back and what the server's image digest is.
 */
export function diskDigest(data: Buffer, size: number, chunkSize: number): string {
  const outer = createHash('sha256');
  for (let off = 0; off < size; off += chunkSize) {
    const piece = data.subarray(off, Math.min(off + chunkSize, size));
    outer.update(`${createHash('sha256').update(piece).digest('hex')}\n`);
  }
  return outer.digest('hex');
}
