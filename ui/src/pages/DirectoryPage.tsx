import { Badge, Button, Group, Paper, Progress, SimpleGrid, Stack, Table, Text, Title } from '@mantine/core';
import { useCallback, useEffect, useState } from 'react';
import { ApiError, getDirectory, listDirectories, startDirectorySync, type Directory, type DirectorySync } from '../api';
import { ErrorAlert } from '../components/ErrorAlert';
import { formatLocalTime } from '../time';

/** How often a running sync's progress is asked for. */
export const SYNC_POLL_MS = 400;

const PHASES: Record<string, string> = {
  idle: 'Waiting to start',
  connecting: 'Connecting and binding',
  reading_users: 'Reading users',
  reading_groups: 'Reading groups',
  writing: 'Writing to the Configuration Database',
  done: 'Finished',
  failed: 'Failed',
};

/** "Reading users: 120 entries read". */
export function describeSync(sync: DirectorySync): string {
  const phase = PHASES[sync.phase] ?? sync.phase;
  return `${sync.full ? 'Full sync' : 'Sync'}: ${phase}; ${sync.entries_read} entr${sync.entries_read === 1 ? 'y' : 'ies'} read`;
}

/** The MailStore Service's directories: settings, recent runs, and syncs on demand with their progress. */
export function DirectoryPage({ canSync }: { canSync: boolean }) {
  const [directories, setDirectories] = useState<Directory[] | null>(null);
  const [error, setError] = useState<unknown>(null);

  const load = useCallback(() => {
    listDirectories().then(setDirectories).catch(setError);
  }, []);
  useEffect(load, [load]);

  const replace = (d: Directory) => setDirectories((all) => (all ?? []).map((old) => (old.name === d.name ? d : old)));

  return (
    <Stack gap="md">
      <Title order={2}>Directory</Title>
      <Text size="sm" c="dimmed">
        The MailStore Service copies users and groups from these directories into the Configuration Database on a
        schedule; an incremental sync reads only what changed, a full sync reads everything and notices removed entries.
      </Text>
      <ErrorAlert error={error} />
      {directories && directories.length === 0 && (
        <Text size="sm" data-testid="no-directories">
          No directory is configured. Add a <code>[[directories]]</code> entry to the settings file (see the operations
          guide) and restart the server.
        </Text>
      )}
      {directories?.map((d) => <DirectoryCard key={d.name} directory={d} canSync={canSync} onChange={replace} />)}
    </Stack>
  );
}

function DirectoryCard({
  directory,
  canSync,
  onChange,
}: {
  directory: Directory;
  canSync: boolean;
  onChange: (d: Directory) => void;
}) {
  const [error, setError] = useState<unknown>(null);
  const sync = directory.sync;
  const running = sync?.running ?? false;

  // While a sync runs, follow its progress.
  useEffect(() => {
    if (!running) return;
    const timer = setInterval(() => {
      getDirectory(directory.name).then(onChange).catch(setError);
    }, SYNC_POLL_MS);
    return () => clearInterval(timer);
  }, [running, directory.name, onChange]);

  const start = async (full: boolean) => {
    setError(null);
    try {
      onChange(await startDirectorySync(directory.name, full));
    } catch (err) {
      setError(err);
    }
  };

  const failed = sync && !sync.running && sync.error;
  return (
    <Paper withBorder p="md" data-testid={`directory-${directory.name}`}>
      <Stack gap="sm">
        <Group justify="space-between">
          <Group gap="sm">
            <Title order={3} size="h4">
              {directory.name}
            </Title>
            <Badge variant="light">{directory.kind === 'active_directory' ? 'Active Directory' : 'OpenLDAP'}</Badge>
          </Group>
          {canSync && (
            <Group gap="xs">
              <Button onClick={() => start(false)} disabled={running} data-testid="sync-now">
                Sync now
              </Button>
              <Button variant="light" onClick={() => start(true)} disabled={running} data-testid="full-sync">
                Full sync
              </Button>
            </Group>
          )}
        </Group>
        <SimpleGrid cols={{ base: 1, sm: 2 }} spacing="xs">
          <Text size="sm">
            <b>URL</b> {directory.url}
            {directory.starttls ? ' (StartTLS)' : ''}
          </Text>
          <Text size="sm">
            <b>Base DN</b> {directory.base_dn || '—'}
          </Text>
          <Text size="sm">
            <b>Bind DN</b> {directory.bind_dn || 'anonymous'}
          </Text>
          <Text size="sm">
            <b>Schedule</b> every {Math.round(directory.sync_interval_secs / 60)} min, full every{' '}
            {Math.round(directory.full_sync_interval_secs / 3600)} h
          </Text>
        </SimpleGrid>
        <ErrorAlert error={error} />
        {sync && (
          <Stack gap={4} data-testid="sync-progress">
            <Progress
              value={sync.percent}
              animated={sync.running}
              striped={sync.running}
              color={failed ? 'red' : sync.running ? 'blue' : 'teal'}
              size="lg"
              aria-label="Sync progress"
              data-testid="sync-progress-bar"
              data-percent={sync.percent}
            />
            <Text size="sm" data-testid="sync-progress-text">
              {describeSync(sync)} (started by {sync.started_by} {formatLocalTime(new Date(sync.started_at))})
            </Text>
          </Stack>
        )}
        {failed && sync.error && <ErrorAlert error={new ApiError(sync.error.code, sync.error.message)} />}
        <Table data-testid="sync-runs" striped>
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Started</Table.Th>
              <Table.Th>Kind</Table.Th>
              <Table.Th>Outcome</Table.Th>
              <Table.Th ta="right">Read</Table.Th>
              <Table.Th ta="right">Created</Table.Th>
              <Table.Th ta="right">Updated</Table.Th>
              <Table.Th ta="right">Removed</Table.Th>
              <Table.Th ta="right">Errors</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {directory.runs.length === 0 && (
              <Table.Tr>
                <Table.Td colSpan={8}>
                  <Text size="sm" c="dimmed">
                    Not synced yet.
                  </Text>
                </Table.Td>
              </Table.Tr>
            )}
            {directory.runs.map((r) => (
              <Table.Tr key={r.id} data-testid="sync-run">
                <Table.Td>{formatLocalTime(new Date(r.started_at))}</Table.Td>
                <Table.Td>{r.kind}</Table.Td>
                <Table.Td>
                  <Badge color={r.outcome === 'succeeded' ? 'teal' : r.outcome === 'failed' ? 'red' : 'blue'} variant="light">
                    {r.outcome}
                  </Badge>
                  {r.message && (
                    <Text size="xs" c="dimmed">
                      {r.message}
                    </Text>
                  )}
                </Table.Td>
                <Table.Td ta="right">{r.entries_read}</Table.Td>
                <Table.Td ta="right">{r.created}</Table.Td>
                <Table.Td ta="right">{r.updated}</Table.Td>
                <Table.Td ta="right">{r.removed}</Table.Td>
                <Table.Td ta="right">{r.errors}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      </Stack>
    </Paper>
  );
}
