import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { expect, type Page } from '@playwright/test';

/** The first Security Administrator, created by the first-run test. */
export const FIRST_ADMIN = {
  login: 'security-admin',
  displayName: 'Security Admin',
  password: 'bramble browser test',
};

/** Saves a full-page screenshot into $ARTIFACTS/screenshots (when set). */
export async function shot(page: Page, name: string): Promise<void> {
  const dir = process.env.ARTIFACTS;
  if (!dir) return;
  const folder = join(dir, 'screenshots');
  mkdirSync(folder, { recursive: true });
  await page.screenshot({ path: join(folder, `${name}.png`), fullPage: true, animations: 'disabled' });
}

/** Signs in through the API; the session cookie lands in the page's context. */
export async function signInByApi(page: Page, login = FIRST_ADMIN.login, password = FIRST_ADMIN.password) {
  const response = await page.request.post('/api/session', { data: { login, password } });
  expect(response.status(), await response.text()).toBe(200);
}

/** Signs in through the sign-in page. */
export async function signInByForm(page: Page, login: string, password: string) {
  const form = page.getByTestId('sign-in-form');
  await expect(form).toBeVisible();
  await form.getByLabel('Login name').fill(login);
  await form.locator('input[type="password"]').fill(password);
  await form.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByTestId('signed-in-as')).toBeVisible();
}
