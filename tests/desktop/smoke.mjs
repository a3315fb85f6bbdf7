import { spawnSync } from 'node:child_process';
// Desktop smoke test, WebDriver side. Run by tests/desktop/smoke.sh, which
// starts Xvfb and tauri-driver first. Uses only Node's built-in fetch.
//
// Opens the real bramble-desktop window through tauri-driver, creates the
// first Security Administrator on the console's first-run page (a round
// trip: the form's answer signs the window in with a bearer token), opens
// the Servers page, waits until it shows the Messaging Agent as running
// (the in-process server started and the console reached it over
// loopback) and that its live status stream is open (the window's own
// server-sent events, read with its bearer token), and saves a screenshot. Then it closes the app: SIGTERM first, the way a session
// manager does, so the app shuts its server down (ending a WebDriver
// session kills the app with SIGKILL, which would skip that), waits for it
// to exit, and ends the session.
//
// Environment:
//   WEBDRIVER_URL   tauri-driver's address, e.g. http://127.0.0.1:4444
//   BRAMBLE_DESKTOP the bramble-desktop binary (absolute path)
//   SCREENSHOT      where to save the PNG
//   DRIVER_PGID     process group of tauri-driver (finds the app to close)
//   SMOKE_TIMEOUT_S how long to wait for the console (default 60)

import { readdir, readFile, readlink, writeFile } from 'node:fs/promises';

const driver = required('WEBDRIVER_URL').replace(/\/+$/, '');
const application = required('BRAMBLE_DESKTOP');
const screenshotPath = required('SCREENSHOT');
const timeoutMs = Number(process.env.SMOKE_TIMEOUT_S ?? '60') * 1000;

const ROW = '[data-testid="component-row-messaging_agent"]';
const STATE = '[data-testid="component-state-messaging_agent"]';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`smoke.mjs: ${name} is not set (run tests/desktop/smoke.sh)`);
    process.exit(2);
  }
  return value;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One WebDriver call; returns `value` or throws with the driver's message. */
async function wd(method, path, body, timeout = 30_000) {
  const response = await fetch(`${driver}${path}`, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(timeout),
  });
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${method} ${path}: HTTP ${response.status}: ${text.slice(0, 300)}`);
  }
  if (!response.ok || (json.value && json.value.error)) {
    const v = json.value ?? {};
    throw new Error(`${method} ${path}: ${v.error ?? response.status}: ${v.message ?? text.slice(0, 300)}`);
  }
  return json.value;
}

/** What the window shows now. */
async function look(session) {
  return wd('POST', `/session/${session}/execute/sync`, {
    script: `
      const row = document.querySelector(arguments[0]);
      const state = document.querySelector(arguments[1]);
      const live = document.querySelector('[data-testid="live-status"]');
      return {
        live: live ? live.getAttribute('data-live') : null,
        url: location.href,
        title: document.title,
        row: row ? row.innerText : null,
        state: state ? state.textContent : null,
        // textContent: the console upper-cases states with CSS only.
        text: document.body ? document.body.textContent : '',
      };`,
    args: [ROW, STATE],
  });
}

/** The WebDriver ids of the elements matching a CSS selector. */
async function elements(session, css) {
  const found = await wd('POST', `/session/${session}/elements`, { using: 'css selector', value: css });
  return found.map((element) => Object.values(element)[0]);
}

/**
 * The first run: the window shows the first-run form of an empty database;
 * fill it in the way a person would and wait until it has signed in.
 */
async function createFirstAdministrator(session, deadline) {
  const FORM = '[data-testid="first-run-form"]';
  for (;;) {
    if ((await elements(session, FORM)).length > 0) break;
    if (Date.now() > deadline) throw new Error('the console did not show the first-run page');
    await sleep(250);
  }
  const inputs = await elements(session, `${FORM} input`);
  if (inputs.length < 4) throw new Error(`the first-run form has ${inputs.length} fields, expected 4`);
  const values = ['desktop-admin', 'Desktop Admin', 'desktop smoke password', 'desktop smoke password'];
  for (const [i, text] of values.entries()) {
    await wd('POST', `/session/${session}/element/${inputs[i]}/value`, { text });
  }
  const [submit] = await elements(session, `${FORM} button[type="submit"]`);
  await wd('POST', `/session/${session}/element/${submit}/click`, {});
  for (;;) {
    const signedIn = await elements(session, '[data-testid="signed-in-as"]');
    if (signedIn.length > 0) {
      const who = await wd('GET', `/session/${session}/element/${signedIn[0]}/text`);
      console.log(`first run done; signed in as ${JSON.stringify(who)}`);
      break;
    }
    if (Date.now() > deadline) throw new Error('creating the first administrator did not sign the window in');
    await sleep(250);
  }
  await wd('POST', `/session/${session}/execute/sync`, { script: "location.hash = '#/servers'", args: [] });
}

async function screenshot(session) {
  const png = await wd('GET', `/session/${session}/screenshot`);
  await writeFile(screenshotPath, Buffer.from(png, 'base64'));
  console.log(`screenshot: ${screenshotPath}`);
  // WebKit's own capture can come back blank without a compositor; the X
  // server's view of the screen is what a person would see.
  const screen = screenshotPath.replace(/\.png$/, '-screen.png');
  const grab = spawnSync('import', ['-window', 'root', screen], { stdio: 'inherit' });
  if (grab.status === 0) {
    console.log(`screen: ${screen}`);
  }
}

/** Pids of the app started through this tauri-driver (Linux /proc). */
async function appPids() {
  const group = process.env.DRIVER_PGID;
  const pids = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const exe = (await readlink(`/proc/${entry}/exe`)).replace(/ \(deleted\)$/, '');
      if (exe !== application) continue;
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      const pgrp = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2];
      if (!group || pgrp === group) pids.push(Number(entry));
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return pids;
}

/** SIGTERM the app and wait up to 15 s for it to exit; returns a failure or null. */
async function closeApp() {
  const pids = await appPids();
  if (pids.length !== 1) return `expected one running app to close, found ${pids.length}`;
  const [pid] = pids;
  console.log(`closing the app (pid ${pid}) with SIGTERM`);
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if ((await appPids()).length === 0) {
      console.log('the app exited');
      return null;
    }
    await sleep(100);
  }
  return 'the app was still running 15 s after SIGTERM';
}

async function main() {
  console.log(`starting ${application} through ${driver}`);
  const created = await wd(
    'POST',
    '/session',
    {
      capabilities: {
        alwaysMatch: {
          browserName: 'wry',
          'tauri:options': { application },
        },
      },
    },
    120_000,
  );
  const session = created.sessionId;
  console.log(`session ${session}`);

  let seen = null;
  let failure = null;
  try {
    const deadline = Date.now() + timeoutMs;
    try {
      await createFirstAdministrator(session, deadline);
    } catch (err) {
      failure = String(err.message ?? err);
    }
    for (; !failure; ) {
      try {
        seen = await look(session);
      } catch (err) {
        seen = { error: String(err.message ?? err) };
      }
      const text = seen.text ?? '';
      const state = (seen.state ?? '').trim();
      const running = seen.row && text.includes('Messaging Agent') && text.includes('running') && state === 'running';
      if (running && seen.live === 'open') {
        break;
      }
      if (Date.now() > deadline) {
        failure = running
          ? `the console's live status stream did not open within ${timeoutMs / 1000} s (badge: ${seen.live})`
          : `the console did not show the Messaging Agent as running within ${timeoutMs / 1000} s`;
        break;
      }
      await sleep(500);
    }
    if (!failure) {
      // The same element, found the WebDriver way.
      const element = await wd('POST', `/session/${session}/element`, { using: 'css selector', value: ROW });
      const id = Object.values(element)[0];
      const rowText = await wd('GET', `/session/${session}/element/${id}/text`);
      console.log(`found ${ROW}: ${JSON.stringify(rowText)}`);
      console.log(`Messaging Agent state: ${JSON.stringify(seen.state)}; live status stream: ${seen.live}`);
      console.log(`window: ${seen.title} at ${seen.url}`);
    }
    try {
      await screenshot(session);
    } catch (err) {
      failure ??= `could not take the screenshot: ${err.message ?? err}`;
    }
    if (!failure) failure = await closeApp();
  } finally {
    // Ends the session; an app still running is killed by the driver.
    try {
      await wd('DELETE', `/session/${session}`);
      console.log('session deleted');
    } catch (err) {
      console.log(`session end reported: ${err.message ?? err}`);
    }
  }

  if (failure) {
    console.error(`FAILED: ${failure}`);
    console.error('last look at the window:');
    console.error(JSON.stringify({ ...seen, text: (seen?.text ?? '').slice(0, 2000) }, null, 2));
    process.exit(1);
  }
  console.log('the window checks passed');
}

main().catch((err) => {
  console.error(`FAILED: ${err.message ?? err}`);
  process.exit(1);
});
