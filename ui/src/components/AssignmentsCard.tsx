import { Button, Group, NativeSelect, NumberInput, Paper, Stack, Table, Text, TextInput, Title } from '@mantine/core';
import { useEffect, useState } from 'react';
import { listGroups, listUsers, type GroupSummary, type User } from '../api';
import { ErrorAlert } from './ErrorAlert';
import { ConfirmDialog } from './ConfirmDialog';

/** One assignment of an IT policy or software configuration. */
export interface AssignmentRow {
  id: number;
  target: 'user' | 'group';
  name: string;
  /** Groups' order for IT policies (1 first); absent where order does not matter. */
  rank?: number;
}

/** Whom to assign to: a user, or a group (with its rank where `ranked`). */
export type AssignTarget = { user_id: number } | { group_id: number; rank?: number };

/**
 * "Assigned to": the users and groups something is assigned to, with a
 * group picker (and rank where `ranked`), a user search on the server, and
 * a confirmation before an assignment is removed.
 */
export function AssignmentsCard({
  what,
  assignments,
  emptyText,
  ranked = false,
  canWrite,
  testId,
  onAssign,
  onUnassign,
  onChanged,
}: {
  /** The name of what is assigned, for the confirmation. */
  what: string;
  assignments: AssignmentRow[];
  emptyText: string;
  ranked?: boolean;
  canWrite: boolean;
  testId: string;
  onAssign: (target: AssignTarget) => Promise<unknown>;
  onUnassign: (assignment: AssignmentRow) => Promise<unknown>;
  onChanged: () => void;
}) {
  const [groups, setGroups] = useState<GroupSummary[]>([]);
  const [users, setUsers] = useState<User[]>([]);
  const [search, setSearch] = useState('');
  const [groupId, setGroupId] = useState('');
  const [rank, setRank] = useState<number | string>(1);
  const [error, setError] = useState<unknown>(null);
  const [doomed, setDoomed] = useState<AssignmentRow | null>(null);

  useEffect(() => {
    if (!canWrite) return;
    listGroups()
      .then(setGroups)
      .catch(() => setGroups([]));
  }, [canWrite]);
  useEffect(() => {
    if (!canWrite || search === '') return;
    // The users list is searched on the server; show the first matches.
    const timer = setTimeout(() => {
      listUsers({ search, per_page: 5 })
        .then((page) => setUsers(page.items))
        .catch(() => setUsers([]));
    }, 200);
    return () => clearTimeout(timer);
  }, [search, canWrite]);

  const run = async (action: () => Promise<unknown>) => {
    setError(null);
    try {
      await action();
      onChanged();
    } catch (err) {
      setError(err);
    }
  };

  return (
    <Paper withBorder p="md">
      <Stack gap="sm">
        <Title order={3} size="h5">
          Assigned to
        </Title>
        <ErrorAlert error={error} />
        <Table data-testid={testId}>
          <Table.Tbody>
            {assignments.length === 0 && (
              <Table.Tr>
                <Table.Td>
                  <Text size="sm" c="dimmed">
                    {emptyText}
                  </Text>
                </Table.Td>
              </Table.Tr>
            )}
            {assignments.map((a) => (
              <Table.Tr key={a.id}>
                <Table.Td>{a.target === 'user' ? 'User' : 'Group'}</Table.Td>
                <Table.Td>{a.name}</Table.Td>
                {ranked && <Table.Td>{a.target === 'group' ? `rank ${a.rank}` : ''}</Table.Td>}
                <Table.Td>
                  {canWrite && (
                    <Button size="xs" variant="subtle" color="red" onClick={() => setDoomed(a)}>
                      Remove
                    </Button>
                  )}
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
        {canWrite && (
          <Group align="flex-end">
            <NativeSelect
              label="Group"
              data={[
                { value: '', label: groups.length === 0 ? 'No groups yet' : 'Choose a group' },
                ...groups.map((g) => ({ value: String(g.id), label: g.name })),
              ]}
              value={groupId}
              onChange={(e) => setGroupId(e.currentTarget.value)}
              data-testid="assign-group"
            />
            {ranked && (
              <NumberInput label="Rank (1 first)" value={rank} onChange={setRank} min={1} max={1000} w={120} />
            )}
            <Button
              disabled={groupId === ''}
              onClick={() =>
                run(() =>
                  onAssign(ranked ? { group_id: Number(groupId), rank: Number(rank) } : { group_id: Number(groupId) }),
                )
              }
              data-testid="assign-group-button"
            >
              Assign to group
            </Button>
          </Group>
        )}
        {canWrite && (
          <Stack gap={4}>
            <TextInput
              label="Find a user to assign it to"
              placeholder="Name or e-mail address"
              value={search}
              onChange={(e) => setSearch(e.currentTarget.value)}
              w={320}
              data-testid="assign-user-search"
            />
            {search !== '' && users.length === 0 && (
              <Text size="sm" c="dimmed">
                No user matches.
              </Text>
            )}
            {search !== '' &&
              users.slice(0, 5).map((u) => (
                <Group key={u.id} gap="sm">
                  <Text size="sm">
                    {u.display_name} &lt;{u.email}&gt;
                  </Text>
                  <Button
                    size="xs"
                    variant="light"
                    onClick={() => run(() => onAssign({ user_id: u.id }))}
                    data-testid={`assign-user-${u.id}`}
                  >
                    Assign to {u.display_name}
                  </Button>
                </Group>
              ))}
          </Stack>
        )}
      </Stack>
      <ConfirmDialog
        opened={doomed !== null}
        title="Remove this assignment?"
        message={
          <>
            Stop assigning <b>{what}</b> to {doomed?.target} <b>{doomed?.name}</b>?
          </>
        }
        confirmLabel="Remove"
        color="red"
        onCancel={() => setDoomed(null)}
        onConfirm={() => {
          const a = doomed;
          if (!a) return;
          setDoomed(null);
          run(() => onUnassign(a));
        }}
      />
    </Paper>
  );
}
