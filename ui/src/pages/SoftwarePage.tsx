import {
  Anchor,
  Button,
  Group,
  Loader,
  NativeSelect,
  Paper,
  Stack,
  Table,
  Text,
  TextInput,
  Title,
} from '@mantine/core';
import { useCallback, useEffect, useState, type FormEvent } from 'react';
import {
  assignSoftware,
  createSoftware,
  deleteSoftware,
  getSoftware,
  listSoftware,
  unassignSoftware,
  updateSoftware,
  type Disposition,
  type SoftwareApplication,
  type SoftwareDetail,
  type SoftwareSummary,
} from '../api';
import { AssignmentsCard } from '../components/AssignmentsCard';
import { ErrorAlert } from '../components/ErrorAlert';
import { ConfirmDialog } from '../components/ConfirmDialog';

const DISPOSITIONS: { value: Disposition; label: string }[] = [
  { value: 'required', label: 'Required (installed, cannot be removed)' },
  { value: 'optional', label: 'Optional (the user may install it)' },
  { value: 'disallowed', label: 'Disallowed (removed from the device)' },
];

/** Software configurations: the list, and one configuration's applications and assignments. */
export function SoftwarePage({
  id,
  canWrite,
  onOpen,
}: {
  id: number | null;
  canWrite: boolean;
  onOpen: (id: number | null) => void;
}) {
  const [list, setList] = useState<SoftwareSummary[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [name, setName] = useState('');

  const load = useCallback(() => {
    listSoftware().then(setList).catch(setError);
  }, []);
  useEffect(load, [load]);

  const create = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    try {
      const created = await createSoftware({ name, description: '' });
      setName('');
      onOpen(created.id);
    } catch (err) {
      setError(err);
    }
  };

  if (id !== null) {
    return (
      <SoftwareEditor
        key={id}
        id={id}
        canWrite={canWrite}
        onBack={() => {
          load();
          onOpen(null);
        }}
      />
    );
  }

  return (
    <Stack gap="md">
      <Title order={2}>Software configurations</Title>
      <Text size="sm" c="dimmed">
        The Policy Service installs required applications on the devices of the users a configuration is assigned to
        (directly or through a group), offers optional ones and removes disallowed ones.
      </Text>
      <ErrorAlert error={error} />
      {canWrite && (
        <form onSubmit={create} data-testid="add-software-form">
          <Group align="flex-end">
            <TextInput label="New software configuration" value={name} onChange={(e) => setName(e.currentTarget.value)} required />
            <Button type="submit">Create configuration</Button>
          </Group>
        </form>
      )}
      <Paper withBorder>
        <Table data-testid="software-table">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Name</Table.Th>
              <Table.Th>Applications</Table.Th>
              <Table.Th>Assignments</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {list.length === 0 && (
              <Table.Tr>
                <Table.Td colSpan={3}>
                  <Text size="sm" c="dimmed">
                    No software configuration yet.
                  </Text>
                </Table.Td>
              </Table.Tr>
            )}
            {list.map((c) => (
              <Table.Tr key={c.id}>
                <Table.Td>
                  <Anchor component="button" type="button" onClick={() => onOpen(c.id)}>
                    {c.name}
                  </Anchor>
                </Table.Td>
                <Table.Td>{c.applications}</Table.Td>
                <Table.Td>{c.assignments}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      </Paper>
    </Stack>
  );
}

function SoftwareEditor({ id, canWrite, onBack }: { id: number; canWrite: boolean; onBack: () => void }) {
  const [config, setConfig] = useState<SoftwareDetail | null>(null);
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [apps, setApps] = useState<SoftwareApplication[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState(false);
  const [confirmDelete, setConfirmDelete] = useState(false);

  const take = (c: SoftwareDetail) => {
    setConfig(c);
    setName(c.name);
    setDescription(c.description);
    setApps(c.applications);
  };
  const reload = useCallback(() => {
    getSoftware(id).then(take).catch(setError);
  }, [id]);
  useEffect(reload, [reload]);

  const save = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    setSaved(false);
    try {
      take(await updateSoftware(id, { name, description, applications: apps }));
      setSaved(true);
    } catch (err) {
      setError(err);
    }
  };

  const setApp = (i: number, app: SoftwareApplication) => setApps(apps.map((old, j) => (j === i ? app : old)));

  if (!config) return error ? <ErrorAlert error={error} /> : <Loader size="sm" />;

  return (
    <Stack gap="md">
      <Anchor component="button" type="button" onClick={onBack} size="sm">
        ← All software configurations
      </Anchor>
      <Group justify="space-between">
        <Title order={2} data-testid="software-title">
          {config.name}
        </Title>
        {canWrite && (
          <Button color="red" variant="light" onClick={() => setConfirmDelete(true)} data-testid="delete-software">
            Delete configuration
          </Button>
        )}
      </Group>
      <ErrorAlert error={error} />
      <form onSubmit={save} data-testid="software-form">
        <Stack>
          <Group>
            <TextInput label="Name" value={name} onChange={(e) => setName(e.currentTarget.value)} disabled={!canWrite} />
            <TextInput
              label="Description"
              value={description}
              onChange={(e) => setDescription(e.currentTarget.value)}
              disabled={!canWrite}
              w={360}
            />
          </Group>
          <Paper withBorder p="xs">
            <Table data-testid="software-applications">
              <Table.Thead>
                <Table.Tr>
                  <Table.Th>Application</Table.Th>
                  <Table.Th>Version</Table.Th>
                  <Table.Th>On the device</Table.Th>
                  <Table.Th />
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {apps.length === 0 && (
                  <Table.Tr>
                    <Table.Td colSpan={4}>
                      <Text size="sm" c="dimmed">
                        No application yet.
                      </Text>
                    </Table.Td>
                  </Table.Tr>
                )}
                {apps.map((app, i) => (
                  <Table.Tr key={i}>
                    <Table.Td>
                      <TextInput
                        aria-label="Application name"
                        value={app.name}
                        onChange={(e) => setApp(i, { ...app, name: e.currentTarget.value })}
                        disabled={!canWrite}
                      />
                    </Table.Td>
                    <Table.Td>
                      <TextInput
                        aria-label="Version"
                        value={app.version}
                        onChange={(e) => setApp(i, { ...app, version: e.currentTarget.value })}
                        disabled={!canWrite}
                        w={100}
                      />
                    </Table.Td>
                    <Table.Td>
                      <NativeSelect
                        aria-label="Disposition"
                        data={DISPOSITIONS}
                        value={app.disposition}
                        onChange={(e) => setApp(i, { ...app, disposition: e.currentTarget.value as Disposition })}
                        disabled={!canWrite}
                      />
                    </Table.Td>
                    <Table.Td>
                      {canWrite && (
                        <Button variant="subtle" color="gray" onClick={() => setApps(apps.filter((_, j) => j !== i))}>
                          Remove
                        </Button>
                      )}
                    </Table.Td>
                  </Table.Tr>
                ))}
              </Table.Tbody>
            </Table>
          </Paper>
          {canWrite && (
            <Group>
              <Button
                variant="light"
                onClick={() => setApps([...apps, { name: '', version: '', disposition: 'required' }])}
                data-testid="add-application"
              >
                Add application
              </Button>
              <Button type="submit" data-testid="save-software">
                Save configuration
              </Button>
              {saved && (
                <Text size="sm" c="teal" data-testid="software-saved">
                  Saved.
                </Text>
              )}
            </Group>
          )}
        </Stack>
      </form>
      <AssignmentsCard
        what={config.name}
        assignments={config.assignments}
        emptyText="Not assigned to any user or group."
        canWrite={canWrite}
        testId="software-assignments"
        onAssign={(target) => assignSoftware(config.id, target)}
        onUnassign={(a) => unassignSoftware(config.id, a.id)}
        onChanged={reload}
      />
      <ConfirmDialog
        opened={confirmDelete}
        title="Delete this software configuration?"
        message={
          <>
            Delete <b>{config.name}</b> with its {config.applications.length} application
            {config.applications.length === 1 ? '' : 's'} and {config.assignments.length} assignment
            {config.assignments.length === 1 ? '' : 's'}?
          </>
        }
        confirmLabel={`Delete ${config.name}`}
        color="red"
        onCancel={() => setConfirmDelete(false)}
        onConfirm={async () => {
          try {
            await deleteSoftware(id);
            setConfirmDelete(false);
            onBack();
          } catch (err) {
            setConfirmDelete(false);
            setError(err);
          }
        }}
      />
    </Stack>
  );
}

