import { Loader, Paper, Stack, Text, Title } from '@mantine/core';
import { useEffect, useState } from 'react';
import { getStatistics, type MessageCounters, type StatisticsReport } from '../api';
import { BarChart, type Bar } from '../components/BarChart';
import { ErrorAlert } from '../components/ErrorAlert';
import { formatLocalTime } from '../time';

/** The counters of the Messaging Agent and the Dispatcher as chart bars. */
export function counterBars(c: MessageCounters): Bar[] {
  return [
    { label: 'Forwarded to devices', value: c.forwarded },
    { label: 'Delivered', value: c.delivered },
    { label: 'Sent from devices', value: c.sent, color: 'blue.6' },
    { label: 'Filtered (kept in mailbox)', value: c.filtered, color: 'gray.6' },
    { label: 'Pending', value: c.pending, color: 'yellow.6' },
    { label: 'Expired', value: c.expired, color: 'orange.6' },
    { label: 'Failed', value: c.failed, color: 'red.6' },
  ];
}

/** Global message statistics and the busiest users; refreshed every 30 seconds. */
export function StatisticsPage({ onOpenUser }: { onOpenUser?: (id: number) => void }) {
  const [report, setReport] = useState<StatisticsReport | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    const load = () =>
      getStatistics()
        .then((r) => {
          setReport(r);
          setError(null);
        })
        .catch(setError);
    load();
    const timer = setInterval(load, 30_000);
    return () => clearInterval(timer);
  }, []);

  return (
    <Stack gap="md">
      <Title order={2}>Message statistics</Title>
      <ErrorAlert error={error} />
      {!report && !error && <Loader size="sm" />}
      {report && (
        <>
          <Paper withBorder p="md">
            <Stack gap="sm">
              <Title order={3} size="h5">
                All users
              </Title>
              <BarChart bars={counterBars(report.global)} testId="global-statistics" />
              <Text size="xs" c="dimmed">
                {report.global.updated_at
                  ? `Last counted ${formatLocalTime(new Date(report.global.updated_at))}.`
                  : 'Nothing counted yet.'}
              </Text>
            </Stack>
          </Paper>
          <Paper withBorder p="md">
            <Stack gap="sm">
              <Title order={3} size="h5">
                Busiest users (messages forwarded and sent)
              </Title>
              {report.busiest.length === 0 ? (
                <Text size="sm" c="dimmed">
                  No user has sent or received a message yet.
                </Text>
              ) : (
                <BarChart
                  testId="busiest-users"
                  bars={report.busiest.map((u) => ({ label: u.display_name, value: u.forwarded + u.sent }))}
                />
              )}
              {onOpenUser && report.busiest.length > 0 && (
                <Text size="xs" c="dimmed">
                  Open a user from the Users page for their own statistics on their device page.
                </Text>
              )}
            </Stack>
          </Paper>
        </>
      )}
    </Stack>
  );
}
