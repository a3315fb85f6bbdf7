import { Alert, Badge, Button, Group, Loader, Paper, SimpleGrid, Stack, Text, Title } from '@mantine/core';
import { useState, type ReactNode } from 'react';
import { restartComponent, type ApiError, type ComponentHealth, type HealthDocument, type WirelessHealth } from '../api';
import { ErrorAlert } from '../components/ErrorAlert';
import { ComponentTable } from '../components/ComponentTable';
import { OverallStatusBadge } from '../components/StateBadge';
import { Timestamp } from '../components/Timestamp';
import { WirelessSettings } from '../components/WirelessSettings';
import { HEALTH_POLL_INTERVAL_MS, useHealth } from '../hooks/useHealth';
import { useNow } from '../hooks/useNow';
import { formatLocalTime } from '../time';
import { ConfirmDialog } from '../components/ConfirmDialog';

export function ServersPage({
  pollIntervalMs = HEALTH_POLL_INTERVAL_MS,
  canRestart = false,
  showWirelessSettings = false,
}: {
  /** How often to ask for `/health` again (tests shorten it). */
  pollIntervalMs?: number;
  /** servers.write: offer to restart components and change the wireless network connection. */
  canRestart?: boolean;
  /** Show the wireless network connection's settings (servers.read). */
  showWirelessSettings?: boolean;
}) {
  const health = useHealth(pollIntervalMs);
  const [restarting, setRestarting] = useState<ComponentHealth | null>(null);
  const [restartError, setRestartError] = useState<unknown>(null);
  const [restartNote, setRestartNote] = useState<string | null>(null);
  const restart = async () => {
    const component = restarting;
    setRestarting(null);
    if (!component) return;
    setRestartError(null);
    try {
      const answer = await restartComponent(component.id);
      setRestartNote(`${answer.message}.`);
      health.retry();
    } catch (err) {
      setRestartError(err);
    }
  };
  const now = useNow(5_000);
  // Never show a heartbeat as "in the future" just because the clock ticker
  // lags behind the latest poll.
  const effectiveNow =
    health.receivedAt && health.receivedAt > now ? health.receivedAt : now;

  return (
    <Stack gap="lg">
      <Title order={2}>Servers and components</Title>
      <ErrorAlert error={restartError} />
      {restartNote && (
        <Text size="sm" c="teal" data-testid="restart-note">
          {restartNote}
        </Text>
      )}
      <ConfirmDialog
        opened={restarting !== null}
        title="Restart this component?"
        message={
          <>
            Restart the <b>{restarting?.name}</b>? The Controller stops it and starts it again; what it is doing now
            (deliveries, a directory sync) is interrupted and resumes after the restart.
          </>
        }
        confirmLabel={`Restart ${restarting?.name}`}
        color="orange"
        testId="confirm-restart"
        onCancel={() => setRestarting(null)}
        onConfirm={restart}
      />

      {health.error && (
        <ApiErrorAlert
          error={health.error}
          onRetry={health.retry}
          retrying={health.refreshing}
          staleSince={health.data ? health.receivedAt : null}
        />
      )}

      {health.loading && !health.data && !health.error && (
        <Group gap="sm" data-testid="health-loading">
          <Loader size="sm" />
          <Text size="sm" c="dimmed">
            Asking the Bramble server for its state…
          </Text>
        </Group>
      )}

      {health.data && (
        <>
          <HealthAlarms health={health.data} />
          <ServerSummary health={health.data} now={effectiveNow} stale={health.error !== null} />
          <Paper withBorder p="xs">
            <ComponentTable
              components={health.data.components}
              now={effectiveNow}
              onRestart={canRestart ? setRestarting : undefined}
            />
          </Paper>
          {health.data.wireless && <WirelessCard wireless={health.data.wireless} now={effectiveNow} />}
          {showWirelessSettings && <WirelessSettings canEdit={canRestart} onSaved={health.retry} />}
          <Text size="xs" c="dimmed" data-testid="health-updated">
            {health.receivedAt
              ? `Updated ${formatLocalTime(health.receivedAt)}; refreshes every ${Math.round(pollIntervalMs / 1000)} seconds.`
              : null}
          </Text>
        </>
      )}
    </Stack>
  );
}

/** What needs an administrator at once: a database that does not answer, an altered audit log. */
function HealthAlarms({ health }: { health: HealthDocument }) {
  const database = health.database;
  return (
    <>
      {database && database.status !== 'ok' && (
        <Alert color="red" variant="light" title="The Configuration Database does not answer" data-testid="database-alarm">
          {database.error ?? 'No answer.'} Components that need it wait and retry; check the disk and the database file,
          and the server's log.
        </Alert>
      )}
      {health.audit_alarm && (
        <Alert color="red" variant="light" title="The audit log has been altered" data-testid="audit-alarm">
          Entry {health.audit_alarm.id}: {health.audit_alarm.reason}. The log was changed outside Bramble; check on the
          Audit page which entries are affected, and who had access to the database file.
        </Alert>
      )}
    </>
  );
}

function ServerSummary({
  health,
  now,
  stale,
}: {
  health: HealthDocument;
  now: Date;
  /** The last poll failed: what is shown is the last known state. */
  stale: boolean;
}) {
  const notRunning = health.components.filter((c) => c.state !== 'running').length;
  return (
    <Paper withBorder p="md">
      <SimpleGrid cols={{ base: 1, xs: 2, md: 4 }} spacing="lg">
        <Field label="Overall status">
          <Group gap="xs">
            <OverallStatusBadge status={health.status} />
            {stale && (
              <Text size="xs" c="red.7" data-testid="overall-status-stale">
                last known
              </Text>
            )}
            {notRunning > 0 && (
              <Text size="xs" c="dimmed">
                {notRunning} of {health.components.length} components not running
              </Text>
            )}
          </Group>
        </Field>
        <Field label="Server">
          <Text fw={500} data-testid="server-name">
            {health.server}
          </Text>
        </Field>
        <Field label="Version">
          <Text fw={500} data-testid="server-version">
            {health.version}
          </Text>
        </Field>
        <Field label="Started">
          <Timestamp value={health.started_at} now={now} missing="unknown" testId="server-started" />
        </Field>
      </SimpleGrid>
    </Paper>
  );
}

/** The SRP link to the relay (BlackBerry Router) and the LAN path. */
export function WirelessCard({ wireless, now }: { wireless: WirelessHealth; now: Date }) {
  const configured = wireless.srp_id !== null || wireless.connected;
  return (
    <Paper withBorder p="md" data-testid="wireless">
      <Stack gap="sm">
        <Group justify="space-between">
          <Title order={4}>Wireless network</Title>
          <Badge color={wireless.connected ? 'green' : 'red'} variant="light" data-testid="wireless-state">
            {wireless.connected ? 'Connected' : configured ? 'Not connected' : 'Not configured'}
          </Badge>
        </Group>
        <SimpleGrid cols={{ base: 1, xs: 2, md: 4 }} spacing="lg">
          <Field label="SRP ID">
            <Text fw={500} data-testid="wireless-srp-id">
              {wireless.srp_id ?? '—'}
            </Text>
          </Field>
          <Field label="Relay">
            <Text fw={500}>{wireless.relay ?? '—'}</Text>
          </Field>
          <Field label={wireless.connected ? 'Connected since' : 'Since'}>
            <Timestamp value={wireless.since} now={now} missing="—" testId="wireless-since" />
          </Field>
          <Field label="Devices on the LAN path">
            <Text fw={500} data-testid="wireless-lan-devices">
              {wireless.lan_devices.length}
            </Text>
          </Field>
        </SimpleGrid>
        {!wireless.connected && wireless.last_error && (
          <Alert color={configured ? 'red' : 'gray'} variant="light" data-testid="wireless-error">
            <Text size="sm">{wireless.last_error}</Text>
            {!configured && (
              <Text size="xs" c="dimmed" mt={4}>
                Set the SRP ID, SRP authentication key and relay under Wireless network connection below (or with{' '}
                <code>bramble srp set</code>).
              </Text>
            )}
          </Alert>
        )}
      </Stack>
    </Paper>
  );
}

function Field({ label, children }: { label: string; children: ReactNode }) {
  return (
    <Stack gap={4}>
      <Text size="xs" c="dimmed" tt="uppercase" fw={600}>
        {label}
      </Text>
      {children}
    </Stack>
  );
}

function ApiErrorAlert({
  error,
  onRetry,
  retrying,
  staleSince,
}: {
  error: ApiError;
  onRetry: () => void;
  retrying: boolean;
  staleSince: Date | null;
}) {
  return (
    <Alert
      color="red"
      variant="light"
      title={error.code}
      data-testid="api-error"
      data-code={error.code}
      role="alert"
    >
      <Stack gap="sm" align="flex-start">
        <Text size="sm" data-testid="api-error-message">
          {error.message}
        </Text>
        {staleSince && (
          <Text size="xs" c="dimmed">
            Showing the last report received at {formatLocalTime(staleSince)}.
          </Text>
        )}
        <Button
          size="xs"
          color="red"
          variant="outline"
          onClick={onRetry}
          loading={retrying}
          data-testid="api-error-retry"
        >
          Retry
        </Button>
      </Stack>
    </Alert>
  );
}
