import { Box, Group, Stack, Text } from '@mantine/core';

export interface Bar {
  label: string;
  value: number;
  color?: string;
}

/**
 * Horizontal bars scaled to the largest value, each with its label and
 * number; enough for counters, without a charting library.
 */
export function BarChart({ bars, testId, unit = '' }: { bars: Bar[]; testId?: string; unit?: string }) {
  const max = Math.max(1, ...bars.map((b) => b.value));
  return (
    <Stack gap={6} data-testid={testId} role="list">
      {bars.map((b) => (
        <Group key={b.label} gap="sm" wrap="nowrap" role="listitem" aria-label={`${b.label}: ${b.value}${unit}`}>
          <Text size="sm" w={180} ta="right" truncate>
            {b.label}
          </Text>
          <Box style={{ flex: 1 }} h={18} bg="gray.1" aria-hidden>
            <Box
              h="100%"
              w={`${(Math.max(0, b.value) / max) * 100}%`}
              bg={b.color ?? 'teal.6'}
              style={{ borderRadius: 2, minWidth: b.value > 0 ? 2 : 0 }}
            />
          </Box>
          <Text size="sm" w={70} data-testid="bar-value">
            {b.value}
            {unit}
          </Text>
        </Group>
      ))}
    </Stack>
  );
}
