// The single client for the Bramble Administration Service HTTP JSON API.
//
// Every screen talks to the server through this module. It works out where
// the server is (same origin in a browser; asked from the desktop shell when
// running inside the Tauri window), attaches credentials, and turns every
// failure into an ApiError that a screen can show to an administrator.

import { invoke } from '@tauri-apps/api/core';

/** Lifecycle state of one server component, as reported by `GET /health`. */
export type ComponentState = 'starting' | 'running' | 'restarting' | 'stopped' | 'failed';

export const COMPONENT_STATES: readonly ComponentState[] = [
  'starting',
  'running',
  'restarting',
  'stopped',
  'failed',
];

export interface ComponentHealth {
  id: string;
  name: string;
  state: ComponentState;
  /** RFC 3339 timestamp, or null when the component never reported. */
  last_heartbeat: string | null;
  restarts: number;
  /** Explanation of the last failure, e.g. "missed 2 heartbeats; restarted". */
  detail?: string | null;
}

export interface HealthDocument {
  /** "ok" when every component is running, otherwise "degraded". */
  status: 'ok' | 'degraded';
  version: string;
  server: string;
  /** RFC 3339 timestamp. */
  started_at: string;
  components: ComponentHealth[];
  /** The Router's SRP link to the relay; absent from older servers. */
  wireless?: WirelessHealth;
}

/** The wireless network connection as `/health` reports it. */
export interface WirelessHealth {
  connected: boolean;
  srp_id: string | null;
  /** `host:port` of the relay. */
  relay: string | null;
  /** RFC 3339: when the link last came up or went down. */
  since: string | null;
  /** Why the link is not up, in words for an administrator. */
  last_error: string | null;
  reconnects: number;
  /** PINs of devices connected directly (the LAN path). */
  lan_devices: string[];
}

/** Error codes produced by the client itself (the server has its own). */
export const ErrorCodes = {
  /** The request never got an HTTP answer (refused, DNS, timeout, CORS...). */
  SERVER_UNREACHABLE: 'SERVER_UNREACHABLE',
  /** The server answered with an error status but no error document. */
  UNEXPECTED_RESPONSE: 'UNEXPECTED_RESPONSE',
  /** The server answered 2xx but the body was not the JSON expected. */
  INVALID_RESPONSE: 'INVALID_RESPONSE',
  /** The desktop shell could not say where the server is. */
  CONSOLE_ENDPOINT_UNAVAILABLE: 'CONSOLE_ENDPOINT_UNAVAILABLE',
} as const;

/** A failure to show to an administrator: a stable code and plain words. */
export class ApiError extends Error {
  readonly code: string;
  /** HTTP status when the server answered, undefined otherwise. */
  readonly status: number | undefined;

  constructor(code: string, message: string, status?: number) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.status = status;
  }
}

export function isApiError(value: unknown): value is ApiError {
  return value instanceof ApiError;
}

/** Where the Administration Service is and how to authenticate to it. */
export interface Endpoint {
  /** Origin plus optional path prefix, without trailing slash; "" = same origin. */
  baseUrl: string;
  token: string | null;
}

/** Shape returned by the desktop shell's `console_endpoint` command. */
interface ConsoleEndpointReply {
  base_url: string;
  token: string | null;
}

/** Requests without an answer after this long count as unreachable. */
export const REQUEST_TIMEOUT_MS = 10_000;

/** True inside the Tauri desktop window. */
export function isDesktopShell(): boolean {
  return typeof window !== 'undefined' && '__TAURI_INTERNALS__' in window;
}

let endpointPromise: Promise<Endpoint> | null = null;

/** Forget the resolved endpoint (tests, or after the shell's server changes). */
export function resetEndpoint(): void {
  endpointPromise = null;
}

/** Resolve (once) where the Administration Service is. */
export function getEndpoint(): Promise<Endpoint> {
  if (!endpointPromise) {
    endpointPromise = resolveEndpoint();
    // Do not remember a failure: the next call asks the shell again.
    endpointPromise.catch(() => {
      endpointPromise = null;
    });
  }
  return endpointPromise;
}

async function resolveEndpoint(): Promise<Endpoint> {
  if (!isDesktopShell()) {
    return { baseUrl: '', token: null };
  }
  let reply: ConsoleEndpointReply;
  try {
    reply = await invoke<ConsoleEndpointReply>('console_endpoint');
  } catch (err) {
    // The desktop shell reports why its in-process server did not start
    // as {code, message}; show that as it is.
    if (isErrorDocument(err)) {
      throw new ApiError(err.code, err.message);
    }
    throw new ApiError(
      ErrorCodes.CONSOLE_ENDPOINT_UNAVAILABLE,
      `The desktop console could not find out which Bramble server to use: ${describe(err)}`,
    );
  }
  if (!reply || typeof reply.base_url !== 'string' || reply.base_url.trim() === '') {
    throw new ApiError(
      ErrorCodes.CONSOLE_ENDPOINT_UNAVAILABLE,
      'The desktop console has no Bramble server address configured.',
    );
  }
  return {
    baseUrl: reply.base_url.trim().replace(/\/+$/, ''),
    token: typeof reply.token === 'string' && reply.token !== '' ? reply.token : null,
  };
}

/** The address shown to an administrator in "could not be reached" messages. */
function displayBase(baseUrl: string): string {
  if (baseUrl !== '') return baseUrl;
  if (typeof window !== 'undefined' && window.location?.origin && window.location.origin !== 'null') {
    return window.location.origin;
  }
  return 'this address';
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(err);
  } catch {
    return String(err);
  }
}

function isErrorDocument(value: unknown): value is { code: string; message: string } {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.code === 'string' && v.code !== '' && typeof v.message === 'string';
}

export interface RequestOptions {
  method?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Serialised as JSON. */
  body?: unknown;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/**
 * Send one request to the Administration Service and decode its JSON answer.
 * Always rejects with an ApiError.
 */
export async function request<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const { baseUrl, token } = await getEndpoint();
  const url = `${baseUrl}${path.startsWith('/') ? path : `/${path}`}`;

  const headers: Record<string, string> = { Accept: 'application/json' };
  if (token !== null) headers.Authorization = `Bearer ${token}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(options.body);
  }

  const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  const onCallerAbort = () => controller.abort();
  options.signal?.addEventListener('abort', onCallerAbort, { once: true });

  let response: Response;
  try {
    response = await fetch(url, {
      method: options.method ?? 'GET',
      headers,
      body,
      signal: controller.signal,
      cache: 'no-store',
    });
  } catch (err) {
    if (options.signal?.aborted && !timedOut) {
      throw err; // the caller gave up; nothing to report
    }
    const where = displayBase(baseUrl);
    const why = timedOut
      ? `no answer within ${Math.round(timeoutMs / 1000)} seconds`
      : describe(err);
    throw new ApiError(
      ErrorCodes.SERVER_UNREACHABLE,
      `The Bramble server could not be reached at ${where} (${why}). ` +
        'Check that the Bramble server is running and that this address is correct.',
    );
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onCallerAbort);
  }

  const text = await response.text().catch(() => '');
  let parsed: unknown = undefined;
  let parseFailed = false;
  if (text !== '') {
    try {
      parsed = JSON.parse(text);
    } catch {
      parseFailed = true;
    }
  }

  if (!response.ok) {
    if (isErrorDocument(parsed)) {
      throw new ApiError(parsed.code, parsed.message, response.status);
    }
    const statusText = response.statusText ? ` ${response.statusText}` : '';
    throw new ApiError(
      ErrorCodes.UNEXPECTED_RESPONSE,
      `The Bramble server answered ${response.status}${statusText} to ${path} without an explanation.`,
      response.status,
    );
  }

  if (parseFailed || (text === '' && response.status !== 204)) {
    throw new ApiError(
      ErrorCodes.INVALID_RESPONSE,
      `The Bramble server sent an answer to ${path} that is not valid JSON.`,
      response.status,
    );
  }
  return parsed as T;
}

function isHealthDocument(value: unknown): value is HealthDocument {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v.status === 'string' &&
    typeof v.version === 'string' &&
    Array.isArray(v.components) &&
    v.components.every(
      (c: unknown) =>
        typeof c === 'object' &&
        c !== null &&
        typeof (c as Record<string, unknown>).id === 'string' &&
        typeof (c as Record<string, unknown>).name === 'string' &&
        typeof (c as Record<string, unknown>).state === 'string',
    )
  );
}

/** `GET /health`: overall status and the state of every component. */
export async function getHealth(signal?: AbortSignal): Promise<HealthDocument> {
  const doc = await request<unknown>('/health', { signal });
  if (!isHealthDocument(doc)) {
    throw new ApiError(
      ErrorCodes.INVALID_RESPONSE,
      'The Bramble server sent a health report this console does not understand.',
    );
  }
  return doc;
}
