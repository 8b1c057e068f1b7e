/**
 * The image store's public surface in one module: the entry point when the store is compiled on its
 * own (test/imaging/helpers.ts, build.test.ts). Modules under src/ import the files they need directly.
 */
export { ImageStore, ImageNotFoundError, DEFAULT_COMPRESSION_LEVEL } from './image-store.js';
export type { ImageStoreOptions, StoredImage, VersionDetails, VerifyResult, ProgressFn } from './image-store.js';
export { importStream, importFile } from './image-import.js';
export type { ImportTarget, ImportStreamOptions, ImportFileOptions } from './image-import.js';
export { exportTo, readBytes } from './image-export.js';
export type { ExportSource, ExportOptions } from './image-export.js';
export { describeImage } from './image-details.js';
export type { ImageDetails, DescribeSource } from './image-details.js';
export { VersionReader } from './version-reader.js';
export { Capture, CaptureClosedError } from './capture.js';
export type { CaptureOptions } from './capture.js';
export { ChunkUpload, ChunkUploadError, ChunkUploadClosedError, MissingChunksError } from './chunk-upload.js';
export type { ChunkUploadOptions } from './chunk-upload.js';
export { ChunkCorruptError } from './codec-pool.js';
export { isValidImageName, assertValidImageName, InvalidImageNameError } from './names.js';
export { imageDigest, zeroChunkHash, chunkHashesOf, parseManifest, encodeManifest, ManifestError, MAX_DISK_SIZE } from './manifest.js';
export type { Manifest, ManifestHeader } from './manifest.js';
export { DEFAULT_CHUNK_SIZE } from './chunk-format.js';
export { readPartitionTable, parseMbr, parseGptHeader, parseGptEntries, sniffFilesystem, PartitionTableError } from './partitions.js';
export type { PartitionTable, PartitionEntry } from './partitions.js';
export type { VersionInfo, ImageSummary, ImagePiece, ImageExtent } from './types.js';
