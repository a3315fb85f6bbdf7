import { Alert, Button, Code, Group, Pagination, Paper, Stack, Table, Text, Title } from '@mantine/core';
import { useEffect, useState } from 'react';
import {
  downloadAuditExport,
  listAudit,
  verifyAudit,
  type AuditEntry,
  type AuditVerification,
  type Page,
} from '../api';
import { ErrorAlert } from '../components/ErrorAlert';
import { formatLocalTime } from '../time';

const PER_PAGE = 25;

type Fields = Record<string, unknown>;

function isFields(value: unknown): value is Fields {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * What to show of a change: for an update only the fields that differ
 * (timestamps that always move are left out), otherwise everything.
 */
export function changedFields(before: unknown, after: unknown): [unknown, unknown] {
  if (!isFields(before) || !isFields(after)) return [before, after];
  const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
  const b: Fields = {};
  const a: Fields = {};
  for (const key of keys) {
    if (key === 'updated_at') continue;
    if (JSON.stringify(before[key]) !== JSON.stringify(after[key])) {
      b[key] = before[key];
      a[key] = after[key];
    }
  }
  return [b, a];
}

function show(value: unknown): string {
  if (value === null || value === undefined) return '';
  if (isFields(value)) {
    return Object.entries(value)
      .map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join('\n');
  }
  return JSON.stringify(value);
}

/** The audit log, newest first; export and chain verification. */
export function AuditPage({ refreshKey }: { refreshKey: number }) {
  const [page, setPage] = useState(1);
  const [data, setData] = useState<Page<AuditEntry> | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [verification, setVerification] = useState<AuditVerification | null>(null);

  useEffect(() => {
    listAudit(page, PER_PAGE)
      .then((d) => {
        setData(d);
        setError(null);
      })
      .catch(setError);
  }, [page, refreshKey]);

  const exportAs = (format: 'csv' | 'json') => downloadAuditExport(format).catch(setError);
  const verify = () => verifyAudit().then(setVerification).catch(setError);
  const pages = data ? Math.max(1, Math.ceil(data.total / PER_PAGE)) : 1;

  return (
    <Stack gap="md">
      <Group justify="space-between">
        <Title order={2}>Audit log</Title>
        <Group gap="xs">
          <Button variant="default" onClick={verify} data-testid="audit-verify">
            Verify the chain
          </Button>
          <Button variant="default" onClick={() => exportAs('csv')} data-testid="audit-export-csv">
            Export CSV
          </Button>
          <Button variant="default" onClick={() => exportAs('json')} data-testid="audit-export-json">
            Export JSON
          </Button>
        </Group>
      </Group>
      <ErrorAlert error={error} />
      {verification && (
        <Alert
          color={verification.intact ? 'teal' : 'red'}
          title={verification.intact ? 'Intact' : 'Tampered with'}
          data-testid="audit-verification"
        >
          {verification.message}
        </Alert>
      )}
      <Paper withBorder>
        <Table data-testid="audit-table" verticalSpacing="xs">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>When</Table.Th>
              <Table.Th>Who</Table.Th>
              <Table.Th>What</Table.Th>
              <Table.Th>On</Table.Th>
              <Table.Th>Before</Table.Th>
              <Table.Th>After</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {data?.items.map((e) => {
              const [before, after] = changedFields(e.before, e.after);
              return (
              <Table.Tr key={e.id} data-testid="audit-row">
                <Table.Td>{formatLocalTime(new Date(e.at))}</Table.Td>
                <Table.Td>{e.actor}</Table.Td>
                <Table.Td data-testid="audit-action">{e.action}</Table.Td>
                <Table.Td>{e.target}</Table.Td>
                <Table.Td maw={300}>
                  <Code block fz="xs" style={{ whiteSpace: 'pre-wrap', wordBreak: 'break-word' }}>
                    {show(before)}
                  </Code>
                </Table.Td>
                <Table.Td maw={300}>
                  <Code block fz="xs" style={{ whiteSpace: 'pre-wrap', wordBreak: 'break-word' }}>
                    {show(after)}
                  </Code>
                </Table.Td>
              </Table.Tr>
              );
            })}
          </Table.Tbody>
        </Table>
        {data && data.items.length === 0 && (
          <Text size="sm" c="dimmed" p="sm">
            Nothing has been changed yet.
          </Text>
        )}
      </Paper>
      {pages > 1 && <Pagination total={pages} value={page} onChange={setPage} />}
    </Stack>
  );
}
