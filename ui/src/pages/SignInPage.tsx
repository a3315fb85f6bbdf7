import { Button, Paper, PasswordInput, Stack, Text, TextInput, Title } from '@mantine/core';
import { useEffect, useState, type FormEvent } from 'react';
import { createFirstAdministrator, getEndpoint, signIn, type Whoami } from '../api';
import { ErrorAlert } from '../components/ErrorAlert';

/** Sign in, or — while no administrator exists — create the first one. */
export function SignInPage({ firstRun, onSignedIn }: { firstRun: boolean; onSignedIn: (who: Whoami) => void }) {
  const [login, setLogin] = useState('');
  const [displayName, setDisplayName] = useState('');
  const [password, setPassword] = useState('');
  const [again, setAgain] = useState('');
  const [setupCode, setSetupCode] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  // The desktop window knows the setup code of the server it runs.
  useEffect(() => {
    if (!firstRun) return;
    let live = true;
    getEndpoint()
      .then((endpoint) => {
        if (live && endpoint.setupCode) setSetupCode((typed) => typed || (endpoint.setupCode ?? ''));
      })
      .catch(() => undefined);
    return () => {
      live = false;
    };
  }, [firstRun]);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    if (firstRun && password !== again) {
      setError(new Error('The two passwords differ; type the same password twice.'));
      return;
    }
    setBusy(true);
    try {
      const who = firstRun
        ? await createFirstAdministrator({ login, display_name: displayName, password, setup_code: setupCode })
        : await signIn(login, password);
      onSignedIn(who);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Paper withBorder p="xl" maw={420} mx="auto" mt={60}>
      <form onSubmit={submit} data-testid={firstRun ? 'first-run-form' : 'sign-in-form'}>
        <Stack>
          <Title order={2}>{firstRun ? 'Create the first Security Administrator' : 'Sign in'}</Title>
          {firstRun && (
            <Text size="sm" c="dimmed">
              This Bramble server has no administrator yet. The account created here holds the Security
              Administrator role: it can create other administrators and give them roles.
            </Text>
          )}
          <TextInput label="Login name" value={login} onChange={(e) => setLogin(e.currentTarget.value)} required autoFocus />
          {firstRun && (
            <TextInput
              label="Display name"
              value={displayName}
              onChange={(e) => setDisplayName(e.currentTarget.value)}
            />
          )}
          <PasswordInput
            label="Password"
            value={password}
            onChange={(e) => setPassword(e.currentTarget.value)}
            required
            description={firstRun ? 'At least 8 characters.' : undefined}
          />
          {firstRun && (
            <PasswordInput
              label="Password again"
              value={again}
              onChange={(e) => setAgain(e.currentTarget.value)}
              required
            />
          )}
          {firstRun && (
            <TextInput
              label="Setup code"
              value={setupCode}
              onChange={(e) => setSetupCode(e.currentTarget.value)}
              required
              autoComplete="off"
              spellCheck={false}
              maxLength={40}
              description="Printed by `bramble serve` when it started, and kept in the file setup-code in its data folder."
              data-testid="setup-code"
            />
          )}
          <ErrorAlert error={error} />
          <Button type="submit" loading={busy}>
            {firstRun ? 'Create administrator' : 'Sign in'}
          </Button>
        </Stack>
      </form>
    </Paper>
  );
}
