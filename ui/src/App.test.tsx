import { describe, expect, it, vi, beforeEach } from 'vitest';
import { render, screen, waitFor } from '@testing-library/react';
import { MantineProvider } from '@mantine/core';
import { App } from './App';
import { resetEndpoint } from './api';
import { jsonResponse, sampleHealth } from './test/fixtures';

function renderApp() {
  return render(
    <MantineProvider>
      <App />
    </MantineProvider>,
  );
}

/** Answers by path, like the server would. */
function server(routes: Record<string, () => Response>) {
  return vi.fn((input: RequestInfo | URL) => {
    const path = new URL(String(input), 'http://console.test').pathname;
    const answer = routes[path];
    return Promise.resolve(answer ? answer() : jsonResponse({ code: 'NOT_FOUND', message: 'no such API endpoint' }, 404));
  });
}

beforeEach(() => {
  resetEndpoint();
  window.location.hash = '';
});

describe('Console start', () => {
  it('asks for the first Security Administrator while none exists', async () => {
    vi.stubGlobal('fetch', server({ '/api/setup': () => jsonResponse({ needs_first_administrator: true }) }));
    renderApp();
    expect(await screen.findByTestId('first-run-form')).toBeTruthy();
    expect(screen.getByText('Create the first Security Administrator')).toBeTruthy();
  });

  it('asks to sign in when there is no session', async () => {
    vi.stubGlobal(
      'fetch',
      server({
        '/api/setup': () => jsonResponse({ needs_first_administrator: false }),
        '/api/session': () => jsonResponse({ code: 'SESSION_REQUIRED', message: 'sign in to the console first' }, 401),
      }),
    );
    renderApp();
    expect(await screen.findByTestId('sign-in-form')).toBeTruthy();
  });

  it('shows a Junior Helpdesk only the sections its role allows', async () => {
    vi.stubGlobal(
      'fetch',
      server({
        '/api/setup': () => jsonResponse({ needs_first_administrator: false }),
        '/api/session': () =>
          jsonResponse({
            id: 4,
            login: 'junior',
            display_name: 'Junior',
            roles: ['Junior Helpdesk'],
            permissions: ['users.read', 'users.activation', 'devices.read'],
          }),
        '/api/users': () => jsonResponse({ items: [], total: 0, page: 1, per_page: 25 }),
        '/health': () => jsonResponse(sampleHealth()),
      }),
    );
    renderApp();
    await waitFor(() => expect(screen.getByTestId('nav-users')).toBeTruthy());
    expect(screen.getByTestId('nav-users').getAttribute('aria-current')).toBe('page');
    for (const hidden of ['groups', 'administrators', 'audit', 'servers', 'it-policies', 'software', 'filters', 'directory']) {
      expect(screen.queryByTestId(`nav-${hidden}`)).toBeNull();
    }
    expect(screen.getByTestId('nav-devices').getAttribute('aria-disabled')).toBeNull();
    expect(await screen.findByTestId('users-table')).toBeTruthy();
    expect(screen.queryByTestId('add-user')).toBeNull();
  });
});

describe('Audit log', () => {
  it('shows only the fields an update changed', async () => {
    const { changedFields } = await import('./pages/AuditPage');
    expect(
      changedFields(
        { display_name: 'Alice', email: 'a@example.com', updated_at: '1' },
        { display_name: 'Alice B.', email: 'a@example.com', updated_at: '2' },
      ),
    ).toEqual([{ display_name: 'Alice' }, { display_name: 'Alice B.' }]);
    expect(changedFields(null, { email: 'a@example.com' })).toEqual([null, { email: 'a@example.com' }]);
  });
});
