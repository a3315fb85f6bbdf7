import { describe, expect, it, vi, beforeEach } from 'vitest';
import { fireEvent, render, screen, waitFor, within } from '@testing-library/react';
import { MantineProvider } from '@mantine/core';
import { ServersPage } from './ServersPage';
import { resetEndpoint } from '../api';
import { LiveStatusContext } from '../hooks/useLiveStatus';
import { jsonResponse, sampleHealth } from '../test/fixtures';

function renderApp() {
  return render(
    <MantineProvider>
      <ServersPage />
    </MantineProvider>,
  );
}

beforeEach(() => {
  resetEndpoint();
});

describe('Servers and components page', () => {
  it('shows a loader, then the server summary and the component table', async () => {
    let answer: (r: Response) => void = () => {};
    vi.stubGlobal(
      'fetch',
      vi.fn(() => new Promise<Response>((resolve) => (answer = resolve))),
    );
    renderApp();

    expect(await screen.findByTestId('health-loading')).toBeTruthy();

    answer(jsonResponse(sampleHealth()));

    const table = await screen.findByTestId('component-table');
    expect(within(table).getAllByTestId(/^component-row-/)).toHaveLength(4);
    expect(screen.getByTestId('overall-status').textContent).toBe('degraded');
    expect(screen.getByTestId('server-version').textContent).toBe('0.1.0');
    expect(screen.getByTestId('server-name').textContent).toBe('bes-lab-01');
    expect(screen.queryByTestId('health-loading')).toBeNull();
    expect(screen.queryByTestId('api-error')).toBeNull();
  });

  it('raises an alarm for an altered audit log and a database that does not answer', async () => {
    vi.stubGlobal(
      'fetch',
      vi.fn().mockResolvedValue(
        jsonResponse({
          ...sampleHealth(),
          audit_alarm: { id: 42, reason: 'its content does not match its hash' },
          database: { status: 'unreachable', error: 'no answer within 5 seconds' },
        }),
      ),
    );
    renderApp();

    const audit = await screen.findByTestId('audit-alarm');
    expect(audit.textContent).toContain('Entry 42: its content does not match its hash');
    expect(screen.getByTestId('database-alarm').textContent).toContain('no answer within 5 seconds');
  });

  it('raises no alarm while the database answers and the audit log is intact', async () => {
    vi.stubGlobal(
      'fetch',
      vi.fn().mockResolvedValue(jsonResponse({ ...sampleHealth(), database: { status: 'ok' } })),
    );
    renderApp();

    await screen.findByTestId('component-table');
    expect(screen.queryByTestId('audit-alarm')).toBeNull();
    expect(screen.queryByTestId('database-alarm')).toBeNull();
  });

  it('shows the error code and message with a Retry button that recovers', async () => {
    const fetchMock = vi
      .fn()
      .mockRejectedValueOnce(new TypeError('Failed to fetch'))
      .mockResolvedValue(jsonResponse({ ...sampleHealth(), status: 'ok' }));
    vi.stubGlobal('fetch', fetchMock);
    renderApp();

    const alert = await screen.findByTestId('api-error');
    expect(alert.textContent).toContain('SERVER_UNREACHABLE');
    expect(alert.textContent).toContain('The Bramble server could not be reached at');
    expect(screen.queryByTestId('component-table')).toBeNull();

    fireEvent.click(within(alert).getByRole('button', { name: /retry/i }));

    await waitFor(() => expect(screen.getByTestId('overall-status').textContent).toBe('ok'));
    expect(screen.queryByTestId('api-error')).toBeNull();
    expect(fetchMock).toHaveBeenCalledTimes(2);
  });

  it('shows the code and message of a server error document', async () => {
    vi.stubGlobal(
      'fetch',
      vi.fn().mockResolvedValue(
        jsonResponse({ code: 'NOT_AUTHORISED', message: 'Sign in as an administrator first.' }, 401),
      ),
    );
    renderApp();

    const alert = await screen.findByTestId('api-error');
    expect(alert.getAttribute('data-code')).toBe('NOT_AUTHORISED');
    expect(within(alert).getByText('Sign in as an administrator first.')).toBeTruthy();
  });

  it('keeps the last report on screen, marked as stale, when a later poll fails', async () => {
    const fetchMock = vi
      .fn()
      .mockResolvedValueOnce(jsonResponse({ ...sampleHealth(), status: 'ok' }))
      .mockRejectedValue(new TypeError('Failed to fetch'));
    vi.stubGlobal('fetch', fetchMock);
    render(
      <MantineProvider>
        <ServersPage pollIntervalMs={30} />
      </MantineProvider>,
    );

    const alert = await screen.findByTestId('api-error');
    expect(alert.textContent).toContain('SERVER_UNREACHABLE');
    expect(alert.textContent).toContain('Showing the last report received at');
    expect(screen.getByTestId('component-table')).toBeTruthy();
    expect(screen.getByTestId('overall-status').textContent).toBe('ok');
    expect(screen.getByTestId('overall-status-stale')).toBeTruthy();
  });

  it('polls again after the interval and shows the new state', async () => {
    const degraded = sampleHealth();
    const recovered = {
      ...sampleHealth(),
      status: 'ok' as const,
      components: sampleHealth().components.map((c) => ({ ...c, state: 'running' as const })),
    };
    const fetchMock = vi
      .fn()
      .mockResolvedValueOnce(jsonResponse(degraded))
      .mockImplementation(async () => jsonResponse(recovered));
    vi.stubGlobal('fetch', fetchMock);
    render(
      <MantineProvider>
        <ServersPage pollIntervalMs={30} />
      </MantineProvider>,
    );

    await waitFor(() => expect(screen.getByTestId('overall-status').textContent).toBe('degraded'));
    await waitFor(() => expect(screen.getByTestId('overall-status').textContent).toBe('ok'));
    expect(screen.getByTestId('component-state-mailstore_service').textContent).toBe('running');
  });

  it('shows a live status from the event stream without waiting for the next poll', async () => {
    const fetchMock = vi.fn().mockImplementation(async () => jsonResponse(sampleHealth()));
    vi.stubGlobal('fetch', fetchMock);
    const page = (status: ReturnType<typeof sampleHealth> | null) => (
      <MantineProvider>
        <LiveStatusContext.Provider
          value={{
            status: status && { health: status, audit_head: 1 },
            receivedAt: status && new Date(),
            connected: status !== null,
          }}
        >
          <ServersPage pollIntervalMs={60_000} />
        </LiveStatusContext.Provider>
      </MantineProvider>
    );
    const { rerender } = render(page(null));
    await waitFor(() => expect(screen.getByTestId('overall-status').textContent).toBe('degraded'));

    const recovered = {
      ...sampleHealth(),
      status: 'ok' as const,
      components: sampleHealth().components.map((c) => ({ ...c, state: 'running' as const })),
    };
    rerender(page(recovered));
    await waitFor(() => expect(screen.getByTestId('overall-status').textContent).toBe('ok'));
    expect(screen.getByTestId('component-state-mailstore_service').textContent).toBe('running');
    expect(fetchMock).toHaveBeenCalledTimes(1);
  });

  it('shows the wireless network link, connected or not configured', async () => {
    const connected = {
      ...sampleHealth(),
      wireless: {
        connected: true,
        srp_id: 'S80001234',
        relay: 'relay.example.com:3101',
        since: '2026-11-27T01:00:00Z',
        last_error: null,
        reconnects: 0,
        lan_devices: ['2A3B4C5D'],
      },
    };
    vi.stubGlobal('fetch', vi.fn().mockResolvedValue(jsonResponse(connected)));
    const view = render(
      <MantineProvider>
        <ServersPage pollIntervalMs={60_000} />
      </MantineProvider>,
    );
    expect((await screen.findByTestId('wireless-state')).textContent).toBe('Connected');
    expect(screen.getByTestId('wireless-srp-id').textContent).toBe('S80001234');
    expect(screen.getByTestId('wireless-lan-devices').textContent).toBe('1');
    expect(screen.queryByTestId('wireless-error')).toBeNull();
    view.unmount();

    const unconfigured = {
      ...sampleHealth(),
      wireless: {
        connected: false,
        srp_id: null,
        relay: null,
        since: null,
        last_error: 'no wireless network connection configured',
        reconnects: 0,
        lan_devices: [],
      },
    };
    vi.stubGlobal('fetch', vi.fn().mockResolvedValue(jsonResponse(unconfigured)));
    render(
      <MantineProvider>
        <ServersPage pollIntervalMs={60_000} />
      </MantineProvider>,
    );
    expect((await screen.findByTestId('wireless-state')).textContent).toBe('Not configured');
    expect(screen.getByTestId('wireless-error').textContent).toContain('bramble srp set');
  });
});
