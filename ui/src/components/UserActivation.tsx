import {
  Alert,
  Badge,
  Button,
  Checkbox,
  Code,
  Group,
  NumberInput,
  Paper,
  PasswordInput,
  Stack,
  Table,
  Text,
  Title,
} from '@mantine/core';
import { useEffect, useState, type FormEvent } from 'react';
import { getActivation, getResolvedPolicy, setActivationPassword, type Activation, type ResolvedPolicy } from '../api';
import { formatLocalTime } from '../time';
import { ErrorAlert } from './ErrorAlert';

/** "policy_applied" → "Policy applied". */
export function statusWords(status: string): string {
  const words = status.replace(/_/g, ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/**
 * A user's activation: status, the activation password's expiry and
 * attempts, and (with users.activation) setting or generating one.
 */
export function UserActivation({
  userId,
  canSet,
  onChanged,
}: {
  userId: number;
  canSet: boolean;
  /** Called after a password was set (the user's status changed). */
  onChanged: () => void;
}) {
  const [activation, setActivation] = useState<Activation | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [password, setPassword] = useState('');
  const [hours, setHours] = useState<number | string>(48);
  const [generated, setGenerated] = useState<string | null>(null);
  const [emailUser, setEmailUser] = useState(false);
  const [emailed, setEmailed] = useState<{ to: string; sent: boolean; error: string | null } | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    getActivation(userId).then(setActivation).catch(setError);
  }, [userId]);

  const submit = async (generate: boolean, event?: FormEvent) => {
    event?.preventDefault();
    setBusy(true);
    setError(null);
    setGenerated(null);
    setEmailed(null);
    try {
      const answer = await setActivationPassword(userId, {
        password: generate ? undefined : password,
        lifetime_hours: Number(hours),
        email_user: emailUser,
      });
      setActivation(answer.activation);
      setGenerated(answer.generated_password);
      setEmailed(answer.email);
      setPassword('');
      onChanged();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const pw = activation?.password;
  return (
    <Paper withBorder p="md" data-testid="user-activation">
      <Stack gap="xs">
        <Group gap="sm">
          <Title order={3} size="h5">
            Activation
          </Title>
          {activation && (
            <Badge variant="light" data-testid="activation-status">
              {statusWords(activation.status)}
            </Badge>
          )}
        </Group>
        <ErrorAlert error={error} />
        {activation && (
          <Text size="sm" data-testid="activation-password-state">
            {pw
              ? pw.expired
                ? `The activation password expired ${formatLocalTime(new Date(pw.expires_at))}; set a new one.`
                : `An activation password is set; it expires ${formatLocalTime(new Date(pw.expires_at))}. ` +
                  `${pw.failed_attempts} wrong attempt${pw.failed_attempts === 1 ? '' : 's'}, ${pw.attempts_left} left.`
              : 'No activation password is set.'}
          </Text>
        )}
        {generated && (
          <Alert color="teal" variant="light" title="Generated activation password" data-testid="generated-password">
            <Text size="sm">
              Give this to the user now; it is not shown again: <Code fz="md">{generated}</Code>
            </Text>
          </Alert>
        )}
        {emailed && (
          <Alert
            color={emailed.sent ? 'teal' : 'orange'}
            variant="light"
            data-testid="activation-emailed"
            title={emailed.sent ? `E-mailed to ${emailed.to}` : `Not e-mailed to ${emailed.to}`}
          >
            <Text size="sm">
              {emailed.sent
                ? 'The mail server accepted the message.'
                : `The password is set, but the mail did not leave: ${emailed.error}. Give it to the user another way.`}
            </Text>
          </Alert>
        )}
        {canSet && (
          <form onSubmit={(e) => submit(false, e)} data-testid="activation-form">
            <Group align="flex-end">
              <PasswordInput
                label="Activation password"
                value={password}
                onChange={(e) => setPassword(e.currentTarget.value)}
                w={220}
              />
              <NumberInput label="Valid for (hours)" value={hours} onChange={setHours} min={1} max={720} w={140} />
              <Button type="submit" loading={busy} disabled={password === ''} data-testid="set-activation-password">
                Set password
              </Button>
              <Button variant="light" loading={busy} onClick={() => submit(true)} data-testid="generate-activation-password">
                Generate password
              </Button>
            </Group>
            <Checkbox
              mt="xs"
              label="Also e-mail it to the user (through the Messaging Agent's mail server)"
              checked={emailUser}
              onChange={(e) => setEmailUser(e.currentTarget.checked)}
              data-testid="activation-email-user"
            />
          </form>
        )}
        {activation && activation.steps.length > 0 && (
          <Table data-testid="activation-steps">
            <Table.Tbody>
              {activation.steps.map((s, i) => (
                <Table.Tr key={i}>
                  <Table.Td>{statusWords(s.status)}</Table.Td>
                  <Table.Td>{formatLocalTime(new Date(s.at))}</Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        )}
      </Stack>
    </Paper>
  );
}

function show(value: unknown): string {
  if (Array.isArray(value)) return value.length === 0 ? 'none' : value.join(', ');
  return String(value);
}

/** The IT policy that applies to a user, with where each value comes from. */
export function UserPolicy({ userId, refreshKey }: { userId: number; refreshKey?: number }) {
  const [policy, setPolicy] = useState<ResolvedPolicy | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    getResolvedPolicy(userId).then(setPolicy).catch(setError);
  }, [userId, refreshKey]);
  const winner = policy?.policies[0];
  return (
    <Paper withBorder p="md" data-testid="user-policy">
      <Stack gap="xs">
        <Title order={3} size="h5">
          IT policy
        </Title>
        <ErrorAlert error={error} />
        {policy && (
          <Text size="sm" data-testid="user-policy-source">
            {!winner
              ? 'No IT policy applies: the catalog defaults.'
              : winner.via === 'user'
                ? `${winner.policy_name}, assigned to this user.`
                : winner.via === 'group'
                  ? `${winner.policy_name}, through group ${winner.group_name ?? winner.group_id} (rank ${winner.rank}).`
                  : `${winner.policy_name}, the default policy.`}
          </Text>
        )}
        {policy && (
          <Table data-testid="user-policy-rules" verticalSpacing={4}>
            <Table.Tbody>
              {policy.rules.map((r) => (
                <Table.Tr key={r.name}>
                  <Table.Td>{r.title}</Table.Td>
                  <Table.Td>{show(r.value)}</Table.Td>
                  <Table.Td>
                    <Text size="xs" c="dimmed">
                      {r.policy_name ?? 'default'}
                    </Text>
                  </Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        )}
      </Stack>
    </Paper>
  );
}
