import { defineConfig } from '@playwright/test';

// Browser tests run against a real, already running `bramble serve`.
// The CI script starts the server and exports its address:
//   BRAMBLE_URL=http://127.0.0.1:3180 npm run test:browser
// Nothing here starts a server (no webServer entry).
const baseURL = (process.env.BRAMBLE_URL ?? 'http://127.0.0.1:3180').replace(/\/+$/, '');

// Browsers cannot be downloaded on the build machines: use the system one.
const executablePath = process.env.BRAMBLE_CHROMIUM ?? '/usr/bin/chromium';

export default defineConfig({
  testDir: '.',
  testMatch: '**/*.spec.ts',
  outputDir: '../../test-results/browser',
  reporter: 'list',
  workers: 1,
  fullyParallel: false,
  forbidOnly: !!process.env.CI,
  retries: 0,
  timeout: 60_000,
  // Components may still be starting when the tests begin; the page polls
  // /health every 5 s, so allow a few poll cycles before failing.
  expect: { timeout: 20_000 },
  use: {
    baseURL,
    browserName: 'chromium',
    headless: true,
    screenshot: 'only-on-failure',
    trace: 'off',
    launchOptions: {
      executablePath,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    },
  },
});
