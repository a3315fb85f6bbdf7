// The single client for the Bramble Administration Service HTTP JSON API.
//
// Every screen talks to the server through this module. It works out where
// the server is (same origin in a browser; asked from the desktop shell when
// running inside the Tauri window), attaches credentials, and turns every
// failure into an ApiError that a screen can show to an administrator.

import { invoke } from '@tauri-apps/api/core';
import { createParser } from 'eventsource-parser';
import type { components } from './api/schema.gen';

/**
 * The API's request and response bodies, generated from the server's
 * OpenAPI description (`npm run ui:generate`); the names below are the
 * console's for them.
 */
type Schema = components['schemas'];

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
  /** "ok" when every component is running and the audit chain was last
   *  found intact, otherwise "degraded". */
  status: 'ok' | 'degraded';
  version: string;
  server: string;
  /** RFC 3339 timestamp. */
  started_at: string;
  components: ComponentHealth[];
  /** The Router's SRP link to the relay; absent from older servers. */
  wireless?: WirelessHealth;
  /** Where the last check found the audit chain broken; absent while intact. */
  audit_alarm?: { id: number; reason: string };
  /** Whether the Configuration Database answered just now (`GET /health` only). */
  database?: { status: 'ok' | 'unreachable' | string; error?: string };
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
  /** The desktop launch's secret, sent with every request (`X-Bramble-Launch`). */
  launchSecret: string | null;
  /** The first run's setup code, which the desktop shell knows (null in a browser). */
  setupCode: string | null;
}

/** Shape returned by the desktop shell's `console_endpoint` command. */
interface ConsoleEndpointReply {
  base_url: string;
  launch_secret?: string | null;
  setup_code?: string | null;
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

/**
 * The desktop window's headers: its session as a bearer token and the
 * launch's secret (none in a browser, which uses the session cookie).
 */
function shellHeaders(endpoint: Endpoint): Record<string, string> {
  const headers: Record<string, string> = {};
  const bearer = desktopToken();
  if (bearer !== null) headers.Authorization = `Bearer ${bearer}`;
  if (endpoint.launchSecret !== null) headers['X-Bramble-Launch'] = endpoint.launchSecret;
  return headers;
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
    return { baseUrl: '', launchSecret: null, setupCode: null };
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
    launchSecret: nonEmpty(reply.launch_secret),
    setupCode: nonEmpty(reply.setup_code),
  };
}

function nonEmpty(value: unknown): string | null {
  return typeof value === 'string' && value !== '' ? value : null;
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
  const endpoint = await getEndpoint();
  const url = `${endpoint.baseUrl}${path.startsWith('/') ? path : `/${path}`}`;

  const headers: Record<string, string> = { Accept: 'application/json', ...shellHeaders(endpoint) };
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
    const where = displayBase(endpoint.baseUrl);
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
export type Whoami = Schema['Whoami'];

export function can(who: Whoami | null, permission: Permission): boolean {
  return !!who && who.permissions.includes(permission);
}

export async function getSetup(): Promise<Schema['SetupState']> {
  return request('/api/setup');
}

export async function createFirstAdministrator(form: Omit<Schema['FirstAdministrator'], 'bearer'>): Promise<Whoami> {
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
export type Page<T> = Omit<Schema['UserViewPage'], 'items'> & { items: T[] };

export type User = Schema['UserView'];

export type UserForm = Schema['UserForm'];

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

export async function listUsers(params: UserQuery, signal?: AbortSignal): Promise<Schema['UserViewPage']> {
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

export type UserGroup = Schema['GroupView'];

export type GroupSummary = Schema['GroupSummary'];

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

export type GroupDetail = Schema['GroupDetail'];

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

export type Administrator = Schema['AdministratorView'];

export type Role = Schema['RoleView'];

export async function listAdministrators(): Promise<Administrator[]> {
  return request('/api/administrators');
}

export async function createAdministrator(form: Schema['NewAdministratorForm']): Promise<Administrator> {
  return request('/api/administrators', { method: 'POST', body: form });
}

export async function updateAdministrator(
  id: number,
  form: Schema['AdministratorEdit'],
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

export async function listPermissions(): Promise<Schema['PermissionInfo'][]> {
  return request('/api/permissions');
}

// ---------------------------------------------------------------------------
// Audit log

export type AuditEntry = Schema['AuditView'];

export type AuditVerification = Schema['Verification'];

export async function listAudit(page: number, perPage: number): Promise<Schema['AuditViewPage']> {
  return request(`/api/audit${query({ page, per_page: perPage })}`);
}

export async function verifyAudit(): Promise<AuditVerification> {
  return request('/api/audit/verify');
}

/** Downloads the whole audit log as a file (CSV or JSON). */
export async function downloadAuditExport(format: 'csv' | 'json'): Promise<void> {
  const endpoint = await getEndpoint();
  const { baseUrl } = endpoint;
  const headers = shellHeaders(endpoint);
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
    const endpoint = await getEndpoint();
    const response = await fetch(`${endpoint.baseUrl}/api/events`, {
      headers: { Accept: 'text/event-stream', ...shellHeaders(endpoint) },
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

export type Device = Schema['DeviceView'];

export type MessageSummary = Schema['MessageView'];

export type DeviceDetail = Schema['DeviceDetail'];

export type MessageTrace = Schema['MessageTrace'];

export async function findDeviceByPin(pin: string): Promise<Device[]> {
  return request(`/api/devices${query({ pin })}`);
}

export async function getDevice(id: number): Promise<DeviceDetail> {
  return request(`/api/devices/${id}`);
}

export async function getUserDevices(userId: number): Promise<Device[]> {
  return request(`/api/users/${userId}/devices`);
}

export type ResendWhat = Schema['ResendForm']['what'];

export type ResendRequested = Schema['ResendView'];

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
export type PolicyRule = Schema['RuleInfo'];

export type Policy = Omit<PolicySummary, 'rules' | 'assignments'>;

export type PolicySummary = Schema['PolicySummary'];

export type PolicyAssignment = Schema['AssignmentView'];

export type PolicyDetail = Schema['PolicyDetail'];

export type PolicyForm = Schema['PolicyForm'];

export type ResolvedPolicy = Schema['ResolvedView'];

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
  target: Schema['AssignmentForm'],
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

export type Activation = Schema['ActivationView'];

export async function getActivation(userId: number): Promise<Activation> {
  return request(`/api/users/${userId}/activation`);
}

/** Sets `password`, or generates one when it is absent. */
export async function setActivationPassword(
  userId: number,
  form: Schema['PasswordForm'],
): Promise<Schema['PasswordSet']> {
  return request(`/api/users/${userId}/activation-password`, { method: 'PUT', body: form });
}

// ---------------------------------------------------------------------------
// Global message filters

/** A condition as the filter editor writes it (what the server reads). */
export type FilterCondition = Schema['ConditionViewInput'];

export type FilterAction = MessageFilter['action'];

export type MessageFilter = Schema['FilterView'];

export type FilterForm = Schema['FilterForm'];

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

export type DirectorySyncRun = Schema['RunView'];

export type DirectorySync = Schema['SyncState'];

export type Directory = Schema['DirectoryView'];

export async function listDirectories(): Promise<Directory[]> {
  return request('/api/directories');
}

export async function getDirectory(name: string): Promise<Directory> {
  return request(`/api/directories/${encodeURIComponent(name)}`);
}

export async function startDirectorySync(name: string, full: boolean): Promise<Directory> {
  return request(`/api/directories/${encodeURIComponent(name)}/sync`, { method: 'POST', body: { full } });
}

export async function restartComponent(id: string): Promise<Schema['RestartRequested']> {
  return request(`/api/components/${encodeURIComponent(id)}/restart`, { method: 'POST' });
}

// ---------------------------------------------------------------------------
// Message statistics

export type MessageCounters = Schema['StatisticsView'];

export type StatisticsReport = Schema['StatisticsReport'];

// Wireless synchronization of organizer data

export type OrganizerDatabase = SyncSetting['database'];
export type SyncDirection = SyncSetting['direction'];
export type ConflictResolution = SyncSetting['conflict'];

export type SyncSetting = Schema['SyncSettingView'];

export type UserSync = Schema['UserSyncView'];

export type SyncOverview = Schema['SyncOverview'];

export async function getSync(page = 1, perPage = 50): Promise<SyncOverview> {
  return request(`/api/sync${query({ page, per_page: perPage })}`);
}

export async function setSyncSetting(
  database: OrganizerDatabase,
  change: Schema['SyncSettingForm'],
): Promise<SyncSetting> {
  return request(`/api/sync/${database}`, { method: 'PUT', body: change });
}

// The wireless network connection (SRP)

export type WirelessSettings = Schema['WirelessView'];

export type WirelessForm = Schema['WirelessForm'];

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

export type Disposition = SoftwareApplication['disposition'];

export type SoftwareApplication = Schema['ApplicationView'];

export type SoftwareSummary = Schema['SoftwareSummary'];

export type SoftwareAssignment = Schema['SoftwareAssignmentView'];

export type SoftwareDetail = Schema['SoftwareDetail'];

export type SoftwareForm = Schema['SoftwareForm'];

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
  target: Schema['SoftwareAssignmentForm'],
): Promise<SoftwareAssignment> {
  return request(`/api/software/${id}/assignments`, { method: 'POST', body: target });
}

export async function unassignSoftware(id: number, assignmentId: number): Promise<void> {
  await request(`/api/software/${id}/assignments/${assignmentId}`, { method: 'DELETE' });
}

/** One device's copy of an IT administration command. */
export type DeviceCommand = Schema['CommandView'];

export type DeviceCommandForm = Schema['CommandForm'];

export async function sendDeviceCommand(deviceId: number, form: DeviceCommandForm): Promise<DeviceCommand> {
  return request(`/api/devices/${deviceId}/commands`, { method: 'POST', body: form });
}

export async function listDeviceCommands(deviceId: number): Promise<DeviceCommand[]> {
  return request(`/api/devices/${deviceId}/commands`);
}
