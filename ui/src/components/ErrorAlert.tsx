import { Alert, Text } from '@mantine/core';
import { ApiError } from '../api';

/** Shows an API failure as its code and message. */
export function ErrorAlert({ error }: { error: unknown }) {
  if (!error) return null;
  const e =
    error instanceof ApiError
      ? error
      : new ApiError('CONSOLE_ERROR', error instanceof Error ? error.message : String(error));
  return (
    <Alert color="red" variant="light" title={e.code} data-testid="api-error" data-code={e.code} role="alert">
      <Text size="sm" data-testid="api-error-message">
        {e.message}
      </Text>
    </Alert>
  );
}
