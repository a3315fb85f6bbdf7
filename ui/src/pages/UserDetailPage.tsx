import {
  Anchor,
  Badge,
  Button,
  Group,
  Loader,
  MultiSelect,
  Notification,
  Paper,
  Select,
  Stack,
  Text,
  TextInput,
  Title,
} from '@mantine/core';
import { useEffect, useState, type FormEvent } from 'react';
import {
  deleteUser,
  getUser,
  getUserDevices,
  getUserGroups,
  listGroups,
  resendToDevice,
  setUserGroups,
  updateUser,
  type Device,
  type GroupSummary,
  type ResendWhat,
  type User,
  type UserGroup,
} from '../api';
import { ErrorAlert } from '../components/ErrorAlert';
import { statusWords, UserActivation, UserPolicy } from '../components/UserActivation';
import { formatLocalTime } from '../time';
import { ConfirmDialog } from '../components/ConfirmDialog';

/** One user: details, edit, groups, delete (with a confirmation naming the user). */
export function UserDetailPage({
  id,
  canWrite,
  canListGroups,
  canSeeDevices,
  canActivate = false,
  canSeePolicy = false,
  onBack,
  onOpenDevice,
}: {
  id: number;
  canWrite: boolean;
  canListGroups: boolean;
  canSeeDevices: boolean;
  /** users.activation: set or generate an activation password. */
  canActivate?: boolean;
  /** policies.read: the user's resolved IT policy. */
  canSeePolicy?: boolean;
  onBack: () => void;
  onOpenDevice: (id: number) => void;
}) {
  const [devices, setDevices] = useState<Device[] | null>(null);
  useEffect(() => {
    if (!canSeeDevices) return;
    getUserDevices(id).then(setDevices).catch(() => setDevices(null));
  }, [id, canSeeDevices]);
  const [user, setUser] = useState<User | null>(null);
  const [groups, setGroups] = useState<UserGroup[]>([]);
  const [allGroups, setAllGroups] = useState<GroupSummary[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [name, setName] = useState('');
  const [email, setEmail] = useState('');
  const [mailbox, setMailbox] = useState('');
  const [status, setStatus] = useState<'active' | 'disabled'>('active');
  const [saved, setSaved] = useState(false);
  const [busy, setBusy] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const [policyKey, setPolicyKey] = useState(0);
  const [resending, setResending] = useState<ResendWhat | null>(null);
  const [resent, setResent] = useState<string | null>(null);
  /** The device a resend goes to: the newest one holding a transport key. */
  const activatedDevice = devices ? [...devices].reverse().find((d) => d.activated) ?? null : null;
  const canResend = canWrite && (!canSeeDevices || activatedDevice !== null);

  const resend = async () => {
    if (!resending) return;
    setBusy(true);
    setError(null);
    setResent(null);
    try {
      const done = await resendToDevice(id, resending);
      setResent(
        `${resending === 'policy' ? 'The IT policy' : 'The service books'} will be sent again to device ${done.pin} now.`,
      );
    } catch (err) {
      setError(err);
    } finally {
      setResending(null);
      setBusy(false);
    }
  };

  useEffect(() => {
    let live = true;
    Promise.all([getUser(id), getUserGroups(id), canWrite && canListGroups ? listGroups() : Promise.resolve([])])
      .then(([u, g, all]) => {
        if (!live) return;
        setUser(u);
        setGroups(g);
        setAllGroups(all);
        setName(u.display_name);
        setEmail(u.email);
        setMailbox(u.mailbox_login);
        setStatus(u.account_status === 'disabled' ? 'disabled' : 'active');
      })
      .catch((err) => live && setError(err));
    return () => {
      live = false;
    };
  }, [id, canWrite, canListGroups]);

  const save = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    setSaved(false);
    try {
      const u = await updateUser(id, { display_name: name, email, mailbox_login: mailbox, account_status: status });
      setUser(u);
      setSaved(true);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const changeGroups = async (ids: string[]) => {
    setError(null);
    try {
      setGroups(await setUserGroups(id, ids.map(Number)));
      setPolicyKey((k) => k + 1);
    } catch (err) {
      setError(err);
    }
  };

  const remove = async () => {
    setBusy(true);
    try {
      await deleteUser(id);
      setConfirming(false);
      onBack();
    } catch (err) {
      setConfirming(false);
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  if (!user) {
    return error ? <ErrorAlert error={error} /> : <Loader size="sm" />;
  }

  return (
    <Stack gap="md">
      <Anchor component="button" type="button" onClick={onBack} size="sm">
        ← All users
      </Anchor>
      <Group justify="space-between">
        <Title order={2} data-testid="user-title">
          {user.display_name}
        </Title>
        {canWrite && (
          <Button color="red" variant="light" onClick={() => setConfirming(true)} data-testid="delete-user">
            Delete user
          </Button>
        )}
      </Group>
      <Text size="sm" c="dimmed">
        Created {formatLocalTime(new Date(user.created_at))}; activation:{' '}
        <span data-testid="user-activation-status">{statusWords(user.activation_status)}</span>
        {user.from_directory ? '; copied from the directory (changes there replace edits here)' : ''}
      </Text>
      <ErrorAlert error={error} />
      <Paper withBorder p="md">
        <form onSubmit={save} data-testid="user-form">
          <Stack>
            <TextInput label="Display name" value={name} onChange={(e) => setName(e.currentTarget.value)} disabled={!canWrite} />
            <TextInput label="E-mail address" value={email} onChange={(e) => setEmail(e.currentTarget.value)} disabled={!canWrite} />
            <TextInput label="Mailbox login" value={mailbox} onChange={(e) => setMailbox(e.currentTarget.value)} disabled={!canWrite} />
            <Select
              label="Account"
              data={[
                { value: 'active', label: 'Active' },
                { value: 'disabled', label: 'Disabled' },
              ]}
              value={status}
              onChange={(v) => setStatus(v === 'disabled' ? 'disabled' : 'active')}
              disabled={!canWrite}
              allowDeselect={false}
            />
            {canWrite && (
              <Group>
                <Button type="submit" loading={busy} data-testid="save-user">
                  Save changes
                </Button>
                {saved && (
                  <Text size="sm" c="teal" data-testid="user-saved">
                    Saved.
                  </Text>
                )}
              </Group>
            )}
          </Stack>
        </form>
      </Paper>
      <Paper withBorder p="md">
        <Stack gap="xs">
          <Title order={3} size="h5">
            Groups
          </Title>
          {canWrite && canListGroups ? (
            <MultiSelect
              aria-label="Groups of this user"
              data={allGroups.map((g) => ({ value: String(g.id), label: g.name }))}
              value={groups.map((g) => String(g.id))}
              onChange={changeGroups}
              placeholder={allGroups.length === 0 ? 'No groups exist yet' : 'Add to a group'}
              data-testid="user-groups-select"
            />
          ) : (
            <Group gap="xs" data-testid="user-groups">
              {groups.length === 0 && (
                <Text size="sm" c="dimmed">
                  Not in any group.
                </Text>
              )}
              {groups.map((g) => (
                <Badge key={g.id} variant="light">
                  {g.name}
                </Badge>
              ))}
            </Group>
          )}
        </Stack>
      </Paper>
      {canResend && (
        <Paper withBorder p="md">
          <Stack gap="xs">
            <Title order={3} size="h5">
              Send to the device again
            </Title>
            <Text size="sm" c="dimmed">
              The Policy Service sends the user's IT policy, signed, or their service books to
              {activatedDevice ? ` device ${activatedDevice.pin}` : ' the activated device'} now.
            </Text>
            <Group>
              <Button variant="light" onClick={() => setResending('policy')} data-testid="resend-policy">
                Resend IT policy
              </Button>
              <Button variant="light" onClick={() => setResending('service_books')} data-testid="resend-books">
                Resend service books
              </Button>
            </Group>
            {resent && (
              <Notification color="teal" withCloseButton onClose={() => setResent(null)} data-testid="resend-done">
                {resent}
              </Notification>
            )}
          </Stack>
        </Paper>
      )}
      <UserActivation userId={id} canSet={canActivate} onChanged={() => getUser(id).then(setUser).catch(setError)} />
      {canSeePolicy && <UserPolicy userId={id} refreshKey={policyKey} />}
      {canSeeDevices && devices && (
        <Paper withBorder p="md">
          <Stack gap="xs">
            <Title order={3} size="h5">
              Devices
            </Title>
            {devices.length === 0 && (
              <Text size="sm" c="dimmed">
                No device activated yet.
              </Text>
            )}
            {devices.map((d) => (
              <Anchor key={d.id} component="button" type="button" onClick={() => onOpenDevice(d.id)} size="sm">
                {d.pin} — {d.model || 'unknown model'}
              </Anchor>
            ))}
          </Stack>
        </Paper>
      )}
      <ConfirmDialog
        opened={resending !== null}
        title={resending === 'policy' ? 'Resend the IT policy?' : 'Resend the service books?'}
        message={
          <>
            Send {resending === 'policy' ? 'the IT policy' : 'the service books'} of <b>{user.display_name}</b> again to{' '}
            {activatedDevice ? (
              <>
                device <b>{activatedDevice.pin}</b>
              </>
            ) : (
              'their activated device'
            )}
            ?
          </>
        }
        confirmLabel="Send now"
        loading={busy}
        testId="confirm-resend"
        onCancel={() => setResending(null)}
        onConfirm={resend}
      />
      <ConfirmDialog
        opened={confirming}
        title="Delete this user?"
        message={
          <>
            Delete <b>{user.display_name}</b> ({user.email})? Their group memberships go with them; their devices stay
            without an owner. This cannot be undone.
          </>
        }
        confirmLabel={`Delete ${user.display_name}`}
        color="red"
        loading={busy}
        testId="confirm-delete"
        onCancel={() => setConfirming(false)}
        onConfirm={remove}
      />
    </Stack>
  );
}
