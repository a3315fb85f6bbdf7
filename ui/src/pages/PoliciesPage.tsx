import {
  Anchor,
  Badge,
  Button,
  Checkbox,
  Group,
  Loader,
  NativeSelect,
  NumberInput,
  Paper,
  Stack,
  Switch,
  Table,
  TagsInput,
  Text,
  TextInput,
  Title,
} from '@mantine/core';
import { useCallback, useEffect, useState, type FormEvent } from 'react';
import {
  assignPolicy,
  createPolicy,
  deletePolicy,
  getPolicy,
  listPolicies,
  listPolicyRules,
  unassignPolicy,
  updatePolicy,
  type PolicyDetail,
  type PolicyRule,
  type PolicySummary,
} from '../api';
import { AssignmentsCard } from '../components/AssignmentsCard';
import { ErrorAlert } from '../components/ErrorAlert';
import { ConfirmDialog } from '../components/ConfirmDialog';

/** Why a value is not accepted by its rule, in the catalog's words; null when it is. */
export function ruleProblem(rule: PolicyRule, value: unknown): string | null {
  if (rule.kind === 'int') {
    const n = typeof value === 'number' ? value : Number(value);
    if (value === '' || !Number.isInteger(n)) return `${rule.title} must be a whole number (${rule.accepts})`;
    if (rule.min !== null && rule.max !== null && (n < rule.min || n > rule.max)) {
      return `${rule.title} must be between ${rule.min} and ${rule.max}`;
    }
  }
  return null;
}

/** The IT policies: the list, and one policy's rule editor and assignments. */
export function PoliciesPage({
  id,
  canWrite,
  onOpen,
}: {
  id: number | null;
  canWrite: boolean;
  onOpen: (id: number | null) => void;
}) {
  const [policies, setPolicies] = useState<PolicySummary[]>([]);
  const [rules, setRules] = useState<PolicyRule[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [name, setName] = useState('');

  const load = useCallback(() => {
    Promise.all([listPolicies(), listPolicyRules()])
      .then(([p, r]) => {
        setPolicies(p);
        setRules(r);
      })
      .catch(setError);
  }, []);
  useEffect(load, [load]);

  const create = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    try {
      const created = await createPolicy({ name, description: '', rules: {}, is_default: false });
      setName('');
      load();
      onOpen(created.id);
    } catch (err) {
      setError(err);
    }
  };

  if (id !== null) {
    return (
      <PolicyEditor
        key={id}
        id={id}
        rules={rules}
        canWrite={canWrite}
        onBack={() => {
          load();
          onOpen(null);
        }}
      />
    );
  }

  return (
    <Stack gap="md">
      <Title order={2}>IT policies</Title>
      <Text size="sm" c="dimmed">
        A user gets the policy assigned to them; otherwise that of their highest-ranked group (rank 1 first); otherwise
        the default policy. Rules a policy does not set take the value shown as the default.
      </Text>
      <ErrorAlert error={error} />
      {canWrite && (
        <form onSubmit={create} data-testid="add-policy-form">
          <Group align="flex-end">
            <TextInput label="New IT policy" value={name} onChange={(e) => setName(e.currentTarget.value)} required />
            <Button type="submit">Create policy</Button>
          </Group>
        </form>
      )}
      <Paper withBorder>
        <Table data-testid="policies-table">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Name</Table.Th>
              <Table.Th>Rules set</Table.Th>
              <Table.Th>Assigned to</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {policies.length === 0 && (
              <Table.Tr>
                <Table.Td colSpan={3}>
                  <Text size="sm" c="dimmed">
                    No IT policy yet: every device gets the catalog defaults.
                  </Text>
                </Table.Td>
              </Table.Tr>
            )}
            {policies.map((p) => (
              <Table.Tr key={p.id}>
                <Table.Td>
                  <Group gap="xs">
                    <Anchor component="button" type="button" onClick={() => onOpen(p.id)}>
                      {p.name}
                    </Anchor>
                    {p.is_default && <Badge variant="light">default</Badge>}
                  </Group>
                </Table.Td>
                <Table.Td>{p.rules}</Table.Td>
                <Table.Td>
                  {p.assignments} user{p.assignments === 1 ? '' : 's'} or groups
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      </Paper>
    </Stack>
  );
}

function RuleInput({
  rule,
  value,
  onChange,
  disabled,
}: {
  rule: PolicyRule;
  value: unknown;
  onChange: (v: unknown) => void;
  disabled: boolean;
}) {
  const problem = ruleProblem(rule, value);
  switch (rule.kind) {
    case 'bool':
      return (
        <Switch
          aria-label={rule.title}
          checked={value === true}
          onChange={(e) => onChange(e.currentTarget.checked)}
          disabled={disabled}
          label={value === true ? 'true' : 'false'}
        />
      );
    case 'int':
      return (
        <NumberInput
          aria-label={rule.title}
          value={typeof value === 'number' ? value : ''}
          onChange={(v) => onChange(v)}
          clampBehavior="none"
          allowDecimal={false}
          description={`${rule.accepts}`}
          error={problem}
          disabled={disabled}
          data-testid={`rule-input-${rule.name}`}
          w={220}
        />
      );
    case 'choice':
      return (
        <NativeSelect
          aria-label={rule.title}
          data={rule.options}
          value={typeof value === 'string' ? value : String(rule.default)}
          onChange={(e) => onChange(e.currentTarget.value)}
          disabled={disabled}
          w={260}
        />
      );
    case 'list':
      return (
        <TagsInput
          aria-label={rule.title}
          value={Array.isArray(value) ? (value as string[]) : []}
          onChange={onChange}
          placeholder="Application name, Enter"
          disabled={disabled}
          w={320}
        />
      );
  }
}

function show(value: unknown): string {
  if (Array.isArray(value)) return value.length === 0 ? 'none' : value.join(', ');
  return String(value);
}

function PolicyEditor({
  id,
  rules,
  canWrite,
  onBack,
}: {
  id: number;
  rules: PolicyRule[];
  canWrite: boolean;
  onBack: () => void;
}) {
  const [policy, setPolicy] = useState<PolicyDetail | null>(null);
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [isDefault, setIsDefault] = useState(false);
  const [values, setValues] = useState<Record<string, unknown>>({});
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState(false);
  const [busy, setBusy] = useState(false);
  const [confirmDelete, setConfirmDelete] = useState(false);

  const take = (p: PolicyDetail) => {
    setPolicy(p);
    setName(p.name);
    setDescription(p.description);
    setIsDefault(p.is_default);
    setValues(p.rules);
  };
  useEffect(() => {
    getPolicy(id).then(take).catch(setError);
  }, [id]);

  const save = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setSaved(false);
    setError(null);
    try {
      take(await updatePolicy(id, { name, description, rules: values, is_default: isDefault }));
      setSaved(true);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const remove = async () => {
    try {
      await deletePolicy(id);
      setConfirmDelete(false);
      onBack();
    } catch (err) {
      setConfirmDelete(false);
      setError(err);
    }
  };

  if (!policy) return error ? <ErrorAlert error={error} /> : <Loader size="sm" />;

  return (
    <Stack gap="md">
      <Anchor component="button" type="button" onClick={onBack} size="sm">
        ← All IT policies
      </Anchor>
      <Group justify="space-between">
        <Title order={2} data-testid="policy-title">
          {policy.name}
        </Title>
        {canWrite && (
          <Button color="red" variant="light" onClick={() => setConfirmDelete(true)} data-testid="delete-policy">
            Delete policy
          </Button>
        )}
      </Group>
      <ErrorAlert error={error} />
      <form onSubmit={save} data-testid="policy-form">
        <Stack>
          <Paper withBorder p="md">
            <Stack gap="sm">
              <TextInput label="Name" value={name} onChange={(e) => setName(e.currentTarget.value)} disabled={!canWrite} />
              <TextInput
                label="Description"
                value={description}
                onChange={(e) => setDescription(e.currentTarget.value)}
                disabled={!canWrite}
              />
              <Checkbox
                label="Default policy (for users with no policy of their own or of their groups)"
                checked={isDefault}
                onChange={(e) => setIsDefault(e.currentTarget.checked)}
                disabled={!canWrite || policy.is_default}
              />
            </Stack>
          </Paper>
          <Paper withBorder>
            <Table data-testid="policy-rules" verticalSpacing="xs">
              <Table.Thead>
                <Table.Tr>
                  <Table.Th>Rule</Table.Th>
                  <Table.Th>Set by this policy</Table.Th>
                  <Table.Th>Value</Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {rules.map((rule) => {
                  const set = Object.prototype.hasOwnProperty.call(values, rule.name);
                  return (
                    <Table.Tr key={rule.name} data-testid={`rule-${rule.name}`}>
                      <Table.Td>
                        <Text size="sm">{rule.title}</Text>
                        <Text size="xs" c="dimmed">
                          {rule.accepts}; default {show(rule.default)}
                        </Text>
                      </Table.Td>
                      <Table.Td>
                        <Checkbox
                          aria-label={`Set ${rule.title}`}
                          checked={set}
                          disabled={!canWrite}
                          data-testid={`rule-set-${rule.name}`}
                          onChange={(e) => {
                            const next = { ...values };
                            if (e.currentTarget.checked) next[rule.name] = rule.default;
                            else delete next[rule.name];
                            setValues(next);
                          }}
                        />
                      </Table.Td>
                      <Table.Td>
                        {set ? (
                          <RuleInput
                            rule={rule}
                            value={values[rule.name]}
                            disabled={!canWrite}
                            onChange={(v) => setValues({ ...values, [rule.name]: v })}
                          />
                        ) : (
                          <Text size="sm" c="dimmed">
                            default ({show(rule.default)})
                          </Text>
                        )}
                      </Table.Td>
                    </Table.Tr>
                  );
                })}
              </Table.Tbody>
            </Table>
          </Paper>
          {canWrite && (
            <Group>
              <Button type="submit" loading={busy} data-testid="save-policy">
                Save policy
              </Button>
              {saved && (
                <Text size="sm" c="teal" data-testid="policy-saved">
                  Saved.
                </Text>
              )}
            </Group>
          )}
        </Stack>
      </form>
      <AssignmentsCard
        what={policy.name}
        assignments={policy.assignments}
        emptyText={`Not assigned to any user or group${policy.is_default ? ' (it applies as the default)' : ''}.`}
        ranked
        canWrite={canWrite}
        testId="policy-assignments"
        onAssign={(t) => assignPolicy(policy.id, 'group_id' in t ? { group_id: t.group_id, rank: t.rank ?? 1 } : t)}
        onUnassign={(a) => unassignPolicy(policy.id, a.id)}
        onChanged={() => getPolicy(id).then(take).catch(setError)}
      />
      <ConfirmDialog
        opened={confirmDelete}
        title="Delete this IT policy?"
        message={
          <>
            Delete <b>{policy.name}</b>? Its rules and its {policy.assignments.length} assignment
            {policy.assignments.length === 1 ? '' : 's'} go with it; those users get their next policy (a group's, or
            the default).
          </>
        }
        confirmLabel={`Delete ${policy.name}`}
        color="red"
        testId="confirm-delete-policy"
        onCancel={() => setConfirmDelete(false)}
        onConfirm={remove}
      />
    </Stack>
  );
}

