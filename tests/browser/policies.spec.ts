import { expect, test } from '@playwright/test';
import { FIRST_ADMIN, shot, signInByForm } from './helpers';

// IT policies, a user's activation password and resolved policy, global
// message filters and a component restart, as a Security Administrator.
// Runs after console.spec.ts created the first Security Administrator.
test.describe.configure({ mode: 'serial' });

const run = Date.now().toString(36);
const policyName = `Executives ${run}`;
const user = { name: `Paula Policy ${run}`, email: `paula.${run}@example.com` };

test('the rule editor shows a rule out of range with its range; the user page shows the resolved policy', async ({ page }) => {
  await page.goto('/');
  await signInByForm(page, FIRST_ADMIN.login, FIRST_ADMIN.password);
  const created = await page.request.post('/api/users', { data: { display_name: user.name, email: user.email } });
  expect(created.status(), await created.text()).toBe(201);
  const userId = (await created.json()).id as number;

  await page.getByTestId('nav-it-policies').click();
  const form = page.getByTestId('add-policy-form');
  await form.getByLabel('New IT policy').fill(policyName);
  await form.getByRole('button', { name: 'Create policy' }).click();
  await expect(page.getByTestId('policy-title')).toHaveText(policyName);

  // Every rule of the catalog is listed with what it accepts.
  const lengthRow = page.getByTestId('rule-MinimumPasswordLength');
  await expect(lengthRow).toContainText('Minimum Password Length');
  await expect(lengthRow).toContainText('4–14 characters');
  await shot(page, '40-policy-editor');

  // Out of range: the field says so at once, and the server refuses it
  // with the rule's name and range.
  await page.getByTestId('rule-set-PasswordRequired').check();
  await page.getByRole('switch', { name: 'Password Required' }).check();
  await page.getByTestId('rule-set-MinimumPasswordLength').check();
  const length = page.getByTestId('rule-input-MinimumPasswordLength');
  await length.fill('20');
  await expect(lengthRow).toContainText('Minimum Password Length must be between 4 and 14');
  await page.getByTestId('save-policy').click();
  const error = page.getByTestId('api-error');
  await expect(error).toHaveAttribute('data-code', 'POLICY_RULE_OUT_OF_RANGE');
  await expect(error).toContainText('Minimum Password Length must be between 4 and 14; got 20');
  await shot(page, '41-policy-rule-out-of-range');

  await length.fill('10');
  await page.getByTestId('save-policy').click();
  await expect(page.getByTestId('policy-saved')).toBeVisible();
  await expect(page.getByTestId('api-error')).toHaveCount(0);

  // Assign it to the user, found by the server-side search.
  await page.getByTestId('assign-user-search').fill(user.email);
  await page.getByTestId(`assign-user-${userId}`).click();
  await expect(page.getByTestId('policy-assignments')).toContainText(user.name);
  await shot(page, '42-policy-assigned');

  // The user's page: the policy that applies and where it comes from.
  await page.goto(`/#/users/${userId}`);
  await expect(page.getByTestId('user-title')).toHaveText(user.name);
  await expect(page.getByTestId('user-policy-source')).toContainText(`${policyName}, assigned to this user`);
  const rules = page.getByTestId('user-policy-rules');
  await expect(rules.getByRole('row', { name: /Minimum Password Length/ })).toContainText('10');
  await expect(rules.getByRole('row', { name: /Password Required/ })).toContainText('true');

  // Activation password: generated, shown once; the account is Initializing.
  await expect(page.getByTestId('activation-status')).toHaveText('Not activated');
  await page.getByTestId('generate-activation-password').click();
  await expect(page.getByTestId('generated-password')).toBeVisible();
  const password = (await page.getByTestId('generated-password').locator('code').innerText()).trim();
  expect(password).toMatch(/^[a-z2-9]{8}$/);
  await expect(page.getByTestId('activation-status')).toHaveText('Initializing');
  await expect(page.getByTestId('user-activation-status')).toHaveText('Initializing');
  await expect(page.getByTestId('activation-password-state')).toContainText('0 wrong attempts, 5 left');
  await shot(page, '43-user-policy-and-activation');

  // Asked to e-mail it: the testbed's real mail server takes the message,
  // and the page says so.
  await page.getByTestId('activation-email-user').check();
  await page.getByTestId('activation-form').getByLabel('Activation password').fill('chosen-pass');
  await page.getByTestId('set-activation-password').click();
  const emailed = page.getByTestId('activation-emailed');
  await expect(emailed).toContainText(`E-mailed to ${user.email}`);
  await expect(emailed).toContainText('The mail server accepted the message.');
  await expect(page.getByTestId('generated-password')).toHaveCount(0);
  await expect(page.getByTestId('activation-password-state')).toContainText('5 left');
  await shot(page, '44-activation-emailed');

  // The audit log has the policy's changes and the password, without it.
  const audit = await (await page.request.get('/api/audit/export?format=json')).text();
  expect(audit).toContain('policy.update');
  expect(audit).toContain('user.activation_password.set');
  expect(audit).not.toContain(password);
});

test('global message filters are added and put in order', async ({ page }) => {
  await page.goto('/');
  await signInByForm(page, FIRST_ADMIN.login, FIRST_ADMIN.password);
  await page.getByTestId('nav-filters').click();
  for (const [name, text] of [
    [`Newsletters ${run}`, 'newsletter'],
    [`Boss ${run}`, 'ceo@'],
  ]) {
    await page.getByTestId('add-filter').click();
    const form = page.getByTestId('filter-form');
    await form.getByLabel('Name').fill(name);
    await form.getByLabel('Text').fill(text);
    await form.getByLabel('Then').selectOption({ label: name.startsWith('Boss') ? 'Forward with priority' : 'Do not forward' });
    await page.getByTestId('save-filter').click();
    await expect(page.getByTestId('filters-table')).toContainText(name);
  }
  const rows = page.getByTestId('filter-row');
  await expect(rows.last()).toContainText(`Boss ${run}`);
  await page.getByRole('button', { name: `Move Boss ${run} up` }).click();
  await expect(rows.filter({ hasText: `Boss ${run}` })).toContainText('Forward with priority');
  const names = await rows.allInnerTexts();
  const boss = names.findIndex((t) => t.includes(`Boss ${run}`));
  const newsletters = names.findIndex((t) => t.includes(`Newsletters ${run}`));
  expect(boss).toBeLessThan(newsletters);
  await shot(page, '47-global-filters');
});

test('a component restarts after a confirmation that names it', async ({ page }) => {
  await page.goto('/');
  await signInByForm(page, FIRST_ADMIN.login, FIRST_ADMIN.password);
  await page.getByTestId('nav-servers').click();
  await page.getByTestId('restart-policy_service').click();
  const confirm = page.getByTestId('confirm-restart');
  await expect(confirm).toContainText('Restart the Policy Service?');
  await shot(page, '45-confirm-restart');
  await page.getByTestId('confirm-restart-button').click();
  await expect(page.getByTestId('restart-note')).toContainText('the Controller is restarting the Policy Service');
  const row = page.getByTestId('component-row-policy_service');
  await expect(row).toContainText('restart requested by security-admin', { timeout: 30_000 });
  await expect(page.getByTestId('component-state-policy_service')).toHaveText(/running/i, { timeout: 30_000 });
  await shot(page, '46-component-restarted');
});

test('a software configuration lists applications and is assigned to a group', async ({ page }) => {
  const name = `Field apps ${run}`;
  const group = `Field ${run}`;
  await page.goto('/');
  await signInByForm(page, FIRST_ADMIN.login, FIRST_ADMIN.password);
  const created = await page.request.post('/api/groups', { data: { name: group } });
  expect(created.status(), await created.text()).toBe(201);

  await page.getByTestId('nav-software').click();
  const form = page.getByTestId('add-software-form');
  await form.getByLabel('New software configuration').fill(name);
  await form.getByRole('button', { name: 'Create configuration' }).click();
  await expect(page.getByTestId('software-title')).toHaveText(name);

  const apps = page.getByTestId('software-applications');
  await page.getByTestId('add-application').click();
  await apps.getByLabel('Application name').last().fill('CRM');
  await apps.getByLabel('Version').last().fill('2.1');
  await page.getByTestId('add-application').click();
  await apps.getByLabel('Application name').last().fill('Games');
  await apps.getByLabel('Disposition').last().selectOption('disallowed');
  await page.getByTestId('save-software').click();
  await expect(page.getByTestId('software-saved')).toBeVisible();

  await page.getByLabel('Group', { exact: true }).selectOption({ label: group });
  await page.getByRole('button', { name: 'Assign to group' }).click();
  await expect(page.getByTestId('software-assignments')).toContainText(group);
  await shot(page, '48-software-configuration');

  const detail = await (await page.request.get('/api/software')).json();
  const mine = detail.find((c: { name: string }) => c.name === name);
  expect(mine.applications).toBe(2);
  expect(mine.assignments).toBe(1);
});

test('message statistics are drawn as charts', async ({ page }) => {
  await page.goto('/');
  await signInByForm(page, FIRST_ADMIN.login, FIRST_ADMIN.password);
  await page.getByTestId('nav-statistics').click();
  const chart = page.getByTestId('global-statistics');
  await expect(chart.getByRole('listitem')).toHaveCount(7);
  await expect(chart.getByRole('listitem', { name: /^Forwarded to devices: \d+$/ })).toBeVisible();
  await shot(page, '49-statistics');
});
