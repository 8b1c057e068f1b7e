/**
 * A disk's bytes as the store reads them and the transports send them: runs of data, and holes that
 * read as zeroes. One definition, so a transport passes the store's pieces on without converting.
 */
export type ReadPiece =
  | { readonly kind: 'data'; readonly offset: number; readonly data: Buffer }
  | { readonly kind: 'hole'; readonly offset: number; readonly length: number };

/** An NBD `base:allocation` extent: flags NBD_STATE_HOLE (1) | NBD_STATE_ZERO (2), or 0 for data. */
export interface Extent {
  readonly length: number;
  readonly flags: number;
}
