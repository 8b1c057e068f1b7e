/**
 * Image names become directory names under the store, so they are the path-traversal border:
 * only names matching this pattern ever reach the filesystem.
 */
const IMAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function isValidImageName(name: string): boolean {
  return IMAGE_NAME.test(name) && name !== '.' && name !== '..' && !name.includes('..');
}

export class InvalidImageNameError extends Error {
  constructor(name: string) {
    super(`invalid image name ${JSON.stringify(name.slice(0, 80))}: use 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit, no '..'`);
    this.name = 'InvalidImageNameError';
  }
}

export function assertValidImageName(name: string): void {
  if (typeof name !== 'string' || !isValidImageName(name)) throw new InvalidImageNameError(String(name));
}
