import type { ReactNode } from 'react';
import { Button, Group, Modal, Stack, Text } from '@mantine/core';

/**
 * The console's "are you sure" dialog: what will happen, in words that name
 * what it happens to, then Cancel and a confirm button that names the
 * action. `testId` marks the dialog's content, and `testId-button` the
 * confirm button.
 */
export function ConfirmDialog({
  opened,
  title,
  message,
  children,
  confirmLabel,
  color,
  loading,
  disabled,
  testId,
  onCancel,
  onConfirm,
}: {
  opened: boolean;
  title: string;
  /** What confirming does. */
  message: ReactNode;
  /** Anything more to fill in before confirming (a PIN typed again). */
  children?: ReactNode;
  confirmLabel: ReactNode;
  /** The confirm button's colour; the theme's own when not given. */
  color?: string;
  loading?: boolean;
  disabled?: boolean;
  testId?: string;
  onCancel: () => void;
  onConfirm: () => void;
}) {
  return (
    <Modal opened={opened} onClose={onCancel} title={title}>
      <Stack data-testid={testId}>
        <Text size="sm">{message}</Text>
        {children}
        <Group justify="flex-end">
          <Button variant="default" onClick={onCancel}>
            Cancel
          </Button>
          <Button
            color={color}
            onClick={onConfirm}
            loading={loading}
            disabled={disabled}
            data-testid={testId ? `${testId}-button` : undefined}
          >
            {confirmLabel}
          </Button>
        </Group>
      </Stack>
    </Modal>
  );
}
