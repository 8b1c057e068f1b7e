/**
 * The first page of a Linux swap area (version 1), as mkswap writes it. A capture does not send swap
 * (its content is worthless after a power-off); a deploy writes this page instead, with the UUID and
 * label the source had, so fstab and resume= still find it. Pure: bytes out, nothing written.
 */

/** The page size of x86-64, which the swap area's size is counted in. */
export const SWAP_PAGE_SIZE = 4096;

export class SwapHeaderError extends Error {
  constructor(message: string) {
    super(`swap area: ${message}`);
    this.name = 'SwapHeaderError';
  }
}

/** The header page for a swap area of `sizeBytes`, with `uuid` (canonical text form) and `label` (at most 16 bytes). */
export function swapHeader(sizeBytes: number, uuid: string | null, label: string | null): Buffer {
  const pages = Math.floor(sizeBytes / SWAP_PAGE_SIZE);
  if (pages < 10) throw new SwapHeaderError(`${sizeBytes} bytes is too small for a swap area (mkswap needs 10 pages of ${SWAP_PAGE_SIZE} bytes)`);
  if (pages - 1 > 0xffffffff) throw new SwapHeaderError(`${sizeBytes} bytes is more than a swap header can describe`);
  const page = Buffer.alloc(SWAP_PAGE_SIZE);
  page.writeUInt32LE(1, 1024); // version
  page.writeUInt32LE(pages - 1, 1028); // last usable page
  page.writeUInt32LE(0, 1032); // bad pages
  if (uuid !== null) {
    const hex = uuid.replace(/-/g, '');
    if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new SwapHeaderError(`"${uuid}" is not a UUID`);
    Buffer.from(hex, 'hex').copy(page, 1036);
  }
  if (label !== null) {
    const bytes = Buffer.from(label, 'utf8');
    if (bytes.length > 16) throw new SwapHeaderError(`label "${label}" is longer than 16 bytes`);
    bytes.copy(page, 1052);
  }
  page.write('SWAPSPACE2', SWAP_PAGE_SIZE - 10, 'latin1');
  return page;
}
