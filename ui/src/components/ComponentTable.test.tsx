import { describe, expect, it } from 'vitest';
import { render, screen, within } from '@testing-library/react';
import { MantineProvider } from '@mantine/core';
import { ComponentTable } from './ComponentTable';
import { sampleHealth } from '../test/fixtures';

const now = new Date('2026-11-27T01:10:05Z');

function renderTable() {
  return render(
    <MantineProvider>
      <ComponentTable components={sampleHealth().components} now={now} />
    </MantineProvider>,
  );
}

describe('ComponentTable', () => {
  it('renders one row per component, in server order', () => {
    renderTable();
    const table = screen.getByTestId('component-table');
    const rows = within(table).getAllByTestId(/^component-row-/);
    expect(rows.map((r) => r.getAttribute('data-testid'))).toEqual([
      'component-row-messaging_agent',
      'component-row-policy_service',
      'component-row-synchronization_service',
      'component-row-mailstore_service',
    ]);
    expect(within(rows[0]!).getByText('Messaging Agent')).toBeTruthy();
    expect(within(rows[3]!).getByText('MailStore Service')).toBeTruthy();
  });

  it('shows each state as a badge', () => {
    renderTable();
    expect(screen.getByTestId('component-state-messaging_agent').textContent).toBe('running');
    expect(screen.getByTestId('component-state-policy_service').textContent).toBe('restarting');
    expect(screen.getByTestId('component-state-synchronization_service').textContent).toBe('starting');
    expect(screen.getByTestId('component-state-mailstore_service').textContent).toBe('failed');
    expect(screen.getByTestId('component-state-mailstore_service').getAttribute('data-state')).toBe('failed');
  });

  it('shows the last heartbeat as local time and how long ago', () => {
    renderTable();
    const row = screen.getByTestId('component-row-messaging_agent');
    expect(within(row).getByText('10 minutes ago')).toBeTruthy();
    const time = row.querySelector('time');
    expect(time?.getAttribute('datetime')).toBe('2026-11-27T01:00:05.000Z');
    expect(time?.textContent).toContain('2026');

    const mailstore = screen.getByTestId('component-row-mailstore_service');
    expect(within(mailstore).getByText('40 minutes ago')).toBeTruthy();
  });

  it('says "never" when a component has not sent a heartbeat', () => {
    renderTable();
    const row = screen.getByTestId('component-row-synchronization_service');
    expect(within(row).getByText('never')).toBeTruthy();
  });

  it('shows restarts and failure detail', () => {
    renderTable();
    const row = screen.getByTestId('component-row-policy_service');
    expect(within(row).getByText('2')).toBeTruthy();
    expect(within(row).getByText('missed 2 heartbeats; restarted')).toBeTruthy();
    const ok = screen.getByTestId('component-row-messaging_agent');
    expect(within(ok).getByText('—')).toBeTruthy();
  });

  it('says so when there are no components', () => {
    render(
      <MantineProvider>
        <ComponentTable components={[]} now={now} />
      </MantineProvider>,
    );
    expect(screen.getByText('The server reported no components.')).toBeTruthy();
  });
});
