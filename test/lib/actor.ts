import type { Actor } from '../../src/domain/commands.js';

/** Tests arrange state as the appliance's owner, the way the CLI does. */
export const TEST_OPERATOR: Actor = { kind: 'operator', name: 'test', via: 'cli' };
