import {
  Anchor,
  Badge,
  Button,
  Group,
  Loader,
  Modal,
  Pagination,
  Paper,
  Stack,
  Table,
  Text,
  TextInput,
  Title,
  UnstyledButton,
} from '@mantine/core';
import { useEffect, useState, type FormEvent } from 'react';
import { createUser, listUsers, type Page, type User } from '../api';
import { ErrorAlert } from '../components/ErrorAlert';
import { formatLocalTime } from '../time';

const PER_PAGE = 25;

const COLUMNS: { key: string | null; label: string }[] = [
  { key: 'name', label: 'Name' },
  { key: 'email', label: 'E-mail' },
  { key: null, label: 'Account' },
  { key: null, label: 'Activation' },
  { key: 'created', label: 'Created' },
];

/** The users list: searched, sorted and paged by the server. */
export function UsersPage({
  canWrite,
  onOpen,
  refreshKey,
}: {
  canWrite: boolean;
  onOpen: (id: number) => void;
  /** Changes when another change was recorded (live events). */
  refreshKey: number;
}) {
  const [search, setSearch] = useState('');
  const [debounced, setDebounced] = useState('');
  const [sort, setSort] = useState('name');
  const [page, setPage] = useState(1);
  const [data, setData] = useState<Page<User> | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [adding, setAdding] = useState(false);
  const [reload, setReload] = useState(0);

  useEffect(() => {
    const timer = setTimeout(() => {
      setDebounced(search.trim());
      setPage(1);
    }, 250);
    return () => clearTimeout(timer);
  }, [search]);

  useEffect(() => {
    const controller = new AbortController();
    setLoading(true);
    listUsers({ search: debounced, sort, page, per_page: PER_PAGE }, controller.signal)
      .then((d) => {
        setData(d);
        setError(null);
      })
      .catch((err) => {
        if (!controller.signal.aborted) setError(err);
      })
      .finally(() => {
        if (!controller.signal.aborted) setLoading(false);
      });
    return () => controller.abort();
  }, [debounced, sort, page, reload, refreshKey]);

  const toggleSort = (key: string) => {
    setSort((current) => (current === key ? `-${key}` : key));
    setPage(1);
  };
  const pages = data ? Math.max(1, Math.ceil(data.total / PER_PAGE)) : 1;

  return (
    <Stack gap="md">
      <Group justify="space-between">
        <Title order={2}>Users</Title>
        {canWrite && (
          <Button onClick={() => setAdding(true)} data-testid="add-user">
            Add user
          </Button>
        )}
      </Group>
      <Group>
        <TextInput
          placeholder="Search by name or e-mail address"
          aria-label="Search users"
          value={search}
          onChange={(e) => setSearch(e.currentTarget.value)}
          w={360}
          data-testid="users-search"
        />
        {loading && <Loader size="xs" data-testid="users-loading" />}
        {data && (
          <Text size="sm" c="dimmed" data-testid="users-total">
            {data.total === 1 ? '1 user' : `${data.total} users`}
          </Text>
        )}
      </Group>
      <ErrorAlert error={error} />
      <Paper withBorder>
        <Table striped highlightOnHover data-testid="users-table">
          <Table.Thead>
            <Table.Tr>
              {COLUMNS.map((c) => (
                <Table.Th key={c.label}>
                  {c.key ? (
                    <UnstyledButton
                      onClick={() => toggleSort(c.key as string)}
                      data-testid={`sort-${c.key}`}
                      fz="sm"
                      fw={700}
                    >
                      {c.label}
                      {sort === c.key ? ' ▲' : sort === `-${c.key}` ? ' ▼' : ''}
                    </UnstyledButton>
                  ) : (
                    c.label
                  )}
                </Table.Th>
              ))}
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {data?.items.map((u) => (
              <Table.Tr key={u.id} data-testid={`user-row-${u.id}`}>
                <Table.Td>
                  <Anchor component="button" type="button" onClick={() => onOpen(u.id)}>
                    {u.display_name}
                  </Anchor>
                </Table.Td>
                <Table.Td>{u.email}</Table.Td>
                <Table.Td>
                  <Badge color={u.account_status === 'active' ? 'teal' : 'gray'} variant="light">
                    {u.account_status.replace(/_/g, ' ')}
                  </Badge>
                </Table.Td>
                <Table.Td>{u.activation_status.replace(/_/g, ' ')}</Table.Td>
                <Table.Td>{formatLocalTime(new Date(u.created_at))}</Table.Td>
              </Table.Tr>
            ))}
            {data && data.items.length === 0 && (
              <Table.Tr>
                <Table.Td colSpan={COLUMNS.length}>
                  <Text size="sm" c="dimmed">
                    {debounced ? `No user matches “${debounced}”.` : 'No users yet.'}
                  </Text>
                </Table.Td>
              </Table.Tr>
            )}
          </Table.Tbody>
        </Table>
      </Paper>
      {pages > 1 && <Pagination total={pages} value={page} onChange={setPage} data-testid="users-pages" />}
      <AddUserModal
        opened={adding}
        onClose={() => setAdding(false)}
        onCreated={(user) => {
          setAdding(false);
          setReload((n) => n + 1);
          onOpen(user.id);
        }}
      />
    </Stack>
  );
}

function AddUserModal({
  opened,
  onClose,
  onCreated,
}: {
  opened: boolean;
  onClose: () => void;
  onCreated: (user: User) => void;
}) {
  const [name, setName] = useState('');
  const [email, setEmail] = useState('');
  const [mailbox, setMailbox] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const user = await createUser({ display_name: name, email, mailbox_login: mailbox });
      setName('');
      setEmail('');
      setMailbox('');
      onCreated(user);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Modal opened={opened} onClose={onClose} title="Add a user">
      <form onSubmit={submit} data-testid="add-user-form">
        <Stack>
          <TextInput label="Display name" value={name} onChange={(e) => setName(e.currentTarget.value)} required />
          <TextInput label="E-mail address" value={email} onChange={(e) => setEmail(e.currentTarget.value)} required />
          <TextInput
            label="Mailbox login"
            description="Leave empty to use the part of the e-mail address before @."
            value={mailbox}
            onChange={(e) => setMailbox(e.currentTarget.value)}
          />
          <ErrorAlert error={error} />
          <Group justify="flex-end">
            <Button variant="default" onClick={onClose}>
              Cancel
            </Button>
            <Button type="submit" loading={busy}>
              Create user
            </Button>
          </Group>
        </Stack>
      </form>
    </Modal>
  );
}
