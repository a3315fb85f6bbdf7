import { AppShell, Burger, Group, NavLink, Text, Title } from '@mantine/core';
import { useDisclosure } from '@mantine/hooks';
import { ServersPage } from './pages/ServersPage';

export interface NavItem {
  key: string;
  label: string;
  /** Screens not built yet are listed but disabled. */
  available: boolean;
}

export const NAV_ITEMS: readonly NavItem[] = [
  { key: 'users', label: 'Users', available: false },
  { key: 'groups', label: 'Groups', available: false },
  { key: 'roles', label: 'Roles', available: false },
  { key: 'it-policies', label: 'IT policies', available: false },
  { key: 'activation', label: 'Activation', available: false },
  { key: 'software', label: 'Software', available: false },
  { key: 'servers', label: 'Servers', available: true },
  { key: 'devices', label: 'Devices', available: false },
];

export function App() {
  const [navOpened, { toggle: toggleNav }] = useDisclosure(false);
  const active = 'servers';

  return (
    <AppShell
      header={{ height: 56 }}
      navbar={{ width: 220, breakpoint: 'sm', collapsed: { mobile: !navOpened } }}
      padding="lg"
    >
      <AppShell.Header>
        <Group h="100%" px="md" gap="sm">
          <Burger
            opened={navOpened}
            onClick={toggleNav}
            hiddenFrom="sm"
            size="sm"
            aria-label="Toggle navigation"
          />
          <Title order={1} size="h4" data-testid="app-title">
            Bramble Administration Service
          </Title>
        </Group>
      </AppShell.Header>

      <AppShell.Navbar p="xs" aria-label="Console sections">
        {NAV_ITEMS.map((item) => (
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
          />
        ))}
        <Text size="xs" c="dimmed" mt="auto" px="xs">
          Other sections arrive in later releases.
        </Text>
      </AppShell.Navbar>

      <AppShell.Main>
        <ServersPage />
      </AppShell.Main>
    </AppShell>
  );
}
