import { expect, test } from '@playwright/test';
import { FIRST_ADMIN, shot, signInByForm } from './helpers';

// The Synchronization page against the real server: the per-database
// settings are changed on screen, kept, and audited. Runs after
// console.spec.ts created the first administrator; puts the settings back
// for wireless.spec.ts, whose device synchronizes.

test('the synchronization settings are changed on screen, kept and audited', async ({ page }) => {
  await page.goto('/');
  await signInByForm(page, FIRST_ADMIN.login, FIRST_ADMIN.password);
  await page.getByTestId('nav-synchronization').click();
  const settings = page.getByTestId('sync-settings');
  for (const name of ['Contacts', 'Calendar', 'Tasks', 'Memos']) {
    await expect(settings).toContainText(name);
  }
  await expect(page.getByTestId('sync-counts')).toContainText('Users synchronized');
  try {
    await page.getByRole('switch', { name: 'Synchronize Tasks' }).uncheck();
    await expect(page.getByTestId('sync-saved')).toContainText('Tasks: off');
    await expect(page.getByLabel('Direction for Tasks')).toBeDisabled();

    await page.getByLabel('Direction for Contacts').selectOption({ label: 'Server to device' });
    await expect(page.getByTestId('sync-saved')).toContainText('Contacts: on, server to device, server wins');
    await page.getByLabel('Conflict resolution for Contacts').selectOption({ label: 'Device wins' });
    await expect(page.getByTestId('sync-saved')).toContainText('Contacts: on, server to device, device wins');
    await shot(page, '70-synchronization');

    // Kept: as the server has them after a reload.
    await page.reload();
    await expect(page.getByRole('switch', { name: 'Synchronize Tasks' })).not.toBeChecked();
    await expect(page.getByLabel('Direction for Contacts')).toHaveValue('server_to_device');
    await expect(page.getByLabel('Conflict resolution for Contacts')).toHaveValue('device_wins');

    const audit = await page.request.get('/api/audit?page=1&per_page=10');
    const entries = ((await audit.json()) as { items: { action: string; target: string }[] }).items;
    expect(entries.filter((e) => e.action === 'sync.setting').map((e) => e.target)).toEqual([
      'sync/contacts',
      'sync/contacts',
      'sync/tasks',
    ]);
  } finally {
    for (const [database, body] of [
      ['tasks', { enabled: true }],
      ['contacts', { direction: 'bidirectional', conflict: 'server_wins' }],
    ] as const) {
      const put = await page.request.put(`/api/sync/${database}`, { data: body });
      expect(put.status(), await put.text()).toBe(200);
    }
  }
});
