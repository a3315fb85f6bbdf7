import {
  ActionIcon,
  Badge,
  Button,
  Group,
  Modal,
  NativeSelect,
  Paper,
  Stack,
  Switch,
  Table,
  Text,
  TextInput,
  Title,
} from '@mantine/core';
import { useCallback, useEffect, useState, type FormEvent } from 'react';
import {
  createFilter,
  deleteFilter,
  listFilters,
  reorderFilters,
  updateFilter,
  type FilterAction,
  type FilterCondition,
  type FilterForm,
  type MessageFilter,
} from '../api';
import { ErrorAlert } from '../components/ErrorAlert';
import { ConfirmDialog } from '../components/ConfirmDialog';

const FIELDS: { value: FilterCondition['field']; label: string }[] = [
  { value: 'from', label: 'From contains' },
  { value: 'to', label: 'To contains' },
  { value: 'cc', label: 'Cc contains' },
  { value: 'bcc', label: 'Bcc contains' },
  { value: 'subject', label: 'Subject contains' },
  { value: 'importance', label: 'Importance is' },
];

export const ACTIONS: { value: FilterAction; label: string }[] = [
  { value: 'forward', label: 'Forward to the device' },
  { value: 'forward_priority', label: 'Forward with priority' },
  { value: 'do_not_forward', label: 'Do not forward' },
];

/** "subject contains invoice", "importance is high". */
export function describeCondition(c: FilterCondition): string {
  const label = FIELDS.find((f) => f.value === c.field)?.label.toLowerCase() ?? c.field;
  return c.field === 'importance' ? `${label} ${c.importance}` : `${label} “${c.text}”`;
}

const EMPTY: FilterForm = { name: '', enabled: true, conditions: [{ field: 'from', text: '' }], action: 'forward' };

/** Global message filters: tried in order before each user's own; the first match decides. */
export function FiltersPage({ canWrite }: { canWrite: boolean }) {
  const [filters, setFilters] = useState<MessageFilter[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [editing, setEditing] = useState<{ id: number | null; form: FilterForm } | null>(null);
  const [doomed, setDoomed] = useState<MessageFilter | null>(null);

  const load = useCallback(() => {
    listFilters().then(setFilters).catch(setError);
  }, []);
  useEffect(load, [load]);

  const run = async (action: () => Promise<unknown>) => {
    setError(null);
    try {
      await action();
      load();
      return true;
    } catch (err) {
      setError(err);
      return false;
    }
  };

  const move = (index: number, by: -1 | 1) => {
    const ids = filters.map((f) => f.id);
    const [id] = ids.splice(index, 1);
    if (id === undefined) return;
    ids.splice(index + by, 0, id);
    run(() => reorderFilters(ids));
  };

  const save = async (event: FormEvent) => {
    event.preventDefault();
    if (!editing) return;
    const { id, form } = editing;
    if (await run(() => (id === null ? createFilter(form) : updateFilter(id, form)))) setEditing(null);
  };

  const setCondition = (i: number, c: FilterCondition) => {
    if (!editing) return;
    const conditions = editing.form.conditions.map((old, j) => (j === i ? c : old));
    setEditing({ ...editing, form: { ...editing.form, conditions } });
  };

  return (
    <Stack gap="md">
      <Group justify="space-between">
        <Title order={2}>Global message filters</Title>
        {canWrite && (
          <Button onClick={() => setEditing({ id: null, form: EMPTY })} data-testid="add-filter">
            Add filter
          </Button>
        )}
      </Group>
      <Text size="sm" c="dimmed">
        The Messaging Agent tries these filters on every new message, top to bottom, before each user's own filters; the
        first whose conditions all match decides whether the message goes to the device.
      </Text>
      <ErrorAlert error={error} />
      <Paper withBorder>
        <Table data-testid="filters-table">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>#</Table.Th>
              <Table.Th>Name</Table.Th>
              <Table.Th>When</Table.Th>
              <Table.Th>Then</Table.Th>
              <Table.Th />
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {filters.length === 0 && (
              <Table.Tr>
                <Table.Td colSpan={5}>
                  <Text size="sm" c="dimmed">
                    No global filter: every message is forwarded unless a user's own filter says otherwise.
                  </Text>
                </Table.Td>
              </Table.Tr>
            )}
            {filters.map((f, i) => (
              <Table.Tr key={f.id} data-testid="filter-row">
                <Table.Td>{i + 1}</Table.Td>
                <Table.Td>
                  <Group gap="xs">
                    <Text size="sm">{f.name}</Text>
                    {!f.enabled && <Badge color="gray">off</Badge>}
                  </Group>
                </Table.Td>
                <Table.Td>
                  <Text size="sm">{f.conditions.map(describeCondition).join(' and ')}</Text>
                </Table.Td>
                <Table.Td>{ACTIONS.find((a) => a.value === f.action)?.label}</Table.Td>
                <Table.Td>
                  {canWrite && (
                    <Group gap={4} wrap="nowrap">
                      <ActionIcon variant="default" aria-label={`Move ${f.name} up`} disabled={i === 0} onClick={() => move(i, -1)}>
                        ↑
                      </ActionIcon>
                      <ActionIcon
                        variant="default"
                        aria-label={`Move ${f.name} down`}
                        disabled={i === filters.length - 1}
                        onClick={() => move(i, 1)}
                      >
                        ↓
                      </ActionIcon>
                      <Button
                        size="xs"
                        variant="subtle"
                        onClick={() =>
                          setEditing({
                            id: f.id,
                            form: { name: f.name, enabled: f.enabled, conditions: f.conditions, action: f.action },
                          })
                        }
                      >
                        Edit
                      </Button>
                      <Button size="xs" variant="subtle" color="red" onClick={() => setDoomed(f)}>
                        Delete
                      </Button>
                    </Group>
                  )}
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      </Paper>

      <Modal opened={editing !== null} onClose={() => setEditing(null)} title={editing?.id ? 'Edit filter' : 'New filter'} size="lg">
        {editing && (
          <form onSubmit={save} data-testid="filter-form">
            <Stack>
              <TextInput
                label="Name"
                value={editing.form.name}
                onChange={(e) => setEditing({ ...editing, form: { ...editing.form, name: e.currentTarget.value } })}
                required
              />
              <Text size="sm" fw={500}>
                When all of these match
              </Text>
              {editing.form.conditions.map((c, i) => (
                <Group key={i} align="flex-end">
                  <NativeSelect
                    aria-label="Condition"
                    data={FIELDS}
                    value={c.field}
                    onChange={(e) => {
                      const field = e.currentTarget.value as FilterCondition['field'];
                      setCondition(i, field === 'importance' ? { field, importance: 'high' } : { field, text: c.text ?? '' });
                    }}
                    w={180}
                  />
                  {c.field === 'importance' ? (
                    <NativeSelect
                      aria-label="Importance"
                      data={['high', 'normal', 'low']}
                      value={c.importance ?? 'high'}
                      onChange={(e) =>
                        setCondition(i, { field: 'importance', importance: e.currentTarget.value as 'high' })
                      }
                      w={140}
                    />
                  ) : (
                    <TextInput
                      aria-label="Text"
                      value={c.text ?? ''}
                      onChange={(e) => setCondition(i, { field: c.field, text: e.currentTarget.value })}
                    />
                  )}
                  {editing.form.conditions.length > 1 && (
                    <Button
                      variant="subtle"
                      color="gray"
                      onClick={() =>
                        setEditing({
                          ...editing,
                          form: { ...editing.form, conditions: editing.form.conditions.filter((_, j) => j !== i) },
                        })
                      }
                    >
                      Remove
                    </Button>
                  )}
                </Group>
              ))}
              <Button
                variant="subtle"
                w={180}
                onClick={() =>
                  setEditing({
                    ...editing,
                    form: { ...editing.form, conditions: [...editing.form.conditions, { field: 'subject', text: '' }] },
                  })
                }
              >
                Add a condition
              </Button>
              <NativeSelect
                label="Then"
                data={ACTIONS}
                value={editing.form.action}
                onChange={(e) =>
                  setEditing({ ...editing, form: { ...editing.form, action: e.currentTarget.value as FilterAction } })
                }
              />
              <Switch
                label="Enabled"
                checked={editing.form.enabled}
                onChange={(e) => setEditing({ ...editing, form: { ...editing.form, enabled: e.currentTarget.checked } })}
              />
              <Group justify="flex-end">
                <Button variant="default" onClick={() => setEditing(null)}>
                  Cancel
                </Button>
                <Button type="submit" data-testid="save-filter">
                  Save filter
                </Button>
              </Group>
            </Stack>
          </form>
        )}
      </Modal>

      <ConfirmDialog
        opened={doomed !== null}
        title="Delete this filter?"
        message={
          <>
            Delete the global filter <b>{doomed?.name}</b>? Messages it matched are then decided by the filters after it,
            or forwarded.
          </>
        }
        confirmLabel={`Delete ${doomed?.name}`}
        color="red"
        onCancel={() => setDoomed(null)}
        onConfirm={() => {
          const f = doomed;
          if (!f) return;
          setDoomed(null);
          run(() => deleteFilter(f.id));
        }}
      />
    </Stack>
  );
}
