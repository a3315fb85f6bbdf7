// The single client for the Bramble Administration Service HTTP JSON API.
//
// Every screen talks to the server through this module. It works out where
// the server is (same origin in a browser; asked from the desktop shell when
// running inside the Tauri window), attaches credentials, and turns every
// failure into an ApiError that a screen can show to an administrator.

import { invoke } from '@tauri-apps/api/core';
import { createParser } from 'eventsource-parser';

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

/**
 * The session token for the desktop window, whose pages come from another
 * origin than the API and so cannot use the session cookie. Browsers keep
 * the HttpOnly cookie instead and never see the token.
 */
const DESKTOP_TOKEN_KEY = 'bramble.session';

function desktopToken(): string | null {
  if (!isDesktopShell()) return null;
  try {
    return window.sessionStorage.getItem(DESKTOP_TOKEN_KEY);
  } catch {
    return null;
  }
}

function setDesktopToken(token: string | null | undefined): void {
  if (!isDesktopShell()) return;
  try {
    if (token) window.sessionStorage.setItem(DESKTOP_TOKEN_KEY, token);
    else window.sessionStorage.removeItem(DESKTOP_TOKEN_KEY);
  } catch {
    // Storage refused: the session lasts until the window reloads.
  }
}

/** The Authorization header for the desktop window's session (none in a browser). */
function authorization(shellToken: string | null): Record<string, string> {
  const bearer = desktopToken() ?? shellToken;
  return bearer !== null ? { Authorization: `Bearer ${bearer}` } : {};
}

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

let unauthorizedHandler: (() => void) | null = null;

/** Called when the server says the session is gone (expired, signed out elsewhere). */
export function setUnauthorizedHandler(handler: (() => void) | null): void {
  unauthorizedHandler = handler;
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

  const headers: Record<string, string> = { Accept: 'application/json', ...authorization(token) };
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
    if (response.status === 401 && !path.startsWith('/api/session') && !path.startsWith('/api/setup')) {
      unauthorizedHandler?.();
    }
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

// ---------------------------------------------------------------------------
// Sessions, first run and permissions

/** A permission name, e.g. `users.write`. */
export type Permission = string;

/** Who is signed in (`GET /api/session`). */
export interface Whoami {
  id: number;
  login: string;
  display_name: string;
  roles: string[];
  permissions: Permission[];
  expires_at?: string;
  token?: string;
}

export function can(who: Whoami | null, permission: Permission): boolean {
  return !!who && who.permissions.includes(permission);
}

export async function getSetup(): Promise<{ needs_first_administrator: boolean }> {
  return request('/api/setup');
}

export async function createFirstAdministrator(form: {
  login: string;
  display_name: string;
  password: string;
}): Promise<Whoami> {
  const who = await request<Whoami>('/api/setup', {
    method: 'POST',
    body: { ...form, bearer: isDesktopShell() },
  });
  setDesktopToken(who.token);
  return who;
}

export async function signIn(login: string, password: string): Promise<Whoami> {
  const who = await request<Whoami>('/api/session', {
    method: 'POST',
    body: { login, password, bearer: isDesktopShell() },
  });
  setDesktopToken(who.token);
  return who;
}

export async function getSession(): Promise<Whoami> {
  return request('/api/session');
}

export async function signOut(): Promise<void> {
  try {
    await request('/api/session', { method: 'DELETE' });
  } finally {
    setDesktopToken(null);
  }
}

// ---------------------------------------------------------------------------
// Users and groups

/** One page of a long list. */
export interface Page<T> {
  items: T[];
  total: number;
  page: number;
  per_page: number;
}

export interface User {
  id: number;
  display_name: string;
  email: string;
  mailbox_login: string;
  account_status: 'active' | 'disabled' | 'removed_in_directory';
  activation_status: string;
  created_at: string;
  updated_at: string;
  from_directory: boolean;
}

export interface UserForm {
  display_name: string;
  email: string;
  mailbox_login?: string;
  account_status?: 'active' | 'disabled';
}

export interface UserQuery {
  search?: string;
  page?: number;
  per_page?: number;
  /** `name`, `email` or `created`, `-` first for descending. */
  sort?: string;
}

function query(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== '') q.set(k, String(v));
  }
  const text = q.toString();
  return text ? `?${text}` : '';
}

export async function listUsers(params: UserQuery, signal?: AbortSignal): Promise<Page<User>> {
  return request(`/api/users${query({ ...params })}`, { signal });
}

export async function createUser(form: UserForm): Promise<User> {
  return request('/api/users', { method: 'POST', body: form });
}

export async function getUser(id: number): Promise<User> {
  return request(`/api/users/${id}`);
}

export async function updateUser(id: number, form: UserForm): Promise<User> {
  return request(`/api/users/${id}`, { method: 'PUT', body: form });
}

export async function deleteUser(id: number): Promise<void> {
  await request(`/api/users/${id}`, { method: 'DELETE' });
}

export interface UserGroup {
  id: number;
  name: string;
  description: string;
  created_at: string;
}

export interface GroupSummary extends UserGroup {
  members: number;
}

export async function getUserGroups(id: number): Promise<UserGroup[]> {
  return request(`/api/users/${id}/groups`);
}

export async function setUserGroups(id: number, groupIds: number[]): Promise<UserGroup[]> {
  return request(`/api/users/${id}/groups`, { method: 'PUT', body: { group_ids: groupIds } });
}

export async function listGroups(): Promise<GroupSummary[]> {
  return request('/api/groups');
}

export async function createGroup(name: string, description: string): Promise<UserGroup> {
  return request('/api/groups', { method: 'POST', body: { name, description } });
}

export interface GroupDetail extends UserGroup {
  members: User[];
}

export async function getGroup(id: number): Promise<GroupDetail> {
  return request(`/api/groups/${id}`);
}

export async function removeGroupMember(groupId: number, userId: number): Promise<void> {
  await request(`/api/groups/${groupId}/members/${userId}`, { method: 'DELETE' });
}

export async function deleteGroup(id: number): Promise<void> {
  await request(`/api/groups/${id}`, { method: 'DELETE' });
}

// ---------------------------------------------------------------------------
// Administrators and roles

export interface Administrator {
  id: number;
  login: string;
  display_name: string;
  disabled: boolean;
  created_at: string;
  roles: string[];
  role_ids: number[];
  groups: string[];
  effective_roles: string[];
}

export interface Role {
  id: number;
  name: string;
  builtin: boolean;
  permissions: string[];
}

export async function listAdministrators(): Promise<Administrator[]> {
  return request('/api/administrators');
}

export async function createAdministrator(form: {
  login: string;
  display_name: string;
  password: string;
  role_ids: number[];
}): Promise<Administrator> {
  return request('/api/administrators', { method: 'POST', body: form });
}

export async function updateAdministrator(
  id: number,
  form: { display_name?: string; disabled?: boolean; role_ids?: number[] },
): Promise<Administrator> {
  return request(`/api/administrators/${id}`, { method: 'PUT', body: form });
}

export async function listRoles(): Promise<Role[]> {
  return request('/api/roles');
}

export async function createRole(name: string, permissions: string[]): Promise<Role> {
  return request('/api/roles', { method: 'POST', body: { name, permissions } });
}

export async function deleteRole(id: number): Promise<void> {
  await request(`/api/roles/${id}`, { method: 'DELETE' });
}

export async function listPermissions(): Promise<{ name: string; description: string }[]> {
  return request('/api/permissions');
}

// ---------------------------------------------------------------------------
// Audit log

export interface AuditEntry {
  id: number;
  at: string;
  actor: string;
  action: string;
  target: string;
  before: unknown;
  after: unknown;
  hash: string;
}

export interface AuditVerification {
  intact: boolean;
  entries: number;
  tampered_entry: number | null;
  message: string;
}

export async function listAudit(page: number, perPage: number): Promise<Page<AuditEntry>> {
  return request(`/api/audit${query({ page, per_page: perPage })}`);
}

export async function verifyAudit(): Promise<AuditVerification> {
  return request('/api/audit/verify');
}

/** Downloads the whole audit log as a file (CSV or JSON). */
export async function downloadAuditExport(format: 'csv' | 'json'): Promise<void> {
  const { baseUrl, token } = await getEndpoint();
  const headers = authorization(token);
  let response: Response;
  try {
    response = await fetch(`${baseUrl}/api/audit/export?format=${format}`, { headers, cache: 'no-store' });
  } catch (err) {
    throw new ApiError(
      ErrorCodes.SERVER_UNREACHABLE,
      `The Bramble server could not be reached to export the audit log (${describe(err)}).`,
    );
  }
  if (!response.ok) {
    const text = await response.text().catch(() => '');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (isErrorDocument(parsed)) throw new ApiError(parsed.code, parsed.message, response.status);
    throw new ApiError(
      ErrorCodes.UNEXPECTED_RESPONSE,
      `The Bramble server answered ${response.status} to the audit log export.`,
      response.status,
    );
  }
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = `bramble-audit-log.${format}`;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** How long the console waits before reopening a live-status stream that ended. */
export const EVENTS_RETRY_MS = 3_000;

/** What one `status` event carries (`GET /api/events`). */
export interface LiveStatus {
  health: HealthDocument;
  /** Id of the newest audit log entry (0: none): lists refresh when it moves. */
  audit_head: number;
}

/**
 * Live statuses (`GET /api/events`, server-sent events): calls `onStatus`
 * with each `status` event until the returned function is called.
 *
 * Read with `fetch` rather than `EventSource` so that the desktop window,
 * whose pages come from another origin, can send its bearer token; the
 * browser sends its session cookie. A stream that ends or fails is opened
 * again after `EVENTS_RETRY_MS`; a signed-out session stops it.
 * `onConnected` hears when the stream opens (true) and ends (false).
 */
export function subscribeEvents(
  onStatus: (status: LiveStatus) => void,
  onConnected: (open: boolean) => void = () => undefined,
): () => void {
  if (typeof fetch === 'undefined' || typeof TextDecoder === 'undefined') return () => {};
  const controller = new AbortController();
  let retry: ReturnType<typeof setTimeout> | undefined;

  const open = async (): Promise<boolean> => {
    const { baseUrl, token } = await getEndpoint();
    const response = await fetch(`${baseUrl}/api/events`, {
      headers: { Accept: 'text/event-stream', ...authorization(token) },
      signal: controller.signal,
      cache: 'no-store',
    });
    if (response.status === 401 || response.status === 403) return false;
    if (!response.ok || !response.body) return true;
    const parser = createParser({
      onEvent(event) {
        if (event.event !== 'status') return;
        try {
          onStatus(JSON.parse(event.data) as LiveStatus);
        } catch {
          // A malformed event is ignored; the next one carries the full state.
        }
      },
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    onConnected(true);
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parser.feed(decoder.decode(value, { stream: true }));
      }
    } finally {
      onConnected(false);
    }
    return true;
  };

  const run = () => {
    open()
      .catch(() => true)
      .then((again) => {
        if (again && !controller.signal.aborted) retry = setTimeout(run, EVENTS_RETRY_MS);
      });
  };
  run();
  return () => {
    controller.abort();
    clearTimeout(retry);
  };
}

// ---------------------------------------------------------------------------
// Devices and message traces (support staff)

export interface Device {
  id: number;
  pin: string;
  user_id: number | null;
  model: string;
  os_version: string;
  carrier: string;
  /** Holds a transport key: it can be sent IT policies and service books. */
  activated: boolean;
  applied_policy_id: number | null;
  /** The policy's name, or "Default" when no IT policy applies to the user. */
  applied_policy_name: string | null;
  policy_applied_at: string | null;
  last_contact_at: string | null;
  created_at: string;
}

export interface MessageSummary {
  ref_id: string;
  direction: 'to_device' | 'from_device';
  status: string;
  subject: string;
  user_id: number | null;
  device_id: number | null;
  created_at: string;
  updated_at: string;
}

export interface DeviceDetail extends Device {
  user: User | null;
  statistics: Record<string, number | string | null> | null;
  diagnostics: { reported_at: string; report: unknown }[];
  recent_messages: MessageSummary[];
  pending_messages: number;
  /** Whether the Messaging Agent reaches the user's mailbox, and if not why. */
  mailbox: { state: 'starting' | 'watching' | 'error'; error: string | null; error_at: string | null; last_uid: number } | null;
}

export interface MessageTrace extends MessageSummary {
  hops: { hop: string; at: string; detail: string }[];
}

export async function findDeviceByPin(pin: string): Promise<Device[]> {
  return request(`/api/devices${query({ pin })}`);
}

export async function getDevice(id: number): Promise<DeviceDetail> {
  return request(`/api/devices/${id}`);
}

export async function getUserDevices(userId: number): Promise<Device[]> {
  return request(`/api/users/${userId}/devices`);
}

export type ResendWhat = 'policy' | 'service_books';

export interface ResendRequested {
  what: ResendWhat;
  device_id: number;
  pin: string;
}

/** Has the Policy Service send the user's IT policy or service books again to the user's activated device. */
export async function resendToDevice(userId: number, what: ResendWhat): Promise<ResendRequested> {
  return request(`/api/users/${userId}/resend`, { method: 'POST', body: { what } });
}

export async function traceMessage(refId: string): Promise<MessageTrace> {
  return request(`/api/messages/${encodeURIComponent(refId.trim())}`);
}

// ---------------------------------------------------------------------------
// IT policies

/** One rule of the IT policy catalog, with what it accepts. */
export interface PolicyRule {
  name: string;
  title: string;
  kind: 'bool' | 'int' | 'choice' | 'list';
  min: number | null;
  max: number | null;
  unit: string | null;
  options: string[];
  default: unknown;
  /** In words, e.g. "4–14 characters". */
  accepts: string;
}

export interface Policy {
  id: number;
  name: string;
  description: string;
  is_default: boolean;
  created_at: string;
  updated_at: string;
}

export interface PolicySummary extends Policy {
  rules: number;
  assignments: number;
}

export interface PolicyAssignment {
  id: number;
  policy_id: number;
  target: 'user' | 'group';
  user_id: number | null;
  group_id: number | null;
  name: string;
  rank: number;
}

export interface PolicyDetail extends Policy {
  rules: Record<string, unknown>;
  assignments: PolicyAssignment[];
}

export interface PolicyForm {
  name: string;
  description: string;
  rules: Record<string, unknown>;
  is_default: boolean;
}

export interface ResolvedPolicy {
  user_id: number;
  mode: string;
  policies: {
    policy_id: number;
    policy_name: string;
    via: 'user' | 'group' | 'default';
    group_id: number | null;
    group_name: string | null;
    rank: number | null;
  }[];
  rules: { name: string; title: string; value: unknown; policy_name: string | null }[];
}

export async function listPolicyRules(): Promise<PolicyRule[]> {
  return request('/api/policy-rules');
}

export async function listPolicies(): Promise<PolicySummary[]> {
  return request('/api/policies');
}

export async function getPolicy(id: number): Promise<PolicyDetail> {
  return request(`/api/policies/${id}`);
}

export async function createPolicy(form: PolicyForm): Promise<PolicyDetail> {
  return request('/api/policies', { method: 'POST', body: form });
}

export async function updatePolicy(id: number, form: PolicyForm): Promise<PolicyDetail> {
  return request(`/api/policies/${id}`, { method: 'PUT', body: form });
}

export async function deletePolicy(id: number): Promise<void> {
  await request(`/api/policies/${id}`, { method: 'DELETE' });
}

export async function assignPolicy(
  id: number,
  target: { user_id: number } | { group_id: number; rank: number },
): Promise<PolicyAssignment> {
  return request(`/api/policies/${id}/assignments`, { method: 'POST', body: target });
}

export async function unassignPolicy(id: number, assignmentId: number): Promise<void> {
  await request(`/api/policies/${id}/assignments/${assignmentId}`, { method: 'DELETE' });
}

export async function getResolvedPolicy(userId: number): Promise<ResolvedPolicy> {
  return request(`/api/users/${userId}/policy`);
}

// ---------------------------------------------------------------------------
// Activation

export interface Activation {
  user_id: number;
  status: string;
  password: {
    created_at: string;
    expires_at: string;
    expired: boolean;
    failed_attempts: number;
    attempts_left: number;
  } | null;
  steps: { status: string; at: string }[];
}

export async function getActivation(userId: number): Promise<Activation> {
  return request(`/api/users/${userId}/activation`);
}

/** Sets `password`, or generates one when it is absent. */
export async function setActivationPassword(
  userId: number,
  form: { password?: string; lifetime_hours?: number; email_user?: boolean },
): Promise<{
  activation: Activation;
  generated_password: string | null;
  email: { to: string; sent: boolean; error: string | null } | null;
}> {
  return request(`/api/users/${userId}/activation-password`, { method: 'PUT', body: form });
}

// ---------------------------------------------------------------------------
// Global message filters

export interface FilterCondition {
  field: 'from' | 'to' | 'cc' | 'bcc' | 'subject' | 'importance';
  text?: string | null;
  importance?: 'high' | 'normal' | 'low' | null;
}

export type FilterAction = 'forward' | 'forward_priority' | 'do_not_forward';

export interface MessageFilter {
  id: number;
  name: string;
  position: number;
  enabled: boolean;
  conditions: FilterCondition[];
  action: FilterAction;
}

export interface FilterForm {
  name: string;
  enabled: boolean;
  conditions: FilterCondition[];
  action: FilterAction;
}

export async function listFilters(): Promise<MessageFilter[]> {
  return request('/api/filters');
}

export async function createFilter(form: FilterForm): Promise<MessageFilter> {
  return request('/api/filters', { method: 'POST', body: form });
}

export async function updateFilter(id: number, form: FilterForm): Promise<MessageFilter> {
  return request(`/api/filters/${id}`, { method: 'PUT', body: form });
}

export async function deleteFilter(id: number): Promise<void> {
  await request(`/api/filters/${id}`, { method: 'DELETE' });
}

export async function reorderFilters(ids: number[]): Promise<MessageFilter[]> {
  return request('/api/filters/order', { method: 'PUT', body: { ids } });
}

// ---------------------------------------------------------------------------
// Directories (MailStore Service) and components

export interface DirectorySyncRun {
  id: number;
  kind: 'full' | 'incremental';
  started_at: string;
  finished_at: string | null;
  outcome: 'running' | 'succeeded' | 'failed';
  entries_read: number;
  created: number;
  updated: number;
  removed: number;
  errors: number;
  message: string;
}

export interface DirectorySync {
  running: boolean;
  full: boolean;
  started_at: string;
  started_by: string;
  phase: string;
  entries_read: number;
  percent: number;
  error: { code: string; message: string } | null;
}

export interface Directory {
  name: string;
  kind: 'openldap' | 'active_directory';
  url: string;
  starttls: boolean;
  base_dn: string;
  bind_dn: string;
  sync_interval_secs: number;
  full_sync_interval_secs: number;
  sync: DirectorySync | null;
  runs: DirectorySyncRun[];
}

export async function listDirectories(): Promise<Directory[]> {
  return request('/api/directories');
}

export async function getDirectory(name: string): Promise<Directory> {
  return request(`/api/directories/${encodeURIComponent(name)}`);
}

export async function startDirectorySync(name: string, full: boolean): Promise<Directory> {
  return request(`/api/directories/${encodeURIComponent(name)}/sync`, { method: 'POST', body: { full } });
}

export async function restartComponent(id: string): Promise<{ id: string; name: string; message: string }> {
  return request(`/api/components/${encodeURIComponent(id)}/restart`, { method: 'POST' });
}

// ---------------------------------------------------------------------------
// Message statistics

export interface MessageCounters {
  forwarded: number;
  filtered: number;
  pending: number;
  delivered: number;
  expired: number;
  failed: number;
  sent: number;
  updated_at: string | null;
}

export interface StatisticsReport {
  global: MessageCounters;
  busiest: (MessageCounters & { user_id: number; display_name: string; email: string })[];
}

// Wireless synchronization of organizer data

export type OrganizerDatabase = 'contacts' | 'calendar' | 'tasks' | 'memos';
export type SyncDirection = 'server_to_device' | 'device_to_server' | 'bidirectional';
export type ConflictResolution = 'server_wins' | 'device_wins';

export interface SyncSetting {
  database: OrganizerDatabase;
  enabled: boolean;
  direction: SyncDirection;
  conflict: ConflictResolution;
}

export interface UserSync {
  user_id: number;
  display_name: string;
  email: string;
  databases: {
    database: OrganizerDatabase;
    state: 'slow_sync' | 'in_sync' | 'error';
    error: string | null;
    error_at: string | null;
    last_sync_at: string | null;
  }[];
  item_errors: { database: OrganizerDatabase; item: string; side: 'server' | 'device'; message: string; at: string }[];
}

export interface SyncOverview {
  organizer_server: string | null;
  poll_secs: number;
  settings: SyncSetting[];
  counts: { users: number; in_sync: number; slow_sync: number; error: number; item_errors: number };
  users: Page<UserSync>;
}

export async function getSync(page = 1, perPage = 50): Promise<SyncOverview> {
  return request(`/api/sync${query({ page, per_page: perPage })}`);
}

export async function setSyncSetting(
  database: OrganizerDatabase,
  change: Partial<Omit<SyncSetting, 'database'>>,
): Promise<SyncSetting> {
  return request(`/api/sync/${database}`, { method: 'PUT', body: change });
}

// The wireless network connection (SRP)

export interface WirelessSettings {
  configured: boolean;
  srp_id: string | null;
  /** Whether an SRP authentication key is stored; the key itself is never shown. */
  key_set: boolean;
  relay_host: string | null;
  relay_port: number;
  cal_licences: number;
  /** Users with an activated device. */
  licences_in_use: number;
  updated_at: string | null;
  link: { connected: boolean; srp_id: string | null; relay: string | null; since: string | null; last_error: string | null };
}

export interface WirelessForm {
  srp_id: string;
  /** Left out: the stored key of this SRP ID is kept. */
  srp_key?: string;
  relay_host: string;
  relay_port: number;
  cal_licences: number;
}

export async function getWireless(): Promise<WirelessSettings> {
  return request('/api/wireless');
}

export async function setWireless(form: WirelessForm): Promise<WirelessSettings> {
  return request('/api/wireless', { method: 'PUT', body: form });
}

export async function getStatistics(): Promise<StatisticsReport> {
  return request('/api/statistics');
}

// ---------------------------------------------------------------------------
// Software configurations

export type Disposition = 'required' | 'optional' | 'disallowed';

export interface SoftwareApplication {
  name: string;
  version: string;
  disposition: Disposition;
}

export interface SoftwareSummary {
  id: number;
  name: string;
  description: string;
  created_at: string;
  applications: number;
  assignments: number;
}

export interface SoftwareAssignment {
  id: number;
  target: 'user' | 'group';
  user_id: number | null;
  group_id: number | null;
  name: string;
}

export interface SoftwareDetail {
  id: number;
  name: string;
  description: string;
  created_at: string;
  applications: SoftwareApplication[];
  assignments: SoftwareAssignment[];
}

export interface SoftwareForm {
  name: string;
  description: string;
  applications?: SoftwareApplication[];
}

export async function listSoftware(): Promise<SoftwareSummary[]> {
  return request('/api/software');
}

export async function getSoftware(id: number): Promise<SoftwareDetail> {
  return request(`/api/software/${id}`);
}

export async function createSoftware(form: SoftwareForm): Promise<SoftwareDetail> {
  return request('/api/software', { method: 'POST', body: form });
}

export async function updateSoftware(id: number, form: SoftwareForm): Promise<SoftwareDetail> {
  return request(`/api/software/${id}`, { method: 'PUT', body: form });
}

export async function deleteSoftware(id: number): Promise<void> {
  await request(`/api/software/${id}`, { method: 'DELETE' });
}

export async function assignSoftware(
  id: number,
  target: { user_id: number } | { group_id: number },
): Promise<SoftwareAssignment> {
  return request(`/api/software/${id}/assignments`, { method: 'POST', body: target });
}

export async function unassignSoftware(id: number, assignmentId: number): Promise<void> {
  await request(`/api/software/${id}/assignments/${assignmentId}`, { method: 'DELETE' });
}

/** One device's copy of an IT administration command. */
export interface DeviceCommand {
  command_id: number;
  kind: 'lock' | 'wipe_all' | 'wipe_work' | 'new_key';
  state: 'queued' | 'sent' | 'acknowledged' | 'failed' | 'expired';
  detail: string;
  updated_at: string;
}

export interface DeviceCommandForm {
  kind: DeviceCommand['kind'];
  password?: string;
  delay_secs?: number;
  /** The device's PIN typed again, for wipes. */
  confirm_pin?: string;
}

export async function sendDeviceCommand(deviceId: number, form: DeviceCommandForm): Promise<DeviceCommand> {
  return request(`/api/devices/${deviceId}/commands`, { method: 'POST', body: form });
}

export async function listDeviceCommands(deviceId: number): Promise<DeviceCommand[]> {
  return request(`/api/devices/${deviceId}/commands`);
}
