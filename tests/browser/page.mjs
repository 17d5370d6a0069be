// The approver page in a real browser: Debian's chromium driven by
// playwright-core. tests/it/browser.rs starts a gavel server, decides the
// jobs named below, runs this script with GAVEL_URL and GAVEL_SHOTS, and
// checks the server's records afterwards. Exit code 0 only when every
// step held; each failed step says what it saw.

import { chromium } from 'playwright-core';
import { join } from 'node:path';

const base = process.env.GAVEL_URL;
const shots = process.env.GAVEL_SHOTS || '';
const token = (name) => `test-token-${name}`;
if (!base) throw new Error('GAVEL_URL is not set');

let step = 'start';
function check(cond, what) {
  if (!cond) throw new Error(`${step}: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // Playwright gives every launch a fresh, empty profile of its own.
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});

async function person(name) {
  const context = await browser.newContext({ viewport: { width: 420, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${base}/ui/login`);
  await page.fill('input[name=token]', token(name));
  await Promise.all([page.waitForURL(`${base}/ui/`), page.click('button[type=submit]')]);
  check((await page.textContent('header .who')) === name, `signed in as ${name}`);
  return { context, page };
}

async function queueIds(page) {
  await page.goto(`${base}/ui/`);
  return page.$$eval('li.job a', (as) => as.map((a) => a.getAttribute('href').split('/').pop()));
}

try {
  step = 'a signed-out browser sees nothing';
  {
    const context = await browser.newContext();
    const page = await context.newPage();
    for (const path of ['/ui/', '/ui/jobs/pg-single', '/ui/history', '/ui/me']) {
      const resp = await page.goto(`${base}${path}`);
      check(page.url() === `${base}/ui/login`, `${path} led to ${page.url()}`);
      check(resp.status() === 200, `status ${resp.status()}`);
      const body = await page.textContent('body');
      check(!body.includes('pg-single') && !body.includes('UPDATE'), `${path} showed job content`);
    }
    step = 'a wrong token is refused readably';
    await page.fill('input[name=token]', 'not-a-token');
    await page.click('button[type=submit]');
    const refused = await page.textContent('.refusal');
    check(refused.includes('UNAUTHENTICATED'), `saw: ${refused}`);
    await context.close();
  }

  step = 'alice signs in and sees her queue, oldest first, with stakes';
  const alice = await person('alice');
  let ids = await queueIds(alice.page);
  check(ids.join() === 'pg-single,pg-reject,pg-dual,pg-pay', `queue ${ids}`);
  check(await alice.page.$('li.job.dual a[href="/ui/jobs/pg-dual"]'), 'dual approval not red');
  check(await alice.page.$('li.job.single a[href="/ui/jobs/pg-single"]'), 'single approval not amber');
  check((await alice.page.textContent('li.job.single')).includes('expires in'), 'no time left shown');
  if (shots) await alice.page.screenshot({ path: join(shots, 'page-queue.png'), fullPage: true });

  step = 'alice opens a job and sees what will run';
  await alice.page.click('a[href="/ui/jobs/pg-single"]');
  const params = JSON.parse(await alice.page.textContent('#params'));
  check(params.sql === 'UPDATE orders SET status = 1 WHERE id = 7', `params ${JSON.stringify(params)}`);
  const text = await alice.page.textContent('main');
  for (const want of ['Fix order 7', 'one row', 'Primary rule', 'Snapshot', 'cfg:test:policy#sha256:']) {
    check(text.includes(want), `job page lacks ${want}`);
  }
  check((await alice.page.textContent('#job-hash')).length === 64, 'no job hash');
  if (shots) await alice.page.screenshot({ path: join(shots, 'page-job.png'), fullPage: true });

  step = 'alice approves with a reason and the job leaves her queue';
  await alice.page.fill('#approve-form input[name=reason]', 'checked the row count');
  await Promise.all([alice.page.waitForURL(/done=approved/), alice.page.click('#approve-form button')]);
  check((await alice.page.textContent('.notice')).includes('approval was recorded'), 'no notice');
  check((await alice.page.textContent('#state')) === 'approved', 'state not approved');
  ids = await queueIds(alice.page);
  check(!ids.includes('pg-single'), `still queued: ${ids}`);

  step = 'a reject without a reason is refused and changes nothing';
  await alice.page.goto(`${base}/ui/jobs/pg-reject`);
  await alice.page.fill('#reject-form input[name=reason]', '   ');
  await alice.page.click('#reject-form button');
  check((await alice.page.textContent('.refusal')).includes('REASON_REQUIRED'), 'no REASON_REQUIRED');
  check((await alice.page.textContent('#state')) === 'pending', 'state changed');

  step = 'content changed under the reviewer is refused';
  await alice.page.goto(`${base}/ui/jobs/pg-reject`);
  await alice.page.$eval('#approve-form input[name=job_hash]', (e) => { e.value = '0'.repeat(64); });
  await alice.page.fill('#approve-form input[name=reason]', 'looks fine');
  await alice.page.click('#approve-form button');
  check((await alice.page.textContent('.refusal')).includes('STALE_REVIEW'), 'no STALE_REVIEW');
  check((await alice.page.textContent('#state')) === 'pending', 'state changed');

  step = 'a forged form without the CSRF token is refused';
  // The request carries alice's session cookie, as a cross-site form
  // would if the cookie were not SameSite, but no CSRF token.
  const forgedResp = await alice.context.request.post(`${base}/ui/jobs/pg-reject/reject`, {
    form: { reason: 'forged' },
  });
  const forged = { status: forgedResp.status(), text: await forgedResp.text() };
  check(forged.status === 403 && forged.text.includes('PERMISSION_DENIED'), `forged: ${forged.status}`);

  step = 'alice fills one slot of the dual approval';
  await alice.page.goto(`${base}/ui/jobs/pg-dual`);
  await alice.page.fill('#approve-form input[name=reason]', 'first look');
  await Promise.all([alice.page.waitForURL(/done=approved/), alice.page.click('#approve-form button')]);
  check((await alice.page.textContent('#state')) === 'pending', 'one of two approvals completed it');
  check(!(await alice.page.$('#approve-form')), 'alice may approve twice');

  step = "bob's session cannot be used with alice's, nor alice's with bob's";
  const bob = await person('bob');
  await bob.page.goto(`${base}/ui/jobs/pg-reject`);
  const bobCsrf = await bob.page.$eval('#reject-form input[name=csrf]', (e) => e.value);
  const crossedResp = await alice.context.request.post(`${base}/ui/jobs/pg-reject/reject`, {
    form: { csrf: bobCsrf, reason: 'crossed' },
  });
  const crossed = { status: crossedResp.status(), text: await crossedResp.text() };
  check(crossed.status === 403 && crossed.text.includes('csrf'), `crossed: ${crossed.status}`);

  step = "bob's queue holds only what bob may act on";
  ids = await queueIds(bob.page);
  check(ids.join() === 'pg-reject,pg-dual', `bob's queue ${ids}`);

  step = 'bob completes the dual approval';
  await bob.page.goto(`${base}/ui/jobs/pg-dual`);
  await bob.page.fill('#approve-form input[name=reason]', 'second look');
  await Promise.all([bob.page.waitForURL(/done=approved/), bob.page.click('#approve-form button')]);
  check((await bob.page.textContent('#state')) === 'approved', 'dual approval not complete');
  const gates = await bob.page.textContent('ul.gates');
  check(gates.includes('alice') && gates.includes('bob'), `gates: ${gates}`);

  step = 'history filters and statistics';
  await alice.page.goto(`${base}/ui/history?state=approved`);
  let hist = await alice.page.$$eval('li.job a', (as) => as.map((a) => a.getAttribute('href').split('/').pop()));
  check(hist.includes('pg-single') && hist.includes('pg-dual') && !hist.includes('pg-reject'), `history ${hist}`);
  await alice.page.goto(`${base}/ui/history?approver=bob`);
  hist = await alice.page.$$eval('li.job a', (as) => as.map((a) => a.getAttribute('href').split('/').pop()));
  check(hist.length === 1 && hist[0] === 'pg-dual', `approver filter ${hist}`);
  await alice.page.goto(`${base}/ui/history?since=not-a-date`);
  check((await alice.page.textContent('.refusal')).includes('INVALID_ARGUMENT'), 'bad date accepted');
  await alice.page.goto(`${base}/ui/me`);
  check((await alice.page.textContent('#approvals')) === '2', 'approval count');
  check((await alice.page.textContent('#rejections')) === '0', 'rejection count');

  step = 'the break-glass review queue and acknowledgement';
  await alice.page.goto(`${base}/ui/overrides`);
  await alice.page.click('a[href="/ui/jobs/pg-glass"]');
  check((await alice.page.textContent('main')).includes('break-glass'), 'override not flagged');
  await alice.page.fill('#ack-form input[name=note]', 'reviewed the incident');
  await Promise.all([alice.page.waitForURL(/done=acknowledged/), alice.page.click('#ack-form button')]);
  await alice.page.goto(`${base}/ui/overrides`);
  check(!(await alice.page.$('a[href="/ui/jobs/pg-glass"]')), 'still awaiting review');

  step = 'the outbox is for operators and auditors';
  await alice.page.goto(`${base}/ui/outbox`);
  check((await alice.page.textContent('.refusal')).includes('PERMISSION_DENIED'), 'alice read the outbox');
  const operator = await person('operator');
  await operator.page.goto(`${base}/ui/outbox?state=dead`);
  check((await operator.page.textContent('main h1')) === 'Outbox', 'no outbox page');
  check(await operator.page.$('nav a[href="/ui/outbox"]'), 'no outbox link for operators');

  step = 'the policy link shows the source';
  await alice.page.goto(`${base}/ui/jobs/pg-single`);
  await alice.page.click('a[href^="/ui/policy?id="]');
  check((await alice.page.textContent('pre.source')).includes('version: v1'), 'no policy source');

  step = 'sign-out ends the session for good';
  const cookies = await alice.context.cookies();
  await Promise.all([alice.page.waitForURL(`${base}/ui/login`), alice.page.click('form.signout button')]);
  const replay = await browser.newContext();
  await replay.addCookies(cookies.filter((c) => c.name === 'gavel_session'));
  const rp = await replay.newPage();
  await rp.goto(`${base}/ui/`);
  check(rp.url() === `${base}/ui/login`, 'the old cookie still works');

  console.log('browser: every step held');
  await browser.close();
} catch (e) {
  console.error(`browser: FAILED at ${e.message}`);
  await browser.close();
  process.exit(1);
}
