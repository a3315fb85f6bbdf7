import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test, type Page } from '@playwright/test';
import { FIRST_ADMIN, shot, signInByApi } from './helpers';

const EXPECTED_COMPONENTS = [
  'Messaging Agent',
  'Policy Service',
  'Synchronization Service',
  'MailStore Service',
];

/** Console errors and uncaught exceptions seen on a page. */
function collectPageErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') {
      const where = msg.location();
      errors.push(`console.error: ${msg.text()}${where.url ? ` (${where.url}:${where.lineNumber})` : ''}`);
    }
  });
  page.on('pageerror', (err) => errors.push(`uncaught: ${err.message}`));
  return errors;
}

/**
 * Wait until the console shows the health report, failing with the
 * administrator-facing error text when it shows an API error instead.
 */
async function waitForHealthReport(page: Page): Promise<void> {
  const table = page.getByTestId('component-table');
  const apiError = page.getByTestId('api-error');
  await expect(table.or(apiError).first()).toBeVisible();
  if (!(await table.isVisible()) && (await apiError.isVisible())) {
    throw new Error(`The console shows an API error instead of the health report: ${await apiError.innerText()}`);
  }
}

function componentRow(page: Page, name: string) {
  return page
    .getByTestId('component-table')
    .locator('[data-testid^="component-row-"]')
    .filter({ has: page.getByText(name, { exact: true }) });
}

// Runs first (files run in name order, tests in file order): the server
// starts with an empty database, so the console asks for the first
// Security Administrator.
test.describe('First run', () => {
  test('creates the first Security Administrator, then only signing in is offered', async ({ page }) => {
    await page.goto('/');
    const form = page.getByTestId('first-run-form');
    await expect(form).toBeVisible();
    await shot(page, '01-first-run');
    await form.getByLabel('Login name').fill(FIRST_ADMIN.login);
    await form.getByLabel('Display name').fill(FIRST_ADMIN.displayName);
    const passwords = form.locator('input[type="password"]');
    await passwords.nth(0).fill(FIRST_ADMIN.password);
    await passwords.nth(1).fill(FIRST_ADMIN.password);
    // Without the setup code `bramble serve` printed, nobody gets in.
    await form.getByLabel('Setup code').fill('WRONG-CODE');
    await form.getByRole('button', { name: 'Create administrator' }).click();
    await expect(form.getByTestId('api-error')).toContainText('setup code is wrong');
    const code = readFileSync(join(process.env.BRAMBLE_DATA_DIR ?? '', 'setup-code'), 'utf8').trim();
    await form.getByLabel('Setup code').fill(code);
    await form.getByRole('button', { name: 'Create administrator' }).click();

    await expect(page.getByTestId('signed-in-as')).toContainText('Security Administrator');
    await expect(page.getByTestId('nav-administrators')).toBeVisible();
    await shot(page, '02-first-administrator-signed-in');

    // The first-run endpoint is closed now.
    const again = await page.request.post('/api/setup', {
      data: { login: 'intruder', password: 'another password' },
    });
    expect(again.status()).toBe(409);
    expect((await again.json()).code).toBe('FIRST_ADMINISTRATOR_EXISTS');
  });
});

test.describe('Servers and components', () => {
  test.beforeEach(async ({ page }) => {
    await signInByApi(page);
  });
  test('lists every server component as running', async ({ page }) => {
    await page.goto('/#/servers');

    await expect(page.getByRole('heading', { name: 'Bramble Administration Service' })).toBeVisible();
    await waitForHealthReport(page);

    for (const name of EXPECTED_COMPONENTS) {
      const row = componentRow(page, name);
      await expect(row, `row for ${name}`).toHaveCount(1);
      await expect(row.locator('[data-testid^="component-state-"]'), `state of ${name}`).toHaveText(
        'running',
      );
    }
    await expect(page.getByTestId('api-error')).toHaveCount(0);
    // The live status stream (server-sent events) is open.
    await expect(page.getByTestId('live-status')).toHaveAttribute('data-live', 'open');
  });

  test('shows that no wireless network connection is configured yet', async ({ page }) => {
    await page.goto('/#/servers');
    await waitForHealthReport(page);

    await expect(page.getByTestId('wireless-state')).toHaveText('Not configured');
    await expect(page.getByTestId('wireless-error')).toContainText('bramble srp set');
  });

  test('shows the overall status as ok', async ({ page }) => {
    await page.goto('/#/servers');
    await waitForHealthReport(page);

    await expect(page.getByTestId('overall-status')).toHaveText('ok');
    await expect(page.getByTestId('server-version')).not.toBeEmpty();
  });

  test('logs no console errors while loading and polling', async ({ page }) => {
    const errors = collectPageErrors(page);
    const failedRequests: string[] = [];
    page.on('requestfailed', (req) =>
      failedRequests.push(`${req.method()} ${req.url()}: ${req.failure()?.errorText ?? 'failed'}`),
    );
    page.on('response', (res) => {
      if (res.status() >= 400) failedRequests.push(`${res.request().method()} ${res.url()}: HTTP ${res.status()}`);
    });

    await page.goto('/#/servers');
    await waitForHealthReport(page);

    // Let at least one more /health poll (every 5 s) happen.
    const nextPoll = page.waitForResponse((res) => new URL(res.url()).pathname === '/health', {
      timeout: 15_000,
    });
    await nextPoll;
    await expect(page.getByTestId('component-table')).toBeVisible();

    expect(errors, 'console errors').toEqual([]);
    expect(failedRequests, 'failed requests').toEqual([]);
  });
});
