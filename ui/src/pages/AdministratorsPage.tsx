import {
  Badge,
  Button,
  Checkbox,
  Group,
  Modal,
  Paper,
  PasswordInput,
  Stack,
  Table,
  Text,
  TextInput,
  Title,
} from '@mantine/core';
import { useCallback, useEffect, useState, type FormEvent } from 'react';
import {
  createAdministrator,
  createRole,
  deleteRole,
  listAdministrators,
  listPermissions,
  listRoles,
  updateAdministrator,
  type Administrator,
  type Role,
} from '../api';
import { ErrorAlert } from '../components/ErrorAlert';

/** Administrators of the console and the roles they can hold. */
export function AdministratorsPage({ canWrite }: { canWrite: boolean }) {
  const [admins, setAdmins] = useState<Administrator[]>([]);
  const [roles, setRoles] = useState<Role[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [login, setLogin] = useState('');
  const [displayName, setDisplayName] = useState('');
  const [password, setPassword] = useState('');
  const [roleIds, setRoleIds] = useState<string[]>([]);
  const [created, setCreated] = useState<string | null>(null);
  const [editing, setEditing] = useState<Administrator | null>(null);

  const load = useCallback(() => {
    Promise.all([listAdministrators(), listRoles()])
      .then(([a, r]) => {
        setAdmins(a);
        setRoles(r);
      })
      .catch(setError);
  }, []);
  useEffect(load, [load]);

  const create = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    setCreated(null);
    try {
      const admin = await createAdministrator({
        login,
        display_name: displayName,
        password,
        role_ids: roleIds.map(Number),
      });
      setCreated(admin.login);
      setLogin('');
      setDisplayName('');
      setPassword('');
      setRoleIds([]);
      load();
    } catch (err) {
      setError(err);
    }
  };

  return (
    <Stack gap="md">
      <Title order={2}>Administrators and roles</Title>
      <ErrorAlert error={error} />
      <Paper withBorder>
        <Table data-testid="administrators-table">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Login</Table.Th>
              <Table.Th>Name</Table.Th>
              <Table.Th>Roles</Table.Th>
              <Table.Th>Administrator groups</Table.Th>
              <Table.Th>Account</Table.Th>
              {canWrite && <Table.Th />}
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {admins.map((a) => (
              <Table.Tr key={a.id} data-testid={`administrator-row-${a.login}`}>
                <Table.Td>{a.login}</Table.Td>
                <Table.Td>{a.display_name}</Table.Td>
                <Table.Td>
                  <Group gap={4}>
                    {a.effective_roles.map((r) => (
                      <Badge key={r} variant="light">
                        {r}
                      </Badge>
                    ))}
                  </Group>
                </Table.Td>
                <Table.Td>{a.groups.join(', ')}</Table.Td>
                <Table.Td>{a.disabled ? 'disabled' : 'enabled'}</Table.Td>
                {canWrite && (
                  <Table.Td>
                    <Button size="xs" variant="subtle" onClick={() => setEditing(a)} data-testid={`edit-${a.login}`}>
                      Edit
                    </Button>
                  </Table.Td>
                )}
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      </Paper>
      {canWrite && (
        <Paper withBorder p="md">
          <form onSubmit={create} data-testid="add-administrator-form">
            <Stack>
              <Title order={3} size="h5">
                Add an administrator
              </Title>
              <Group grow>
                <TextInput label="Login name" value={login} onChange={(e) => setLogin(e.currentTarget.value)} required />
                <TextInput label="Display name" value={displayName} onChange={(e) => setDisplayName(e.currentTarget.value)} />
              </Group>
              <PasswordInput
                label="Initial password"
                description="At least 8 characters."
                value={password}
                onChange={(e) => setPassword(e.currentTarget.value)}
                required
              />
              <Checkbox.Group label="Roles" value={roleIds} onChange={setRoleIds} data-testid="administrator-roles">
                <Group gap="md" mt={4}>
                  {roles.map((r) => (
                    <Checkbox key={r.id} value={String(r.id)} label={r.name} />
                  ))}
                </Group>
              </Checkbox.Group>
              <Group>
                <Button type="submit">Create administrator</Button>
                {created && (
                  <Text size="sm" c="teal" data-testid="administrator-created">
                    Created {created}.
                  </Text>
                )}
              </Group>
            </Stack>
          </form>
        </Paper>
      )}
      {editing && (
        <EditAdministrator
          admin={editing}
          roles={roles}
          onClose={() => setEditing(null)}
          onSaved={() => {
            setEditing(null);
            load();
          }}
        />
      )}
      <Title order={3} size="h4">
        Roles
      </Title>
      <Paper withBorder>
        <Table data-testid="roles-table">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Role</Table.Th>
              <Table.Th>Grants</Table.Th>
              {canWrite && <Table.Th />}
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {roles.map((r) => (
              <Table.Tr key={r.id}>
                <Table.Td>
                  {r.name} {r.builtin ? '' : <Badge size="xs">custom</Badge>}
                </Table.Td>
                <Table.Td>
                  <Text size="xs" ff="monospace">
                    {r.permissions.join(', ')}
                  </Text>
                </Table.Td>
                {canWrite && (
                  <Table.Td>
                    {!r.builtin && (
                      <Button
                        size="xs"
                        color="red"
                        variant="subtle"
                        onClick={() => deleteRole(r.id).then(load).catch(setError)}
                      >
                        Delete
                      </Button>
                    )}
                  </Table.Td>
                )}
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      </Paper>
      {canWrite && <NewRoleForm onCreated={load} onError={setError} />}
    </Stack>
  );
}

function EditAdministrator({
  admin,
  roles,
  onClose,
  onSaved,
}: {
  admin: Administrator;
  roles: Role[];
  onClose: () => void;
  onSaved: () => void;
}) {
  const [roleIds, setRoleIds] = useState(admin.role_ids.map(String));
  const [disabled, setDisabled] = useState(admin.disabled);
  const [error, setError] = useState<unknown>(null);
  const save = async () => {
    setError(null);
    try {
      await updateAdministrator(admin.id, { disabled, role_ids: roleIds.map(Number) });
      onSaved();
    } catch (err) {
      setError(err);
    }
  };
  return (
    <Modal opened onClose={onClose} title={`Administrator ${admin.login}`}>
      <Stack>
        <Checkbox.Group label="Roles given directly" value={roleIds} onChange={setRoleIds}>
          <Stack gap={6} mt={4}>
            {roles.map((r) => (
              <Checkbox key={r.id} value={String(r.id)} label={r.name} />
            ))}
          </Stack>
        </Checkbox.Group>
        {admin.groups.length > 0 && (
          <Text size="xs" c="dimmed">
            Also holds the roles of the administrator groups {admin.groups.join(', ')}.
          </Text>
        )}
        <Checkbox
          label="Account disabled (ends the administrator's sessions)"
          checked={disabled}
          onChange={(e) => setDisabled(e.currentTarget.checked)}
        />
        <ErrorAlert error={error} />
        <Group justify="flex-end">
          <Button variant="default" onClick={onClose}>
            Cancel
          </Button>
          <Button onClick={save}>Save</Button>
        </Group>
      </Stack>
    </Modal>
  );
}

/** A custom role: a name and the permissions it grants. */
function NewRoleForm({ onCreated, onError }: { onCreated: () => void; onError: (e: unknown) => void }) {
  const [permissions, setPermissions] = useState<{ name: string; description: string }[]>([]);
  const [name, setName] = useState('');
  const [grants, setGrants] = useState<string[]>([]);
  useEffect(() => {
    listPermissions().then(setPermissions).catch(onError);
  }, [onError]);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    try {
      await createRole(name, grants);
      setName('');
      setGrants([]);
      onCreated();
    } catch (err) {
      onError(err);
    }
  };
  return (
    <Paper withBorder p="md">
      <form onSubmit={submit} data-testid="add-role-form">
        <Stack>
          <Title order={3} size="h5">
            Add a custom role
          </Title>
          <TextInput label="Role name" value={name} onChange={(e) => setName(e.currentTarget.value)} required w={320} />
          <Checkbox.Group label="Permissions" value={grants} onChange={setGrants}>
            <Stack gap={6} mt={4}>
              {permissions.map((p) => (
                <Checkbox key={p.name} value={p.name} label={`${p.name} — ${p.description}`} />
              ))}
            </Stack>
          </Checkbox.Group>
          <Group>
            <Button type="submit">Create role</Button>
          </Group>
        </Stack>
      </form>
    </Paper>
  );
}
