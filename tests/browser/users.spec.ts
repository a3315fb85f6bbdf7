import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test } from '@playwright/test';
import { FIRST_ADMIN, shot, signInByForm } from './helpers';

// One administrator's session through the console, step by step, then a
// Junior Helpdesk's. Runs after console.spec.ts created the first
// Security Administrator.
test.describe.configure({ mode: 'serial' });

const run = Date.now().toString(36);
const user = {
  name: `Alice Browser ${run}`,
  renamed: `Alice B. Browser ${run}`,
  email: `alice.${run}@example.com`,
};
const junior = { login: `junior-${run}`, password: 'junior helpdesk password' };

test('an administrator creates, finds, edits and deletes a user; the audit log shows it', async ({ page }) => {
  await page.goto('/');
  await shot(page, '10-sign-in');
  await signInByForm(page, FIRST_ADMIN.login, FIRST_ADMIN.password);
  await expect(page.getByTestId('nav-users')).toHaveAttribute('aria-current', 'page');
  await shot(page, '11-users-list');

  // Create.
  await page.getByTestId('add-user').click();
  const form = page.getByTestId('add-user-form');
  await form.getByLabel('Display name').fill(user.name);
  await form.getByLabel('E-mail address').fill(user.email);
  await shot(page, '12-add-user');
  await form.getByRole('button', { name: 'Create user' }).click();
  await expect(page.getByTestId('user-title')).toHaveText(user.name);
  await shot(page, '13-user-created');

  // Find it through the server-side search.
  await page.getByTestId('nav-users').click();
  await page.getByTestId('users-search').fill(`alice.${run}`);
  await expect(page.getByTestId('users-total')).toHaveText('1 user');
  const row = page.locator('[data-testid^="user-row-"]');
  await expect(row).toHaveCount(1);
  await expect(row).toContainText(user.email);
  await shot(page, '14-user-found-by-search');

  // Edit.
  await row.getByRole('button', { name: user.name }).click();
  const details = page.getByTestId('user-form');
  await details.getByLabel('Display name').fill(user.renamed);
  await page.getByTestId('save-user').click();
  await expect(page.getByTestId('user-saved')).toBeVisible();
  await expect(page.getByTestId('user-title')).toHaveText(user.renamed);

  // Delete, after a confirmation that names the user.
  await page.getByTestId('delete-user').click();
  const confirm = page.getByTestId('confirm-delete');
  await expect(confirm).toContainText(user.renamed);
  await expect(confirm).toContainText(user.email);
  await shot(page, '15-confirm-delete');
  await page.getByTestId('confirm-delete-button').click();
  await expect(page.getByTestId('users-table')).toBeVisible();
  await page.getByTestId('users-search').fill(`alice.${run}`);
  await expect(page.getByTestId('users-total')).toHaveText('0 users');
  await shot(page, '16-user-deleted');

  // The audit log: newest first, by this administrator, with before/after.
  await page.getByTestId('nav-audit').click();
  const actions = page.getByTestId('audit-action');
  await expect(actions.nth(0)).toHaveText('user.delete');
  await expect(actions.nth(1)).toHaveText('user.update');
  await expect(actions.nth(2)).toHaveText('user.create');
  const newest = page.getByTestId('audit-row').nth(0);
  await expect(newest).toContainText(FIRST_ADMIN.login);
  await expect(newest).toContainText(user.renamed);
  await expect(page.getByTestId('audit-row').nth(1)).toContainText(user.name);
  await page.getByTestId('audit-verify').click();
  await expect(page.getByTestId('audit-verification')).toContainText('intact');
  await shot(page, '17-audit-log');

  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByTestId('audit-export-csv').click(),
  ]);
  expect(download.suggestedFilename()).toBe('bramble-audit-log.csv');
  const saved = join(test.info().outputDir, 'bramble-audit-log.csv');
  await download.saveAs(saved);
  if (process.env.ARTIFACTS) await download.saveAs(join(process.env.ARTIFACTS, 'bramble-audit-log.csv'));
  const csv = readFileSync(saved, 'utf8');
  expect(csv.split('\r\n')[0]).toBe('id,at,actor,action,target,before,after,hash');
  expect(csv).toContain('"user.delete"');
  expect(csv).toContain(user.email);
});

test('an administrator creates a group, opens it and deletes it after a confirmation', async ({ page }) => {
  const name = `Sales ${run}`;
  await page.goto('/');
  await signInByForm(page, FIRST_ADMIN.login, FIRST_ADMIN.password);
  await page.getByTestId('nav-groups').click();
  const form = page.getByTestId('add-group-form');
  await form.getByLabel('New group').fill(name);
  await form.getByLabel('Description').fill('field staff');
  await form.getByRole('button', { name: 'Create group' }).click();
  const table = page.getByTestId('groups-table');
  await table.getByRole('button', { name }).click();
  await expect(page.getByTestId('group-members')).toContainText(`Members of ${name}`);
  await expect(page.getByTestId('group-members')).toContainText('No members');
  await shot(page, '18-group-created');
  await table.getByRole('row', { name: new RegExp(name) }).getByRole('button', { name: 'Delete' }).click();
  const dialog = page.getByRole('dialog');
  await expect(dialog).toContainText(name);
  await dialog.getByRole('button', { name: `Delete ${name}` }).click();
  await expect(table).not.toContainText(name);
  await expect(page.getByTestId('group-members')).toHaveCount(0);
});

test('a Security Administrator gives an account the Junior Helpdesk role', async ({ page }) => {
  await page.goto('/');
  await signInByForm(page, FIRST_ADMIN.login, FIRST_ADMIN.password);
  await page.getByTestId('nav-administrators').click();
  const form = page.getByTestId('add-administrator-form');
  await form.getByLabel('Login name').fill(junior.login);
  await form.locator('input[type="password"]').fill(junior.password);
  await form.getByRole('checkbox', { name: 'Junior Helpdesk' }).check();
  await form.getByRole('button', { name: 'Create administrator' }).click();
  await expect(page.getByTestId('administrator-created')).toContainText(junior.login);
  await expect(page.getByTestId(`administrator-row-${junior.login}`)).toContainText('Junior Helpdesk');
  await shot(page, '20-junior-helpdesk-created');

  // A custom role, from the permission list the server gives.
  const roleForm = page.getByTestId('add-role-form');
  await roleForm.getByLabel('Role name').fill(`Auditors ${run}`);
  await roleForm.getByRole('checkbox', { name: /^audit\.read/ }).check();
  await roleForm.getByRole('button', { name: 'Create role' }).click();
  await expect(page.getByTestId('roles-table')).toContainText(`Auditors ${run}`);
  await shot(page, '21-custom-role-created');
  await page.getByTestId('sign-out').click();
  await expect(page.getByTestId('sign-in-form')).toBeVisible();
});

test('a Junior Helpdesk sees users but not administration, and the API refuses it too', async ({ page }) => {
  await page.goto('/');
  await signInByForm(page, junior.login, junior.password);
  await expect(page.getByTestId('signed-in-as')).toContainText('Junior Helpdesk');
  await expect(page.getByTestId('nav-users')).toBeVisible();
  for (const hidden of ['administrators', 'audit', 'groups', 'servers']) {
    await expect(page.getByTestId(`nav-${hidden}`)).toHaveCount(0);
  }
  await expect(page.getByTestId('users-table')).toBeVisible();
  await expect(page.getByTestId('add-user')).toHaveCount(0);
  await shot(page, '30-junior-helpdesk-console');

  // Support work is open to it: looking a device up by PIN.
  await page.getByTestId('nav-devices').click();
  const pinForm = page.getByTestId('find-pin-form');
  await pinForm.getByLabel('Device PIN').fill('2a3b4c5d');
  await pinForm.getByRole('button', { name: 'Find device' }).click();
  await expect(page.getByTestId('device-not-found')).toContainText('2A3B4C5D');
  const traceForm = page.getByTestId('trace-form');
  await traceForm.getByLabel('Message RefID').fill('not-a-refid');
  await traceForm.getByRole('button', { name: 'Trace message' }).click();
  await expect(page.getByTestId('api-error')).toHaveAttribute('data-code', 'INVALID_REF_ID');
  await shot(page, '32-junior-helpdesk-devices');

  // Typing the address of a hidden screen does not show it either.
  await page.goto('/#/audit');
  await expect(page.getByTestId('api-error')).toHaveAttribute('data-code', 'PERMISSION_DENIED');
  await expect(page.getByTestId('audit-table')).toHaveCount(0);
  await shot(page, '31-junior-helpdesk-no-audit');

  for (const [method, path] of [
    ['GET', '/api/audit'],
    ['GET', '/api/administrators'],
    ['POST', '/api/users'],
  ] as const) {
    const response = await page.request.fetch(path, {
      method,
      data: method === 'POST' ? { display_name: 'X', email: 'x@example.com' } : undefined,
    });
    expect(response.status(), `${method} ${path}`).toBe(403);
    const body = await response.json();
    expect(body.code).toBe('PERMISSION_DENIED');
    expect(body.message).toContain('Junior Helpdesk');
  }
});
