import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, test } from '@playwright/test';
import { shot, signInByApi } from './helpers';

// A real device activation over the air: scripts/test.sh starts a mail
// testbed (Dovecot, Postfix) and a relay that e-mails activation requests
// into it, and passes their addresses here.
const bin = process.env.BRAMBLE_BIN;
const relayServer = process.env.BRAMBLE_RELAY_SERVER;
const relayDevices = process.env.BRAMBLE_RELAY_DEVICES;
const SRP_ID = 'S80001000';
const SRP_KEY = 'browser-test-srp-key';
const PIN = '2A000001';

/** Runs `bramble …` to its end; resolves with its exit code and output. */
function run(args: string[], input: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(bin!, args, { env: process.env });
    let output = '';
    child.stdout.on('data', (d) => (output += String(d)));
    child.stderr.on('data', (d) => (output += String(d)));
    child.on('close', (code) => resolve({ code, output }));
    child.stdin.end(input);
  });
}

test('a device activates over the air, its status follows on screen, and a wipe names the device', async ({ page }) => {
  test.skip(!bin || !relayServer || !relayDevices, 'needs the testbed and relay that scripts/test.sh starts');
  test.setTimeout(240_000);
  let listener: ChildProcess | null = null;
  try {
    // The wireless network connection, as an administrator sets it up on
    // the Servers page; the link state follows on the same page.
    await signInByApi(page);
    await page.goto('/#/servers');
    const [relayHost, relayPort] = relayServer!.split(':');
    const form = page.getByTestId('wireless-settings');
    await form.getByLabel('SRP ID').fill(SRP_ID);
    await form.getByLabel('SRP authentication key').fill(SRP_KEY);
    await form.getByLabel('Relay host').fill(relayHost);
    await form.getByLabel('Relay port').fill(relayPort);
    await form.getByLabel('Client access licences').fill('10');
    await form.getByTestId('save-wireless').click();
    await expect(form.getByTestId('wireless-saved')).toContainText(SRP_ID);
    await expect(form.getByTestId('wireless-licences')).toHaveText('0 of 10 licences in use');
    await expect(page.getByTestId('wireless-state')).toHaveText('Connected', { timeout: 60_000 });
    await expect(page.getByTestId('wireless-srp-id')).toHaveText(SRP_ID);
    await shot(page, 'wireless-0-connection-set');
    // The key is never shown again.
    const shown = await page.request.get('/api/wireless');
    expect(await shown.text()).not.toContain(SRP_KEY);
    await expect
      .poll(async () => ((await (await page.request.get('/health')).json()) as { wireless: { connected: boolean } }).wireless.connected, {
        timeout: 60_000,
        message: 'the SRP link to the relay comes up',
      })
      .toBe(true);

    const created = await page.request.post('/api/users', {
      data: { display_name: 'Wireless User', email: 'user1@example.com', mailbox_login: 'user1' },
    });
    expect(created.status(), await created.text()).toBe(201);
    const user = (await created.json()) as { id: number };

    // The administrator sets the activation password on the user's page.
    await page.goto(`/#/users/${user.id}`);
    const activation = page.getByTestId('user-activation');
    await activation.getByLabel('Activation password').fill('kx7m2qpa');
    await activation.getByTestId('set-activation-password').click();
    await expect(activation.getByTestId('activation-status')).toHaveText(/initializing/i);
    await shot(page, 'wireless-1-activation-password-set');

    // The user activates the device: the request travels by e-mail.
    const keys = join(mkdtempSync(join(tmpdir(), 'bramble-device-')), 'device.keys');
    const activated = await run(
      ['device', 'activate', '--pin', PIN, '--email', 'user1@example.com', '--password-stdin', '--relay', relayDevices!, '--keys', keys, '--timeout-secs', '150'],
      'kx7m2qpa',
    );
    expect(activated.code, activated.output).toBe(0);
    expect(activated.output).toContain('Encryption Verified. Waiting for Services.');
    expect(activated.output).toContain('Services Received. Your email address, user1@example.com is now enabled.');
    expect(activated.output).toContain('Synchronization complete');

    // The console shows the status the server reached, step by step.
    await page.reload();
    await expect(activation.getByTestId('activation-status')).toHaveText(/completed/i, { timeout: 30_000 });
    const steps = activation.getByTestId('activation-steps');
    for (const step of [/encryption verified/i, /policy applied/i, /services received/i, /synchronizing/i]) {
      await expect(steps).toContainText(step);
    }
    await shot(page, 'wireless-2-activation-completed');

    // The device stays online to take commands.
    listener = spawn(bin!, ['device', 'listen', '--keys', keys, '--relay', relayDevices!, '--srp-id', SRP_ID], { env: process.env });

    // Support staff send the IT policy again from the user's page: the
    // dialog names the device; the device confirms the (default) policy.
    await page.goto(`/#/users/${user.id}`);
    await page.getByTestId('resend-policy').click();
    await expect(page.getByTestId('confirm-resend')).toContainText(`device ${PIN}`);
    await page.getByTestId('confirm-resend-button').click();
    await expect(page.getByTestId('resend-done')).toContainText(`device ${PIN}`);
    await page.getByTestId('resend-books').click();
    await page.getByTestId('confirm-resend-button').click();
    await expect(page.getByTestId('resend-done')).toContainText('service books');
    await shot(page, 'wireless-3-resend-policy');

    // Support staff find the device and wipe it: the dialog names the
    // device and wants its PIN typed again.
    await page.goto('/#/devices');
    await page.getByLabel('Device PIN').fill(PIN);
    await page.getByRole('button', { name: 'Find device' }).click();
    const detail = page.getByTestId('device-detail');
    await expect(detail).toContainText(`Device ${PIN}`);
    await expect(detail.getByTestId('device-policy-applied')).toContainText('Default');
    await detail.getByRole('button', { name: 'Delete all device data' }).click();
    const dialog = page.getByRole('dialog');
    await expect(dialog).toContainText(`device ${PIN}`);
    const confirm = dialog.getByRole('button', { name: 'Delete all device data' });
    await expect(confirm).toBeDisabled();
    await dialog.getByLabel('Device PIN').fill(PIN);
    await shot(page, 'wireless-4-wipe-confirmation');
    await confirm.click();
    const commands = page.getByTestId('device-commands-table');
    await expect(commands).toContainText('Delete all device data');
    await expect(commands).toContainText('acknowledged', { timeout: 60_000 });
    await shot(page, 'wireless-5-wipe-acknowledged');

    // The wiped device has left its user; the audit log has the command.
    await page.goto(`/#/users/${user.id}`);
    await expect(page.getByTestId('activation-status')).toHaveText(/not activated/i, { timeout: 30_000 });
    const audit = await page.request.get('/api/audit?page=1&per_page=20');
    expect(await audit.text()).toContain('device.command');
  } finally {
    listener?.kill('SIGTERM');
  }
});
