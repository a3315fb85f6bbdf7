import { Alert, Badge, Group, Loader, NativeSelect, Pagination, Paper, SimpleGrid, Stack, Switch, Table, Text, Title } from '@mantine/core';
import { useCallback, useEffect, useState } from 'react';
import {
  getSync,
  setSyncSetting,
  type ConflictResolution,
  type SyncDirection,
  type SyncOverview,
  type SyncSetting,
  type UserSync,
} from '../api';
import { ErrorAlert } from '../components/ErrorAlert';
import { formatLocalTime } from '../time';

const PER_PAGE = 50;

export const DATABASE_NAMES: Record<string, string> = {
  contacts: 'Contacts',
  calendar: 'Calendar',
  tasks: 'Tasks',
  memos: 'Memos',
};

const DIRECTIONS: { value: SyncDirection; label: string }[] = [
  { value: 'bidirectional', label: 'Both ways' },
  { value: 'server_to_device', label: 'Server to device' },
  { value: 'device_to_server', label: 'Device to server' },
];

const CONFLICTS: { value: ConflictResolution; label: string }[] = [
  { value: 'server_wins', label: 'Server wins' },
  { value: 'device_wins', label: 'Device wins' },
];

/** One database's setting in words: "Contacts: on, both ways, server wins". */
export function describeSetting(s: SyncSetting): string {
  const name = DATABASE_NAMES[s.database] ?? s.database;
  if (!s.enabled) return `${name}: off`;
  const direction = DIRECTIONS.find((d) => d.value === s.direction)?.label.toLowerCase() ?? s.direction;
  const conflict = CONFLICTS.find((c) => c.value === s.conflict)?.label.toLowerCase() ?? s.conflict;
  return `${name}: on, ${direction}, ${conflict}`;
}

/** Where one user's databases stand, e.g. "Contacts in sync, Calendar failing". */
export function describeUserSync(u: UserSync): string {
  if (u.databases.length === 0) return 'not synchronized yet';
  return u.databases
    .map((d) => {
      const state = d.state === 'in_sync' ? 'in sync' : d.state === 'slow_sync' ? 'slow sync running' : 'failing';
      return `${DATABASE_NAMES[d.database] ?? d.database} ${state}`;
    })
    .join(', ');
}

/** Wireless synchronization: per-database settings and each user's state. */
export function SyncPage({ canWrite }: { canWrite: boolean }) {
  const [overview, setOverview] = useState<SyncOverview | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [page, setPage] = useState(1);
  const [saved, setSaved] = useState<string | null>(null);

  const load = useCallback(() => {
    getSync(page, PER_PAGE)
      .then((o) => {
        setOverview(o);
        setError(null);
      })
      .catch(setError);
  }, [page]);
  useEffect(load, [load]);

  const change = async (s: SyncSetting, update: Partial<Omit<SyncSetting, 'database'>>) => {
    setError(null);
    setSaved(null);
    const put = (setting: SyncSetting) =>
      setOverview((o) => o && { ...o, settings: o.settings.map((x) => (x.database === setting.database ? setting : x)) });
    // Shown at once; put back if the server refuses.
    put({ ...s, ...update });
    try {
      const after = await setSyncSetting(s.database, update);
      put(after);
      setSaved(`${describeSetting(after)}. Devices are told within ${overview?.poll_secs ?? 60} seconds.`);
    } catch (err) {
      put(s);
      setError(err);
    }
  };

  return (
    <Stack gap="md">
      <Title order={2}>Synchronization</Title>
      <ErrorAlert error={error} />
      {!overview && !error && <Loader size="sm" />}
      {overview && (
        <>
          {overview.organizer_server ? (
            <Text size="sm" c="dimmed" data-testid="sync-server">
              Organizer server: {overview.organizer_server}
            </Text>
          ) : (
            <Alert color="gray" variant="light" data-testid="sync-server">
              No organizer server is configured (<code>[sync] url</code>): wireless synchronization is off. The settings
              below apply once it is set.
            </Alert>
          )}
          <Paper withBorder p="md">
            <Stack gap="sm">
              <Title order={3} size="h5">
                Databases
              </Title>
              <Table data-testid="sync-settings" verticalSpacing="xs">
                <Table.Thead>
                  <Table.Tr>
                    <Table.Th>Database</Table.Th>
                    <Table.Th>Synchronized</Table.Th>
                    <Table.Th>Direction</Table.Th>
                    <Table.Th>When both sides changed a record</Table.Th>
                  </Table.Tr>
                </Table.Thead>
                <Table.Tbody>
                  {overview.settings.map((s) => {
                    const name = DATABASE_NAMES[s.database] ?? s.database;
                    return (
                      <Table.Tr key={s.database} data-testid={`sync-setting-${s.database}`}>
                        <Table.Td>{name}</Table.Td>
                        <Table.Td>
                          <Switch
                            aria-label={`Synchronize ${name}`}
                            checked={s.enabled}
                            disabled={!canWrite}
                            onChange={(e) => void change(s, { enabled: e.currentTarget.checked })}
                          />
                        </Table.Td>
                        <Table.Td>
                          <NativeSelect
                            aria-label={`Direction for ${name}`}
                            data={DIRECTIONS}
                            value={s.direction}
                            disabled={!canWrite || !s.enabled}
                            onChange={(e) => void change(s, { direction: e.currentTarget.value as SyncDirection })}
                          />
                        </Table.Td>
                        <Table.Td>
                          <NativeSelect
                            aria-label={`Conflict resolution for ${name}`}
                            data={CONFLICTS}
                            value={s.conflict}
                            disabled={!canWrite || !s.enabled}
                            onChange={(e) => void change(s, { conflict: e.currentTarget.value as ConflictResolution })}
                          />
                        </Table.Td>
                      </Table.Tr>
                    );
                  })}
                </Table.Tbody>
              </Table>
              {saved && (
                <Text size="sm" c="teal" data-testid="sync-saved">
                  {saved}
                </Text>
              )}
            </Stack>
          </Paper>
          <SimpleGrid cols={{ base: 2, md: 5 }} data-testid="sync-counts">
            <Count label="Users synchronized" value={overview.counts.users} />
            <Count label="Databases in sync" value={overview.counts.in_sync} />
            <Count label="Slow syncs running" value={overview.counts.slow_sync} />
            <Count label="Databases failing" value={overview.counts.error} color={overview.counts.error > 0 ? 'red' : undefined} />
            <Count label="Records skipped" value={overview.counts.item_errors} color={overview.counts.item_errors > 0 ? 'orange' : undefined} />
          </SimpleGrid>
          <Paper withBorder p="md">
            <Stack gap="sm">
              <Title order={3} size="h5">
                Users
              </Title>
              {overview.users.items.length === 0 ? (
                <Text size="sm" c="dimmed" data-testid="sync-no-users">
                  No device has synchronized yet.
                </Text>
              ) : (
                <Table data-testid="sync-users" verticalSpacing="xs">
                  <Table.Thead>
                    <Table.Tr>
                      <Table.Th>User</Table.Th>
                      <Table.Th>Databases</Table.Th>
                      <Table.Th>Problems</Table.Th>
                    </Table.Tr>
                  </Table.Thead>
                  <Table.Tbody>
                    {overview.users.items.map((u) => (
                      <Table.Tr key={u.user_id}>
                        <Table.Td>
                          <Text size="sm">{u.display_name}</Text>
                          <Text size="xs" c="dimmed">
                            {u.email}
                          </Text>
                        </Table.Td>
                        <Table.Td>
                          <Group gap={4}>
                            {u.databases.map((d) => (
                              <Badge
                                key={d.database}
                                variant="light"
                                color={d.state === 'in_sync' ? 'green' : d.state === 'slow_sync' ? 'blue' : 'red'}
                                title={d.last_sync_at ? `last synchronized ${formatLocalTime(new Date(d.last_sync_at))}` : undefined}
                              >
                                {DATABASE_NAMES[d.database] ?? d.database}: {d.state.replace('_', ' ')}
                              </Badge>
                            ))}
                          </Group>
                        </Table.Td>
                        <Table.Td>
                          <Stack gap={2}>
                            {u.databases
                              .filter((d) => d.state === 'error' && d.error)
                              .map((d) => (
                                <Text key={d.database} size="xs" c="red">
                                  {DATABASE_NAMES[d.database]}: {d.error}
                                </Text>
                              ))}
                            {u.item_errors.map((e) => (
                              <Text key={`${e.database}-${e.item}`} size="xs" c="orange">
                                {DATABASE_NAMES[e.database]} record {e.item} ({e.side}) skipped: {e.message}
                              </Text>
                            ))}
                          </Stack>
                        </Table.Td>
                      </Table.Tr>
                    ))}
                  </Table.Tbody>
                </Table>
              )}
              {overview.users.total > PER_PAGE && (
                <Pagination total={Math.ceil(overview.users.total / PER_PAGE)} value={page} onChange={setPage} />
              )}
            </Stack>
          </Paper>
        </>
      )}
    </Stack>
  );
}

function Count({ label, value, color }: { label: string; value: number; color?: string }) {
  return (
    <Paper withBorder p="sm">
      <Text size="xs" c="dimmed" tt="uppercase" fw={600}>
        {label}
      </Text>
      <Text fw={600} size="lg" c={color}>
        {value}
      </Text>
    </Paper>
  );
}
