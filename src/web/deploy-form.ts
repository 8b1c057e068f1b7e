/**
 * The host page's deploy and capture forms on the server side (issue 13): the checks the deploy form
 * shows, the task a sent form asks for, and where a deploy that needs confirmation goes back to.
 */
import { CommandError, requireMac, type Actor, type Commands, type StartTaskInput } from '../domain/commands.js';
import type { HostRecord } from '../domain/database.js';
import type { DeployPreview } from '../domain/deploy-checks.js';
import type { ImageSummary } from '../imaging/types.js';
import { deployChoiceOf, deployChoiceQuery, type DeployChoice, type DeployFormData } from './pages/task-forms.js';

/** The deploy form for `fields` (the host page's query): the checks of the chosen image and version. */
export async function deployFormFor(commands: Commands, actor: Actor, host: HostRecord, images: readonly ImageSummary[], fields: Record<string, unknown>, csrf: string): Promise<DeployFormData> {
  let choice = deployChoiceOf(fields, host);
  let preview: DeployPreview | null = null;
  if (choice.image !== null && images.some((i) => i.name === choice.image)) {
    const main = /^\d+$/.test(choice.mainPartition) ? Number(choice.mainPartition) : undefined;
    try {
      preview = await commands.previewDeploy(actor, host.mac, choice.image, { version: choice.version ?? undefined, diskSerial: choice.diskSerial, mainPartition: main });
    } catch (e) {
      // A version of another image (the image was just changed), or one deleted since: the newest instead.
      if (!(e instanceof CommandError) || e.status !== 404 || choice.version === null) throw e;
      choice = { ...choice, version: null };
      preview = await commands.previewDeploy(actor, host.mac, choice.image as string, { diskSerial: choice.diskSerial, mainPartition: main });
    }
  }
  return { host, images, choice, preview, csrf };
}

/** The task a sent capture or deploy form asks for; what is malformed is left for startTask to refuse. */
export function taskFormInput(kind: 'capture' | 'deploy', mac: string, fields: Record<string, unknown>, host: HostRecord | undefined): { input: StartTaskInput; choice: DeployChoice } {
  const choice = deployChoiceOf(fields, host ?? ({ assignedImage: null } as HostRecord));
  const image = typeof fields.image === 'string' && fields.image.trim() !== '' ? fields.image.trim() : undefined;
  const version = typeof fields.version === 'string' ? fields.version.trim() : '';
  const input: StartTaskInput = {
    kind,
    mac,
    image,
    wake: choice.wake,
    after: choice.poweroff ? 'poweroff' : 'reboot',
    diskSerial: choice.diskSerial,
    // Empty: the largest partition grows; anything not a whole number is refused by startTask.
    ...(kind === 'deploy' && choice.mainPartition ? { mainPartition: Number(choice.mainPartition) } : {}),
    // Empty: the newest version when the PC starts; text that is no number is refused by startTask.
    ...(kind === 'deploy' && version !== '' ? { version: Number(version) } : {}),
    ...(kind === 'deploy' ? { force: choice.force } : {}),
  };
  return { input, choice };
}

/**
 * A deploy onto another PC model that was not confirmed: the host page to go back to, its deploy form
 * filled in as sent and showing the warning and the "Deploy anyway" box, with the message to flash.
 * Null when the deploy may go ahead (startTask checks again).
 */
export async function unconfirmedMismatch(commands: Commands, actor: Actor, input: StartTaskInput, choice: DeployChoice): Promise<{ readonly back: string; readonly message: string } | null> {
  if (input.kind !== 'deploy' || input.force === true || !choice.image) return null;
  let preview: DeployPreview;
  try {
    preview = await commands.previewDeploy(actor, input.mac, choice.image, { version: input.version, diskSerial: input.diskSerial });
  } catch (e) {
    if (e instanceof CommandError && e.status < 500) return null; // startTask says what is wrong
    throw e;
  }
  if (!preview.mismatch) return null;
  return {
    back: `/hosts/${requireMac(input.mac)}?${deployChoiceQuery(choice)}#deploy-form`,
    message: 'Not deployed yet: the image comes from another PC model. Read the warning in the deploy form and tick "Deploy anyway" to go ahead.',
  };
}
