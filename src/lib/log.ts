import { pino, type Logger } from 'pino';

export type { Logger };

/** One logger per process; components take a child with their name so a technician can grep one service. */
export function createLogger(level: string = process.env.NETCLONE_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { app: 'netclone' }, timestamp: pino.stdTimeFunctions.isoTime });
}

/** A silent logger for tests and library use. */
export function nullLogger(): Logger {
  return pino({ level: 'silent' });
}
