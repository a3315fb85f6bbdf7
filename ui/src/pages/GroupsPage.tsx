import { Anchor, Button, Group, Paper, Stack, Table, Text, TextInput, Title } from '@mantine/core';
import { useCallback, useEffect, useState, type FormEvent } from 'react';
import {
  createGroup,
  deleteGroup,
  getGroup,
  listGroups,
  removeGroupMember,
  type GroupDetail,
  type GroupSummary,
} from '../api';
import { ErrorAlert } from '../components/ErrorAlert';
import { ConfirmDialog } from '../components/ConfirmDialog';

export function GroupsPage({
  canWrite,
  canSeeUsers,
  onOpenUser,
}: {
  canWrite: boolean;
  canSeeUsers: boolean;
  onOpenUser: (id: number) => void;
}) {
  const [open, setOpen] = useState<GroupDetail | null>(null);
  const show = (id: number) => getGroup(id).then(setOpen).catch(setError);
  const [groups, setGroups] = useState<GroupSummary[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [doomed, setDoomed] = useState<GroupSummary | null>(null);

  const load = useCallback(() => {
    listGroups()
      .then((g) => {
        setGroups(g);
        setError(null);
      })
      .catch(setError);
  }, []);
  useEffect(load, [load]);

  const create = async (event: FormEvent) => {
    event.preventDefault();
    try {
      await createGroup(name, description);
      setName('');
      setDescription('');
      load();
    } catch (err) {
      setError(err);
    }
  };

  const remove = async () => {
    if (!doomed) return;
    try {
      await deleteGroup(doomed.id);
      if (open?.id === doomed.id) setOpen(null);
      load();
    } catch (err) {
      setError(err);
    } finally {
      setDoomed(null);
    }
  };

  return (
    <Stack gap="md">
      <Title order={2}>Groups</Title>
      <ErrorAlert error={error} />
      {canWrite && (
        <form onSubmit={create} data-testid="add-group-form">
          <Group align="flex-end">
            <TextInput label="New group" value={name} onChange={(e) => setName(e.currentTarget.value)} required />
            <TextInput label="Description" value={description} onChange={(e) => setDescription(e.currentTarget.value)} />
            <Button type="submit">Create group</Button>
          </Group>
        </form>
      )}
      <Paper withBorder>
        <Table data-testid="groups-table">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Name</Table.Th>
              <Table.Th>Description</Table.Th>
              <Table.Th>Members</Table.Th>
              {canWrite && <Table.Th />}
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {groups.map((g) => (
              <Table.Tr key={g.id}>
                <Table.Td>
                  <Anchor component="button" type="button" onClick={() => show(g.id)}>
                    {g.name}
                  </Anchor>
                </Table.Td>
                <Table.Td>{g.description}</Table.Td>
                <Table.Td>{g.members}</Table.Td>
                {canWrite && (
                  <Table.Td>
                    <Button size="xs" color="red" variant="subtle" onClick={() => setDoomed(g)}>
                      Delete
                    </Button>
                  </Table.Td>
                )}
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
        {groups.length === 0 && (
          <Text size="sm" c="dimmed" p="sm">
            No groups yet.
          </Text>
        )}
      </Paper>
      {open && (
        <Paper withBorder p="md" data-testid="group-members">
          <Stack gap="xs">
            <Group justify="space-between">
              <Title order={3} size="h5">
                Members of {open.name}
              </Title>
              <Button size="xs" variant="default" onClick={() => setOpen(null)}>
                Close
              </Button>
            </Group>
            {open.members.length === 0 && (
              <Text size="sm" c="dimmed">
                No members. Add users to the group from their own page.
              </Text>
            )}
            {open.members.map((u) => (
              <Group key={u.id} gap="sm">
                {canSeeUsers ? (
                  <Anchor component="button" type="button" onClick={() => onOpenUser(u.id)} size="sm">
                    {u.display_name}
                  </Anchor>
                ) : (
                  <Text size="sm">{u.display_name}</Text>
                )}
                <Text size="sm" c="dimmed">
                  {u.email}
                </Text>
                {canWrite && (
                  <Button
                    size="compact-xs"
                    variant="subtle"
                    color="red"
                    onClick={() =>
                      removeGroupMember(open.id, u.id)
                        .then(() => show(open.id))
                        .then(load)
                        .catch(setError)
                    }
                  >
                    Remove
                  </Button>
                )}
              </Group>
            ))}
          </Stack>
        </Paper>
      )}
      <ConfirmDialog
        opened={doomed !== null}
        title="Delete this group?"
        message={
          <>
            Delete the group <b>{doomed?.name}</b>? Its {doomed?.members ?? 0} members stay, outside the group.
          </>
        }
        confirmLabel={`Delete ${doomed?.name}`}
        color="red"
        onCancel={() => setDoomed(null)}
        onConfirm={remove}
      />
    </Stack>
  );
}
