import { Badge } from '@mantine/core';
import type { ComponentState, HealthDocument } from '../api';

const STATE_COLORS: Record<ComponentState, string> = {
  running: 'green',
  starting: 'blue',
  restarting: 'yellow',
  stopped: 'gray',
  failed: 'red',
};

/** Colour for a component state; unknown states (newer server) are grey. */
export function stateColor(state: string): string {
  return STATE_COLORS[state as ComponentState] ?? 'gray';
}

export function StateBadge({ state, testId }: { state: string; testId?: string }) {
  return (
    // max-content: a narrow table column must not cut the state to "RUNN…".
    <Badge color={stateColor(state)} variant="light" miw="max-content" data-testid={testId} data-state={state}>
      {state}
    </Badge>
  );
}

export function OverallStatusBadge({ status }: { status: HealthDocument['status'] | string }) {
  return (
    <Badge
      size="lg"
      color={status === 'ok' ? 'green' : 'orange'}
      variant="filled"
      data-testid="overall-status"
      data-status={status}
    >
      {status}
    </Badge>
  );
}
