import { Text } from '@mantine/core';
import { formatLocalTime, formatRelative, parseTimestamp } from '../time';

/** Local date and time with "x minutes ago" underneath. */
export function Timestamp({
  value,
  now,
  missing = 'never',
  testId,
}: {
  value: string | null | undefined;
  now: Date;
  missing?: string;
  testId?: string;
}) {
  const date = parseTimestamp(value);
  if (!date) {
    return (
      <Text size="sm" c="dimmed" data-testid={testId}>
        {value ? `unreadable time "${value}"` : missing}
      </Text>
    );
  }
  return (
    <div data-testid={testId} title={date.toISOString()}>
      <Text size="sm" component="time" dateTime={date.toISOString()}>
        {formatLocalTime(date)}
      </Text>
      <Text size="xs" c="dimmed">
        {formatRelative(date, now)}
      </Text>
    </div>
  );
}
