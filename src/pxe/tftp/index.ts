export { TftpServer, type TftpServerOptions, type TransferInfo, type TransferStatus } from './server.js';
export * from './codec.js';
