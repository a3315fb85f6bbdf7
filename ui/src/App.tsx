import { AppShell, Badge, Burger, Button, Group, Loader, NavLink, Stack, Text, Title } from '@mantine/core';
import { useDisclosure } from '@mantine/hooks';
import { type ReactNode, useCallback, useEffect, useState } from 'react';
import {
  ApiError,
  can,
  getSession,
  getSetup,
  setUnauthorizedHandler,
  signOut,
  subscribeEvents,
  type Whoami,
} from './api';
import { ErrorAlert } from './components/ErrorAlert';
import { LiveStatusContext, useLiveStatus, type LiveStatusValue } from './hooks/useLiveStatus';
import { useRoute } from './hooks/useRoute';
import { AdministratorsPage } from './pages/AdministratorsPage';
import { AuditPage } from './pages/AuditPage';
import { DevicesPage } from './pages/DevicesPage';
import { DirectoryPage } from './pages/DirectoryPage';
import { FiltersPage } from './pages/FiltersPage';
import { GroupsPage } from './pages/GroupsPage';
import { PoliciesPage } from './pages/PoliciesPage';
import { ServersPage } from './pages/ServersPage';
import { StatisticsPage } from './pages/StatisticsPage';
import { SignInPage } from './pages/SignInPage';
import { SoftwarePage } from './pages/SoftwarePage';
import { SyncPage } from './pages/SyncPage';
import { UserDetailPage } from './pages/UserDetailPage';
import { UsersPage } from './pages/UsersPage';

export interface NavItem {
  key: string;
  label: string;
  /** Shown only to administrators whose roles grant this. */
  permission: string;
  /** Screens not built yet are listed but disabled. */
  available: boolean;
}

export const NAV_ITEMS: readonly NavItem[] = [
  { key: 'users', label: 'Users', permission: 'users.read', available: true },
  { key: 'groups', label: 'Groups', permission: 'groups.read', available: true },
  { key: 'administrators', label: 'Administrators and roles', permission: 'administrators.read', available: true },
  { key: 'audit', label: 'Audit log', permission: 'audit.read', available: true },
  { key: 'it-policies', label: 'IT policies', permission: 'policies.read', available: true },
  { key: 'filters', label: 'Message filters', permission: 'filters.read', available: true },
  { key: 'software', label: 'Software', permission: 'software.read', available: true },
  { key: 'servers', label: 'Servers', permission: 'servers.read', available: true },
  { key: 'directory', label: 'Directory', permission: 'servers.read', available: true },
  { key: 'statistics', label: 'Statistics', permission: 'servers.read', available: true },
  { key: 'synchronization', label: 'Synchronization', permission: 'servers.read', available: true },
  { key: 'devices', label: 'Devices', permission: 'devices.read', available: true },
];

type Phase = 'loading' | 'first-run' | 'sign-in' | 'ready' | 'failed';

export function App() {
  const [phase, setPhase] = useState<Phase>('loading');
  const [who, setWho] = useState<Whoami | null>(null);
  const [error, setError] = useState<unknown>(null);

  const start = useCallback(() => {
    setPhase('loading');
    setError(null);
    getSetup()
      .then(async (setup) => {
        if (setup.needs_first_administrator) {
          setPhase('first-run');
          return;
        }
        try {
          setWho(await getSession());
          setPhase('ready');
        } catch (err) {
          if (err instanceof ApiError && err.status === 401) setPhase('sign-in');
          else throw err;
        }
      })
      .catch((err) => {
        setError(err);
        setPhase('failed');
      });
  }, []);

  useEffect(start, [start]);
  useEffect(() => {
    setUnauthorizedHandler(() => {
      setWho(null);
      setPhase('sign-in');
    });
    return () => setUnauthorizedHandler(null);
  }, []);

  const signedIn = (w: Whoami) => {
    setWho(w);
    setPhase('ready');
  };

  if (phase === 'loading') {
    return (
      <Group p="xl" gap="sm">
        <Loader size="sm" />
        <Text size="sm">Connecting to the Bramble server…</Text>
      </Group>
    );
  }
  if (phase === 'failed') {
    return (
      <Stack p="xl" maw={640}>
        <Title order={1} size="h3">
          Bramble Administration Service
        </Title>
        <ErrorAlert error={error} />
        <Button onClick={start} w={120}>
          Retry
        </Button>
      </Stack>
    );
  }
  if (phase === 'first-run' || phase === 'sign-in' || !who) {
    return <SignInPage firstRun={phase === 'first-run'} onSignedIn={signedIn} />;
  }
  return (
    <LiveStatus>
      <Console
        who={who}
        onSignOut={() => {
          signOut()
            .catch(() => undefined)
            .finally(() => {
              setWho(null);
              setPhase('sign-in');
            });
        }}
      />
    </LiveStatus>
  );
}

/** Holds the console's one live-status stream while someone is signed in. */
function LiveStatus({ children }: { children: ReactNode }) {
  const [live, setLive] = useState<LiveStatusValue>({ status: null, receivedAt: null, connected: false });
  useEffect(
    () =>
      subscribeEvents(
        (status) => setLive((was) => ({ ...was, status, receivedAt: new Date() })),
        (connected) => setLive((was) => ({ ...was, connected })),
      ),
    [],
  );
  return <LiveStatusContext.Provider value={live}>{children}</LiveStatusContext.Provider>;
}

function Console({ who, onSignOut }: { who: Whoami; onSignOut: () => void }) {
  const [navOpened, { toggle: toggleNav }] = useDisclosure(false);
  const [route, navigate] = useRoute();
  const live = useLiveStatus();
  const auditHead = live.status?.audit_head ?? 0;
  const visible = NAV_ITEMS.filter((item) => can(who, item.permission));
  const first = visible.find((item) => item.available)?.key ?? '';
  const active = route.section || first;
  const allowed = visible.some((item) => item.key === active && item.available);

  return (
    <AppShell
      header={{ height: 56 }}
      navbar={{ width: 230, breakpoint: 'sm', collapsed: { mobile: !navOpened } }}
      padding="lg"
    >
      <AppShell.Header>
        <Group h="100%" px="md" gap="sm" justify="space-between">
          <Group gap="sm">
            <Burger opened={navOpened} onClick={toggleNav} hiddenFrom="sm" size="sm" aria-label="Toggle navigation" />
            <Title order={1} size="h4" data-testid="app-title">
              Bramble Administration Service
            </Title>
          </Group>
          <Group gap="sm">
            <Badge
              variant="dot"
              color={live.connected ? 'green' : 'gray'}
              title={
                live.connected
                  ? 'Statuses update as they change'
                  : 'The live status stream is closed; pages refresh every few seconds'
              }
              data-testid="live-status"
              data-live={live.connected ? 'open' : 'closed'}
            >
              {live.connected ? 'Live' : 'Polling'}
            </Badge>
            <Text size="sm" data-testid="signed-in-as">
              {who.display_name} ({who.roles.join(', ') || 'no role'})
            </Text>
            <Button size="xs" variant="default" onClick={onSignOut} data-testid="sign-out">
              Sign out
            </Button>
          </Group>
        </Group>
      </AppShell.Header>

      <AppShell.Navbar p="xs" aria-label="Console sections">
        {visible.map((item) => (
          <NavLink
            key={item.key}
            component="button"
            type="button"
            label={item.label}
            active={item.key === active}
            disabled={!item.available}
            aria-disabled={item.available ? undefined : true}
            tabIndex={item.available ? undefined : -1}
            title={item.available ? undefined : 'Not available yet'}
            data-testid={`nav-${item.key}`}
            aria-current={item.key === active ? 'page' : undefined}
            onClick={() => navigate(`/${item.key}`)}
          />
        ))}
        {visible.length === 0 && (
          <Text size="sm" c="dimmed" px="xs">
            Your account holds no role yet; ask a Security Administrator for one.
          </Text>
        )}
      </AppShell.Navbar>

      <AppShell.Main>
        {!allowed ? (
          <ErrorAlert
            error={
              new ApiError(
                'PERMISSION_DENIED',
                'Your roles do not include this part of the console; ask a Security Administrator for a role that does.',
              )
            }
          />
        ) : active === 'users' && route.id ? (
          <UserDetailPage
            key={route.id}
            id={Number(route.id)}
            canWrite={can(who, 'users.write')}
            canListGroups={can(who, 'groups.read')}
            canSeeDevices={can(who, 'devices.read')}
            canActivate={can(who, 'users.activation')}
            canSeePolicy={can(who, 'policies.read')}
            onBack={() => navigate('/users')}
            onOpenDevice={(id) => navigate(`/devices/${id}`)}
          />
        ) : active === 'users' ? (
          <UsersPage
            canWrite={can(who, 'users.write')}
            onOpen={(id) => navigate(`/users/${id}`)}
            refreshKey={auditHead}
          />
        ) : active === 'groups' ? (
          <GroupsPage
            canWrite={can(who, 'groups.write')}
            canSeeUsers={can(who, 'users.read')}
            onOpenUser={(id) => navigate(`/users/${id}`)}
          />
        ) : active === 'administrators' ? (
          <AdministratorsPage canWrite={can(who, 'administrators.write')} />
        ) : active === 'it-policies' ? (
          <PoliciesPage
            id={route.id ? Number(route.id) : null}
            canWrite={can(who, 'policies.write')}
            onOpen={(id) => navigate(id === null ? '/it-policies' : `/it-policies/${id}`)}
          />
        ) : active === 'software' ? (
          <SoftwarePage
            id={route.id ? Number(route.id) : null}
            canWrite={can(who, 'software.write')}
            onOpen={(id) => navigate(id === null ? '/software' : `/software/${id}`)}
          />
        ) : active === 'filters' ? (
          <FiltersPage canWrite={can(who, 'filters.write')} />
        ) : active === 'directory' ? (
          <DirectoryPage canSync={can(who, 'servers.write')} />
        ) : active === 'statistics' ? (
          <StatisticsPage />
        ) : active === 'synchronization' ? (
          <SyncPage canWrite={can(who, 'servers.write')} />
        ) : active === 'audit' ? (
          <AuditPage refreshKey={auditHead} />
        ) : active === 'devices' ? (
          <DevicesPage
            key={route.id ?? 'search'}
            id={route.id ? Number(route.id) : null}
            onOpenUser={(id) => navigate(`/users/${id}`)}
            canCommand={can(who, 'devices.write')}
          />
        ) : (
          <ServersPage canRestart={can(who, 'servers.write')} showWirelessSettings />
        )}
      </AppShell.Main>
    </AppShell>
  );
}
