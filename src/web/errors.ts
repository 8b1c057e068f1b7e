/**
 * One error policy for the whole web app: what the technician did wrong is a 4xx with a
 * sentence saying so (JSON for the API, a message in the page otherwise); anything else is
 * a 500 that says "see the server log" and is logged with its stack.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { html } from './html.js';

export interface HttpProblem {
  readonly status: number;
  readonly message: string;
}

const FIELD_HINTS: Record<string, string> = {
  mac: 'is not a MAC address (expected aa:bb:cc:dd:ee:ff)',
  image: "is not a valid image name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
  to: "is not a valid image name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
  assignedImage: "is not a valid image name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
  name: 'must be 1-64 letters, digits, spaces or ._()-',
};

interface ValidationItem {
  readonly instancePath?: string;
  readonly keyword?: string;
  readonly params?: Record<string, unknown>;
  readonly message?: string;
}

function describeValidation(err: FastifyError): string {
  const items = (err.validation ?? []) as readonly ValidationItem[];
  const first = items[0];
  if (!first) return err.message;
  const where = err.validationContext ?? 'request';
  const field = (first.instancePath ?? '').split('/').filter(Boolean).pop()
    ?? (typeof first.params?.missingProperty === 'string' ? first.params.missingProperty : undefined);
  if (first.keyword === 'required' && typeof first.params?.missingProperty === 'string') {
    return `${where}: "${first.params.missingProperty}" is missing`;
  }
  if (first.keyword === 'additionalProperties' && typeof first.params?.additionalProperty === 'string') {
    return `${where}: unknown field "${first.params.additionalProperty}"`;
  }
  if (field && (first.keyword === 'pattern' || first.keyword === 'format') && FIELD_HINTS[field]) {
    return `${where}: ${field} ${FIELD_HINTS[field]}`;
  }
  return `${where}${field ? ` ${field}` : ''}: ${first.message ?? 'is not valid'}`;
}

export function classifyError(error: unknown): HttpProblem {
  const err = error as Partial<FastifyError> & { status?: unknown; code?: unknown; name?: unknown };
  if (err && Array.isArray(err.validation)) return { status: 400, message: describeValidation(err as FastifyError) };
  const status = typeof err?.status === 'number' ? err.status : typeof err?.statusCode === 'number' ? err.statusCode : null;
  const message = typeof err?.message === 'string' ? err.message : String(error);
  if (status !== null && status >= 400 && status < 500) {
    if (err.code === 'FST_CSRF_MISSING_SECRET' || err.code === 'FST_CSRF_INVALID_TOKEN') {
      return { status: 403, message: 'the form was out of date or came from another site (CSRF check failed); reload the page and try again' };
    }
    return { status, message };
  }
  if (err?.name === 'InvalidImageNameError') return { status: 400, message };
  if (typeof err?.name === 'string' && /NotFound/.test(err.name)) return { status: 404, message };
  return { status: 500, message: 'internal error; the server log has the details' };
}

export function isApiRequest(req: FastifyRequest): boolean {
  return req.url.startsWith('/api/');
}

const STATUS_WORDS: Record<number, string> = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 409: 'Conflict', 413: 'Payload Too Large',
  415: 'Unsupported Media Type', 429: 'Too Many Requests', 500: 'Internal Server Error',
};

export function statusWord(status: number): string {
  return STATUS_WORDS[status] ?? 'Error';
}

/** Render a problem the way the request wants it. `renderPage` wraps a message into the full page. */
export function sendProblem(
  req: FastifyRequest,
  reply: FastifyReply,
  problem: HttpProblem,
  renderPage: (message: string, status: number) => string,
): FastifyReply {
  reply.code(problem.status);
  if (isApiRequest(req)) {
    return reply.type('application/json; charset=utf-8').send({ statusCode: problem.status, error: statusWord(problem.status), message: problem.message });
  }
  if (req.headers['hx-request'] === 'true') {
    // Put the message where every page shows messages instead of replacing the element that asked.
    reply.header('HX-Retarget', '#flash').header('HX-Reswap', 'innerHTML');
    return reply.type('text/html; charset=utf-8').send(html`<p class="error" role="alert">${problem.message}</p>`.value);
  }
  return reply.type('text/html; charset=utf-8').send(renderPage(problem.message, problem.status));
}
