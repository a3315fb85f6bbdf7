import type { HealthDocument } from '../api';

/** A health document as `bramble serve` sends it, with one unhappy component. */
export function sampleHealth(): HealthDocument {
  return {
    status: 'degraded',
    version: '0.1.0',
    server: 'bes-lab-01',
    started_at: '2026-11-27T01:00:00Z',
    components: [
      {
        id: 'messaging_agent',
        name: 'Messaging Agent',
        state: 'running',
        last_heartbeat: '2026-11-27T01:00:05Z',
        restarts: 0,
        detail: null,
      },
      {
        id: 'policy_service',
        name: 'Policy Service',
        state: 'restarting',
        last_heartbeat: '2026-11-27T00:57:05Z',
        restarts: 2,
        detail: 'missed 2 heartbeats; restarted',
      },
      {
        id: 'synchronization_service',
        name: 'Synchronization Service',
        state: 'starting',
        last_heartbeat: null,
        restarts: 0,
      },
      {
        id: 'mailstore_service',
        name: 'MailStore Service',
        state: 'failed',
        last_heartbeat: '2026-11-27T00:30:00Z',
        restarts: 5,
        detail: 'database file is locked',
      },
    ],
  };
}

export function jsonResponse(body: unknown, status = 200, statusText = ''): Response {
  return new Response(JSON.stringify(body), {
    status,
    statusText,
    headers: { 'Content-Type': 'application/json' },
  });
}
