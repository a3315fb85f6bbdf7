import { Button, Table, Text } from '@mantine/core';
import type { ComponentHealth } from '../api';
import { StateBadge } from './StateBadge';
import { Timestamp } from './Timestamp';

export function ComponentTable({
  components,
  now,
  onRestart,
}: {
  components: ComponentHealth[];
  now: Date;
  /** When given, each row offers a Restart button (servers.write). */
  onRestart?: (component: ComponentHealth) => void;
}) {
  return (
    <div style={{ overflowX: 'auto' }}>
      <Table
        striped
        highlightOnHover
        verticalSpacing="sm"
        miw={640}
        data-testid="component-table"
      >
        <Table.Thead>
          <Table.Tr>
            <Table.Th>Component</Table.Th>
            <Table.Th>State</Table.Th>
            <Table.Th>Last heartbeat</Table.Th>
            <Table.Th ta="right">Restarts</Table.Th>
            <Table.Th>Detail</Table.Th>
            {onRestart && <Table.Th />}
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {components.length === 0 ? (
            <Table.Tr>
              <Table.Td colSpan={onRestart ? 6 : 5}>
                <Text size="sm" c="dimmed">
                  The server reported no components.
                </Text>
              </Table.Td>
            </Table.Tr>
          ) : (
            components.map((c) => (
              <Table.Tr key={c.id} data-testid={`component-row-${c.id}`}>
                <Table.Td>
                  <Text size="sm" fw={500}>
                    {c.name}
                  </Text>
                </Table.Td>
                <Table.Td>
                  <StateBadge state={c.state} testId={`component-state-${c.id}`} />
                </Table.Td>
                <Table.Td>
                  <Timestamp value={c.last_heartbeat} now={now} />
                </Table.Td>
                <Table.Td ta="right">
                  <Text size="sm" c={c.restarts > 0 ? 'orange.8' : undefined} fw={c.restarts > 0 ? 600 : undefined}>
                    {c.restarts}
                  </Text>
                </Table.Td>
                <Table.Td>
                  {c.detail ? (
                    <Text size="sm">{c.detail}</Text>
                  ) : (
                    <Text size="sm" c="dimmed">
                      —
                    </Text>
                  )}
                </Table.Td>
                {onRestart && (
                  <Table.Td>
                    <Button size="xs" variant="default" onClick={() => onRestart(c)} data-testid={`restart-${c.id}`}>
                      Restart
                    </Button>
                  </Table.Td>
                )}
              </Table.Tr>
            ))
          )}
        </Table.Tbody>
      </Table>
    </div>
  );
}
