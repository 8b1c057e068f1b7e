/** Messages between the agent bench and the child process running a whole appliance (appliance-child.ts). */
import type { TaskRecord } from '../../src/domain/database.js';

export type ApplianceRequest =
  | {
      readonly id: number;
      readonly op: 'queue';
      readonly kind: 'capture' | 'deploy';
      readonly image: string;
      readonly transport: 'chunks' | 'nbd';
      /** The address the PC's requests will come from: its boot script and token are bound to it. */
      readonly clientIp: string;
    }
  | { readonly id: number; readonly op: 'task'; readonly taskId: string }
  | { readonly id: number; readonly op: 'shutdown' };

export type TaskView = Pick<TaskRecord, 'id' | 'state' | 'reason' | 'result' | 'log' | 'mac'>;

export type ApplianceReply =
  | { readonly id: number; readonly ok: true; readonly task?: TaskView }
  | { readonly id: number; readonly ok: false; readonly error: string };

export interface ApplianceReady {
  readonly ready: true;
  readonly http: number;
  readonly nbd: number;
}
