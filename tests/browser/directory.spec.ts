import { expect, test } from '@playwright/test';
import { FIRST_ADMIN, shot, signInByForm } from './helpers';

// The directory page against the real slapd scripts/test.sh starts: the
// "corp" directory holds 400 people; "wrong-password" binds with a wrong
// password. Runs after console.spec.ts created the first administrator.

test('a full sync shows its progress to the end and is listed with its figures', async ({ page }) => {
  await page.goto('/');
  await signInByForm(page, FIRST_ADMIN.login, FIRST_ADMIN.password);
  await page.getByTestId('nav-directory').click();
  const corp = page.getByTestId('directory-corp');
  await expect(corp).toContainText('cn=admin,dc=example,dc=com');
  const runs = corp.getByTestId('sync-run');
  const before = await runs.count();
  await shot(page, '50-directory');

  // Progress as the console polls it while the sync runs.
  const seen: string[] = [];
  page.on('response', async (response) => {
    if (response.url().endsWith('/api/directories/corp') || response.url().endsWith('/api/directories/corp/sync')) {
      const body = await response.json().catch(() => null);
      if (body?.sync) seen.push(`${body.sync.phase}:${body.sync.percent}`);
    }
  });
  await corp.getByTestId('full-sync').click();
  await expect(corp.getByTestId('sync-progress-bar')).toBeVisible();
  await shot(page, '51-directory-sync-running');
  await expect(corp.getByTestId('sync-progress-text')).toContainText('Full sync: Finished; 400 entries read');
  await expect(corp.getByTestId('sync-progress-bar')).toHaveAttribute('data-percent', '100');
  await expect(corp.getByTestId('full-sync')).toBeEnabled();
  expect(seen.length).toBeGreaterThan(0);
  expect(seen[0]).not.toMatch(/^done/);

  // The run is recorded: full, succeeded, every person read.
  await expect(runs).toHaveCount(Math.min(before + 1, 10));
  const newest = runs.first();
  await expect(newest).toContainText('full');
  await expect(newest).toContainText('succeeded');
  await expect(newest).toContainText('400');
  await shot(page, '52-directory-sync-finished');

  // The people are users now, marked as copied from the directory.
  const found = await (await page.request.get('/api/users?search=staff399')).json();
  expect(found.total).toBe(1);
  expect(found.items[0].from_directory).toBe(true);
});

test('a refused bind is shown in words that name the setting to fix', async ({ page }) => {
  await page.goto('/');
  await signInByForm(page, FIRST_ADMIN.login, FIRST_ADMIN.password);
  await page.getByTestId('nav-directory').click();
  const broken = page.getByTestId('directory-wrong-password');
  await broken.getByTestId('sync-now').click();
  const error = broken.getByTestId('api-error');
  await expect(error).toHaveAttribute('data-code', 'DIRECTORY_BIND_FAILED');
  await expect(error).toContainText('check bind_dn and bind_password of directory wrong-password');
  await expect(broken.getByTestId('sync-progress-text')).toContainText('Failed');
  await expect(broken.getByTestId('sync-run').first()).toContainText('failed');
  await shot(page, '53-directory-bind-refused');
});
