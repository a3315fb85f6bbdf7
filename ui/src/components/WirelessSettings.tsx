import { Button, Group, Loader, NumberInput, Notification, Paper, PasswordInput, SimpleGrid, Stack, Text, TextInput, Title } from '@mantine/core';
import { useEffect, useState, type FormEvent } from 'react';
import { getWireless, setWireless, type WirelessForm, type WirelessSettings as Settings } from '../api';
import { ErrorAlert } from './ErrorAlert';
import { ConfirmDialog } from './ConfirmDialog';

/** "3 of 25 licences in use", or a warning when over. */
export function licenceWords(inUse: number, licences: number): string {
  const words = `${inUse} of ${licences} ${licences === 1 ? 'licence' : 'licences'} in use`;
  return inUse > licences ? `${words} — more users are activated than licensed` : words;
}

/**
 * The wireless network connection: SRP ID, SRP authentication key (never
 * shown; left empty it is kept), relay and Client Access Licences. Saving
 * has the Router open its SRP link again with the new settings.
 */
export function WirelessSettings({ canEdit, onSaved }: { canEdit: boolean; onSaved?: () => void }) {
  const [current, setCurrent] = useState<Settings | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [srpId, setSrpId] = useState('');
  const [key, setKey] = useState('');
  const [host, setHost] = useState('');
  const [port, setPort] = useState<number | string>(3101);
  const [licences, setLicences] = useState<number | string>(0);
  const [busy, setBusy] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const [saved, setSaved] = useState<string | null>(null);

  const show = (s: Settings) => {
    setCurrent(s);
    setSrpId(s.srp_id ?? '');
    setHost(s.relay_host ?? '');
    setPort(s.relay_port);
    setLicences(s.cal_licences);
    setKey('');
  };

  useEffect(() => {
    getWireless().then(show).catch(setError);
  }, []);

  const changesConnectedSrpId =
    current !== null && current.configured && current.link.connected && srpId.trim() !== (current.srp_id ?? '');

  const save = async () => {
    setConfirming(false);
    setBusy(true);
    setError(null);
    setSaved(null);
    const form: WirelessForm = {
      srp_id: srpId.trim(),
      relay_host: host.trim(),
      relay_port: Number(port),
      cal_licences: Number(licences),
    };
    if (key.trim() !== '') form.srp_key = key.trim();
    try {
      const s = await setWireless(form);
      show(s);
      setSaved(`Saved. The Router opens the SRP link to ${s.relay_host}:${s.relay_port} again as ${s.srp_id}.`);
      onSaved?.();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (changesConnectedSrpId) setConfirming(true);
    else void save();
  };

  if (!current) {
    return error ? <ErrorAlert error={error} /> : <Loader size="sm" />;
  }

  return (
    <Paper withBorder p="md" data-testid="wireless-settings">
      <form onSubmit={submit}>
        <Stack gap="sm">
          <Group justify="space-between">
            <Title order={4}>Wireless network connection</Title>
            <Text size="sm" data-testid="wireless-licences">
              {licenceWords(current.licences_in_use, current.cal_licences)}
            </Text>
          </Group>
          <SimpleGrid cols={{ base: 1, md: 2 }}>
            <TextInput label="SRP ID" value={srpId} onChange={(e) => setSrpId(e.currentTarget.value)} disabled={!canEdit} />
            <PasswordInput
              label="SRP authentication key"
              value={key}
              onChange={(e) => setKey(e.currentTarget.value)}
              placeholder={current.key_set ? 'set — leave empty to keep it' : 'the key that came with the SRP ID'}
              disabled={!canEdit}
              autoComplete="new-password"
            />
            <TextInput label="Relay host" value={host} onChange={(e) => setHost(e.currentTarget.value)} disabled={!canEdit} />
            <NumberInput label="Relay port" value={port} onChange={setPort} min={1} max={65535} disabled={!canEdit} />
            <NumberInput
              label="Client access licences"
              value={licences}
              onChange={setLicences}
              min={0}
              disabled={!canEdit}
            />
          </SimpleGrid>
          <ErrorAlert error={error} />
          {saved && (
            <Notification color="teal" withCloseButton onClose={() => setSaved(null)} data-testid="wireless-saved">
              {saved}
            </Notification>
          )}
          {canEdit && (
            <Group>
              <Button type="submit" loading={busy} data-testid="save-wireless">
                Save connection
              </Button>
            </Group>
          )}
        </Stack>
      </form>
      <ConfirmDialog
        opened={confirming}
        title="Change the SRP ID?"
        message={
          <>
            This server is connected to the wireless network as <b>{current.srp_id}</b>. Changing the SRP ID to{' '}
            <b>{srpId.trim()}</b> closes that connection and opens one as the new SRP ID; devices cannot be reached
            through the relay until it is up.
          </>
        }
        confirmLabel={`Change to ${srpId.trim()}`}
        color="orange"
        testId="confirm-srp-id"
        onCancel={() => setConfirming(false)}
        onConfirm={() => void save()}
      />
    </Paper>
  );
}
