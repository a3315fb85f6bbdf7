import { Badge, Button, Group, NumberInput, PasswordInput, Stack, Table, Text, TextInput, Title } from '@mantine/core';
import { useEffect, useState } from 'react';
import { listDeviceCommands, sendDeviceCommand, type DeviceCommand } from '../api';
import { formatLocalTime } from '../time';
import { ErrorAlert } from './ErrorAlert';
import { ConfirmDialog } from './ConfirmDialog';

const NAMES: Record<DeviceCommand['kind'], string> = {
  lock: 'Set password and lock',
  wipe_all: 'Delete all device data',
  wipe_work: 'Delete only work data',
  new_key: 'Generate a new encryption key',
};

const COLORS: Record<DeviceCommand['state'], string> = {
  queued: 'gray',
  sent: 'blue',
  acknowledged: 'green',
  failed: 'red',
  expired: 'orange',
};

/** IT administration commands for one device, with their states (refreshed while any is on its way). */
export function DeviceCommands({ deviceId, pin, canSend }: { deviceId: number; pin: string; canSend: boolean }) {
  const [commands, setCommands] = useState<DeviceCommand[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [password, setPassword] = useState('');
  const [wipe, setWipe] = useState<'wipe_all' | 'wipe_work' | null>(null);
  const [typedPin, setTypedPin] = useState('');
  const [delay, setDelay] = useState<number>(0);

  const load = () => listDeviceCommands(deviceId).then(setCommands).catch(setError);
  useEffect(() => {
    void load();
    const timer = window.setInterval(() => void load(), 1000);
    return () => window.clearInterval(timer);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [deviceId]);

  const send = async (form: Parameters<typeof sendDeviceCommand>[1]) => {
    setError(null);
    try {
      await sendDeviceCommand(deviceId, form);
      await load();
      return true;
    } catch (err) {
      setError(err);
      return false;
    }
  };

  return (
    <Stack gap="xs" data-testid="device-commands">
      <Title order={4} size="h5">
        IT administration commands
      </Title>
      <ErrorAlert error={error} />
      {canSend && (
        <Group align="flex-end">
          <PasswordInput
            label="New device password"
            value={password}
            onChange={(e) => setPassword(e.currentTarget.value)}
            w={200}
          />
          <Button variant="default" onClick={() => void send({ kind: 'lock', password }).then((ok) => ok && setPassword(''))}>
            Set password and lock
          </Button>
          <Button variant="default" onClick={() => void send({ kind: 'new_key' })}>
            Generate a new encryption key
          </Button>
          <Button color="orange" variant="light" onClick={() => setWipe('wipe_work')}>
            Delete only work data
          </Button>
          <Button color="red" onClick={() => setWipe('wipe_all')}>
            Delete all device data
          </Button>
        </Group>
      )}
      <ConfirmDialog
        opened={wipe !== null}
        title={wipe ? `${NAMES[wipe]} on device ${pin}?` : ''}
        message={
          <>
            {wipe === 'wipe_all'
              ? `This deletes everything on device ${pin} and removes it from its user; it must be activated again.`
              : `This deletes the work e-mail and organizer data on device ${pin}.`}{' '}
            Type the PIN to confirm.
          </>
        }
        confirmLabel={wipe ? NAMES[wipe] : ''}
        color="red"
        disabled={typedPin.trim().toUpperCase() !== pin.toUpperCase()}
        onCancel={() => {
          setWipe(null);
          setTypedPin('');
        }}
        onConfirm={() => {
          if (!wipe) return;
          void send({ kind: wipe, confirm_pin: typedPin, delay_secs: delay }).then((ok) => {
            if (ok) {
              setWipe(null);
              setTypedPin('');
            }
          });
        }}
      >
        <TextInput label="Device PIN" value={typedPin} onChange={(e) => setTypedPin(e.currentTarget.value)} />
        {wipe === 'wipe_all' && (
          <NumberInput
            label="Wait before sending (seconds)"
            min={0}
            value={delay}
            onChange={(v) => setDelay(typeof v === 'number' ? v : 0)}
          />
        )}
      </ConfirmDialog>
      {commands.length === 0 ? (
        <Text size="sm" c="dimmed">
          No commands sent to this device.
        </Text>
      ) : (
        <Table data-testid="device-commands-table">
          <Table.Tbody>
            {commands.map((c) => (
              <Table.Tr key={c.command_id}>
                <Table.Td>{NAMES[c.kind]}</Table.Td>
                <Table.Td>
                  <Badge color={COLORS[c.state]} variant="light">
                    {c.state}
                  </Badge>
                </Table.Td>
                <Table.Td>{formatLocalTime(new Date(c.updated_at))}</Table.Td>
                <Table.Td>{c.detail}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      )}
    </Stack>
  );
}
