/** Public surface of the image store; other modules import from here. */
export { ImageStore, ImageNotFoundError, DEFAULT_COMPRESSION_LEVEL } from './image-store.js';
export type { ImageStoreOptions, ImageDetails, VersionDetails, VerifyResult, ProgressFn } from './image-store.js';
export { VersionReader } from './version-reader.js';
export { Capture, CaptureClosedError } from './capture.js';
export type { CaptureOptions } from './capture.js';
export { ChunkCorruptError } from './codec-pool.js';
export { isValidImageName, assertValidImageName, InvalidImageNameError } from './names.js';
export { imageDigest, zeroChunkHash, chunkHashesOf, parseManifest, encodeManifest, ManifestError, MAX_DISK_SIZE } from './manifest.js';
export type { Manifest, ManifestHeader } from './manifest.js';
export { DEFAULT_CHUNK_SIZE } from './chunk-format.js';
export { readPartitionTable, parseMbr, parseGptHeader, parseGptEntries, sniffFilesystem, PartitionTableError } from './partitions.js';
export type { PartitionTable, PartitionEntry } from './partitions.js';
export type { VersionInfo, ImageSummary, ImagePiece, ImageExtent } from './types.js';
