import { Alert, Anchor, Badge, Button, Code, Group, Paper, SimpleGrid, Stack, Table, Text, TextInput, Title } from '@mantine/core';
import { useEffect, useState, type FormEvent, type ReactNode } from 'react';
import { findDeviceByPin, getDevice, traceMessage, type DeviceDetail, type MessageCounters, type MessageTrace } from '../api';
import { BarChart } from '../components/BarChart';
import { DeviceCommands } from '../components/DeviceCommands';
import { ErrorAlert } from '../components/ErrorAlert';
import { counterBars } from './StatisticsPage';
import { formatLocalTime } from '../time';

function when(value: string | null): string {
  return value ? formatLocalTime(new Date(value)) : 'never';
}

function Field({ label, children }: { label: string; children: ReactNode }) {
  return (
    <Stack gap={2}>
      <Text size="xs" c="dimmed">
        {label}
      </Text>
      <Text size="sm">{children}</Text>
    </Stack>
  );
}

/** Support staff: a device by PIN (or id from a link), and a message's trace by RefID. */
export function DevicesPage({
  id,
  onOpenUser,
  canCommand = false,
}: {
  id: number | null;
  onOpenUser: (id: number) => void;
  canCommand?: boolean;
}) {
  const [pin, setPin] = useState('');
  const [refId, setRefId] = useState('');
  const [device, setDevice] = useState<DeviceDetail | null>(null);
  const [trace, setTrace] = useState<MessageTrace | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [notFound, setNotFound] = useState<string | null>(null);

  useEffect(() => {
    if (id === null) return;
    getDevice(id).then(setDevice).catch(setError);
  }, [id]);

  const findPin = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    setNotFound(null);
    try {
      const found = await findDeviceByPin(pin);
      const first = found[0];
      if (first === undefined) {
        setDevice(null);
        setNotFound(`No device with the PIN ${pin.trim().toUpperCase()} is known to this server.`);
      } else {
        setDevice(await getDevice(first.id));
      }
    } catch (err) {
      setError(err);
    }
  };

  const findTrace = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    try {
      setTrace(await traceMessage(refId));
    } catch (err) {
      setTrace(null);
      setError(err);
    }
  };

  return (
    <Stack gap="md">
      <Title order={2}>Devices and messages</Title>
      <Group align="flex-end" gap="xl">
        <form onSubmit={findPin} data-testid="find-pin-form">
          <Group align="flex-end">
            <TextInput label="Device PIN" placeholder="2A3B4C5D" value={pin} onChange={(e) => setPin(e.currentTarget.value)} />
            <Button type="submit">Find device</Button>
          </Group>
        </form>
        <form onSubmit={findTrace} data-testid="trace-form">
          <Group align="flex-end">
            <TextInput
              label="Message RefID"
              placeholder="16 hexadecimal digits"
              value={refId}
              onChange={(e) => setRefId(e.currentTarget.value)}
            />
            <Button type="submit">Trace message</Button>
          </Group>
        </form>
      </Group>
      <ErrorAlert error={error} />
      {notFound && (
        <Text size="sm" c="dimmed" data-testid="device-not-found">
          {notFound}
        </Text>
      )}
      {trace && (
        <Paper withBorder p="md" data-testid="message-trace">
          <Stack gap="xs">
            <Group gap="sm">
              <Title order={3} size="h5">
                {trace.ref_id}
              </Title>
              <Badge variant="light">{trace.status}</Badge>
              <Text size="sm">{trace.subject}</Text>
            </Group>
            <Table>
              <Table.Thead>
                <Table.Tr>
                  <Table.Th>Hop</Table.Th>
                  <Table.Th>At</Table.Th>
                  <Table.Th>Detail</Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {trace.hops.map((h, i) => (
                  <Table.Tr key={i}>
                    <Table.Td>{h.hop.replace(/_/g, ' ')}</Table.Td>
                    <Table.Td>{formatLocalTime(new Date(h.at))}</Table.Td>
                    <Table.Td>{h.detail}</Table.Td>
                  </Table.Tr>
                ))}
              </Table.Tbody>
            </Table>
          </Stack>
        </Paper>
      )}
      {device && (
        <Paper withBorder p="md" data-testid="device-detail">
          <Stack>
            <Title order={3} size="h4">
              Device {device.pin}
            </Title>
            <SimpleGrid cols={{ base: 2, md: 4 }}>
              <Field label="Model">{device.model || '—'}</Field>
              <Field label="OS version">{device.os_version || '—'}</Field>
              <Field label="Carrier">{device.carrier || '—'}</Field>
              <Field label="Last contact">{when(device.last_contact_at)}</Field>
              <Field label="User">
                {device.user ? (
                  <Anchor component="button" type="button" onClick={() => onOpenUser(device.user!.id)}>
                    {device.user.display_name}
                  </Anchor>
                ) : (
                  'no owner'
                )}
              </Field>
              <Field label="IT policy applied">
                <span data-testid="device-policy-applied">
                  {device.policy_applied_at
                    ? `${device.applied_policy_name ?? 'Default'}, ${when(device.policy_applied_at)}`
                    : 'never'}
                </span>
              </Field>
              <Field label="Pending messages">{device.pending_messages}</Field>
              <Field label="Mailbox">
                <span data-testid="device-mailbox">
                  {device.mailbox === null
                    ? '—'
                    : device.mailbox.state === 'watching'
                      ? 'watched'
                      : device.mailbox.state === 'error'
                        ? 'unreachable'
                        : 'not watched yet'}
                </span>
              </Field>
            </SimpleGrid>
            {device.mailbox?.state === 'error' && device.mailbox.error && (
              <Alert color="red" title="The Messaging Agent cannot reach this user's mailbox" data-testid="device-mailbox-error">
                {device.mailbox.error}
                {device.mailbox.error_at && ` (since ${when(device.mailbox.error_at)})`}
              </Alert>
            )}
            {device.statistics && (
              <Text size="sm" data-testid="device-statistics">
                Statistics: {device.statistics.forwarded} forwarded, {device.statistics.delivered} delivered,{' '}
                {device.statistics.pending} pending, {device.statistics.filtered} filtered, {device.statistics.expired}{' '}
                expired, {device.statistics.failed} failed, {device.statistics.sent} sent from the device.
              </Text>
            )}
            {device.statistics && (
              <BarChart bars={counterBars(device.statistics as unknown as MessageCounters)} testId="device-statistics-chart" />
            )}
            <DeviceCommands deviceId={device.id} pin={device.pin} canSend={canCommand} />
            <Title order={4} size="h5">
              Recent messages
            </Title>
            <Table>
              <Table.Tbody>
                {device.recent_messages.map((m) => (
                  <Table.Tr key={m.ref_id}>
                    <Table.Td>
                      <Code>{m.ref_id}</Code>
                    </Table.Td>
                    <Table.Td>{m.direction === 'to_device' ? 'to device' : 'from device'}</Table.Td>
                    <Table.Td>{m.subject}</Table.Td>
                    <Table.Td>{m.status}</Table.Td>
                    <Table.Td>{formatLocalTime(new Date(m.created_at))}</Table.Td>
                  </Table.Tr>
                ))}
              </Table.Tbody>
            </Table>
            {device.recent_messages.length === 0 && (
              <Text size="sm" c="dimmed">
                No messages yet.
              </Text>
            )}
            <Title order={4} size="h5">
              Diagnostics
            </Title>
            {device.diagnostics.length === 0 ? (
              <Text size="sm" c="dimmed">
                The device has not reported diagnostics.
              </Text>
            ) : (
              device.diagnostics.map((d) => (
                <Stack key={d.reported_at} gap={2}>
                  <Text size="xs" c="dimmed">
                    {when(d.reported_at)}
                  </Text>
                  <Code block>{JSON.stringify(d.report, null, 2)}</Code>
                </Stack>
              ))
            )}
          </Stack>
        </Paper>
      )}
    </Stack>
  );
}
