// Kaizen's web console in a real browser (Debian's Chromium, headless, via
// playwright-core) against a real kaizen-server with tokens and a training
// job: the curve gains points as epochs finish, a reload mid-job neither
// duplicates nor loses one, a prediction in the playground equals
// kaizenctl's, a folder and an archive upload with a progress bar, a model
// downloads as the same file as kaizenctl's and uploads again, and a
// reader sees no button that changes anything while the API refuses them a
// mutation. Run by run.sh, which prepares the data.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';

const env = process.env;
const work = env.KAIZEN_WORK;
const shots = env.KAIZEN_SCREENSHOT_DIR;
const EPOCHS = 60;
let server;
let grpc;
let base;
let admin;
let reader;
let browser;
let jobId;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

function ctl(args, token = admin) {
  return execFileSync(env.KAIZENCTL, [`--server=127.0.0.1:${grpc}`, ...args], {
    env: { ...env, KAIZEN_TOKEN: token },
    encoding: 'utf8',
    timeout: 300_000,
  });
}

// A call of the JSON API from the test itself (not the page): its answer,
// or {httpStatus, body} of a refusal when `refusal` is set.
async function api(method, request, token = admin, refusal = false) {
  const r = await fetch(`${base}/api/kaizen.v1.${method}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify(request),
    signal: AbortSignal.timeout(60_000),
  });
  const body = await r.json();
  if (refusal) return { httpStatus: r.status, body };
  if (!r.ok) throw new Error(`${method}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

// Test bodies note a failure, so that after() shows the server's log.
let failed = false;
const guard = (body) => async () => {
  try {
    await body();
  } catch (e) {
    failed = true;
    throw e;
  }
};
const LIMIT = { timeout: 600_000 };

async function until(what, check, seconds = 240) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// A page signed in with `token`, failing the test on any console error or
// Content-Security-Policy violation.
// (The page's first /api/session, before the token, meets 401, which the
// browser logs: that one error is expected.)
async function openPage(token, errors) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (/401/.test(m.text()) && m.location().url.endsWith('/api/session') && !page.signedIn) return;
    errors.push(`${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/#/jobs`);
  await page.waitForSelector('text=Sign in');
  await page.fill('#token', token);
  page.signedIn = true;
  await page.click('#token-form button[type=submit]');
  await page.waitForSelector('[data-page=jobs][data-ready]');
  return page;
}

// Goes to a page of the console and waits until it is drawn.
async function show(page, hash, name) {
  await page.goto(`${base}/${hash}`);
  await page.waitForSelector(`section[data-page=${name}][data-ready]`);
}

function epochsDrawn(page) {
  return page.$eval('[data-chart=loss]', (el) => el.dataset.epochs.split(',').filter(Boolean).map(Number));
}

before(async () => {
  fs.mkdirSync(shots, { recursive: true });
  const tokens = path.join(work, 'tokens');
  grpc = await freePort();
  const http = await freePort();
  base = `http://127.0.0.1:${http}`;
  const add = (name, role) =>
    execFileSync(env.KAIZENCTL, ['tokens', 'add', name, role, `--tokens_file=${tokens}`], {
      encoding: 'utf8',
    }).trim();
  admin = add('console-admin', 'admin');
  reader = add('console-reader', 'reader');
  const log = fs.openSync(path.join(work, 'server.log'), 'a');
  server = spawn(env.KAIZEN_SERVER, [
    `--data_dir=${path.join(work, 'data')}`, `--grpc_port=${grpc}`, '--host=127.0.0.1',
    '--metrics_port=-1', `--http_port=${http}`, `--console_dir=${env.KAIZEN_CONSOLE_DIR}`,
    `--tokens_file=${tokens}`, '--drain_seconds=0',
  ], { stdio: ['ignore', log, log] });
  await until('the server', async () => {
    try {
      return (await fetch(`${base}/api/session`, { headers: { Authorization: `Bearer ${admin}` } })).ok;
    } catch {
      return false;
    }
  }, 60);
  ctl(['datasets', 'upload', 'shoes', path.join(work, 'few-images'), '--format=idx',
    `--labels=${path.join(work, 'few-labels')}`, '--class_names=sandal,shirt,sneaker,bag,ankle boot']);
  browser = await chromium.launch({
    executablePath: env.KAIZEN_CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
});

after(async () => {
  await browser?.close();
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
  }
  if (failed) {
    console.error(fs.readFileSync(path.join(work, 'server.log'), 'utf8').split('\n').slice(-30).join('\n'));
  }
});

test('the console is served with its security headers', LIMIT, async () => {
  const r = await fetch(`${base}/`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /text\/html/);
  assert.match(r.headers.get('content-security-policy'), /script-src 'self'/);
  assert.match(await r.text(), /<script type="module" crossorigin src="\/assets\//);
});

test('the job page grows its curve live, and a reload mid-job neither duplicates nor loses a point', LIMIT, guard(async () => {
  const errors = [];
  const page = await openPage(admin, errors);
  const job = await api('FineTuneService/StartFineTune', {
    baseModel: 'cnn-small', dataset: 'shoes', strategy: 'STRATEGY_SCRATCH', outputModel: 'shoes-model',
    hyperparameters: { epochs: EPOCHS, batchSize: 20, validation: { split: 0.2 } },
  });
  jobId = job.id;
  await page.waitForSelector(`[data-job="${jobId}"]`);
  await page.screenshot({ path: path.join(shots, 'jobs.png'), fullPage: true });

  await show(page, `#/jobs/${jobId}`, 'job');
  const first = await until('a first point', async () => {
    const now = await epochsDrawn(page);
    return now.length >= 1 ? now : null;
  }, 120);
  const later = await until('more points', async () => {
    const now = await epochsDrawn(page);
    return now.length > first.length ? now : null;
  }, 120);
  assert.ok(later.length > first.length, `the curve grew from ${first.length} to ${later.length} points`);

  // Pause, reload: the points are exactly the epochs of the job's history.
  await api('FineTuneService/PauseJob', { id: jobId });
  const paused = await until('the pause', async () => {
    const j = await api('FineTuneService/GetJob', { id: jobId });
    return j.state === 'JOB_STATE_PAUSED' ? j : null;
  });
  await page.reload();
  await page.waitForSelector('section[data-page=job][data-ready] .job-header [data-state=paused]');
  const history = paused.history.map((e) => e.epoch);
  await until('the history drawn', async () => (await epochsDrawn(page)).length === history.length);
  assert.deepEqual(await epochsDrawn(page), history);
  assert.deepEqual(history, history.map((_, i) => i + 1));
  await page.screenshot({ path: path.join(shots, 'job-paused.png'), fullPage: true });

  // Resume from the page's own button; the stream carries on to the end.
  await page.click('.buttons button:has-text("Resume")');
  await page.waitForSelector('.job-header [data-state=succeeded]', { timeout: 240_000 });
  await until('every epoch drawn', async () => (await epochsDrawn(page)).length === EPOCHS);
  const done = await api('FineTuneService/GetJob', { id: jobId });
  assert.equal(done.state, 'JOB_STATE_SUCCEEDED');
  assert.deepEqual(await epochsDrawn(page), done.history.map((e) => e.epoch));
  assert.deepEqual(await epochsDrawn(page), Array.from({ length: EPOCHS }, (_, i) => i + 1));
  await page.waitForSelector('.tag:text-is("best")');
  // Per-class validation accuracy of the last epoch: one row per class.
  assert.deepEqual(await page.$$eval('[data-per-class] tbody tr td:first-child', (c) => c.map((x) => x.textContent)),
    Object.keys(done.history[EPOCHS - 1].perClassAccuracy).sort());
  await page.screenshot({ path: path.join(shots, 'job.png'), fullPage: true });
  assert.deepEqual(errors, []);
}));

test('a prediction in the playground equals kaizenctl predict', LIMIT, guard(async () => {
  assert.ok(jobId, 'needs the trained model of the previous test');
  const errors = [];
  const page = await openPage(admin, errors);
  await show(page, '#/predict', 'predict');
  await page.waitForSelector('select[name=model] option[value="shoes-model"]', { state: 'attached' });
  await page.selectOption('select[name=model]', 'shoes-model');
  await page.setInputFiles('input[type=file]', path.join(work, 'boot.png'));
  await page.click('form.predict button[type=submit]');
  await page.waitForSelector('figure.prediction li, .results .error');
  assert.equal(await page.$('.results .error'), null, await page.textContent('.results'));
  const shown = await page.$$eval('figure.prediction li', (items) => items.map((li) => li.dataset.label));
  const cli = JSON.parse(ctl(['--output=json', 'predict', 'shoes-model', path.join(work, 'boot.png'), '--top_k=3']));
  assert.deepEqual(shown, cli.predictions[0].classes.map((c) => c.label));
  await page.screenshot({ path: path.join(shots, 'predict.png'), fullPage: true });

  await show(page, '#/models', 'models');
  await page.waitForSelector('[data-model="shoes-model"]');
  await page.waitForSelector('.detail table');
  await page.screenshot({ path: path.join(shots, 'models.png'), fullPage: true });
  await show(page, '#/datasets', 'datasets');
  assert.equal(await page.$$eval('[data-dataset="shoes"] .bar-row', (rows) => rows.length), 5);
  await page.screenshot({ path: path.join(shots, 'datasets.png'), fullPage: true });
  assert.deepEqual(errors, []);
}));

test('a text model trained with kaizenctl answers the same in the playground as kaizenctl predict --texts', LIMIT, guard(async () => {
  // Two classes of short sentences; a transformer-small trained from
  // scratch with a tokenizer trained on them (issue 20).
  const animals = ['cat', 'dog', 'horse', 'cow', 'goat', 'sheep', 'mouse', 'fox'];
  const verbs = ['run', 'walk', 'jump', 'swim', 'climb', 'crawl', 'fly', 'dance'];
  let csv = 'text,label\n';
  for (let i = 0; i < 64; i++) {
    csv += `"the ${animals[i % 8]} is a small animal number ${i}",animal\n`;
    csv += `"to ${verbs[i % 8]} quickly from place ${i} to another",motion\n`;
  }
  fs.writeFileSync(path.join(work, 'sentences.csv'), csv);
  ctl(['datasets', 'upload', 'sentences', path.join(work, 'sentences.csv')]);
  const started = JSON.parse(ctl(['--output=json', 'finetune', 'start', '--base=transformer-small',
    '--dataset=sentences', '--output_model=sentences-model', '--strategy=scratch', '--epochs=3',
    '--vocab_size=120', '--max_length=24', '--seed=1']));
  ctl(['jobs', 'watch', started.id]);
  const texts = ['the fox is a small animal', 'to swim quickly to another place'];
  const cli = JSON.parse(ctl(['--output=json', 'predict', 'sentences-model', '--texts', ...texts, '--top_k=2']));

  const errors = [];
  const page = await openPage(admin, errors);
  await show(page, '#/predict', 'predict');
  await page.waitForSelector('select[name=model] option[value="sentences-model"]', { state: 'attached' });
  await page.selectOption('select[name=model]', 'sentences-model');
  await page.fill('textarea[name=texts]', texts.join('\n'));
  await page.fill('input[name=topk]', '2');
  await page.click('form.predict button[type=submit]');
  await page.waitForSelector('figure.prediction.text li, .results .error');
  assert.equal(await page.$('.results .error'), null, await page.textContent('.results'));
  const shown = await page.$$eval('figure.prediction.text', (figures) =>
    figures.map((f) => [...f.querySelectorAll('li')].map((li) => li.dataset.label)));
  assert.deepEqual(shown, cli.predictions.map((p) => p.classes.map((c) => c.label)));
  await page.screenshot({ path: path.join(shots, 'predict-text.png'), fullPage: true });
  assert.deepEqual(errors, []);
}));

const sha256 = (file) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

test('the start form shows the defaults; a folder and an archive upload with a progress bar; a model downloads and uploads again', LIMIT, guard(async () => {
  assert.ok(jobId, 'needs the trained model of the first test');
  const errors = [];
  const page = await openPage(admin, errors);

  // The start form shows each strategy's defaults for the dataset, as the
  // server resolves them (validate_only), and queues nothing.
  const jobsBefore = (await api('FineTuneService/ListJobs', {})).jobs.length;
  await page.waitForSelector('form.start [data-defaults] [data-hyperparameter=epochs]');
  await page.selectOption('form.start select[name=dataset]', 'shoes');
  await page.selectOption('form.start select[name=base]', 'cnn-small');
  const shownFor = async (strategy) => {
    await page.selectOption('form.start select[name=strategy]', strategy);
    const want = (await api('FineTuneService/StartFineTune', {
      baseModel: 'cnn-small', dataset: 'shoes', strategy, validateOnly: true,
    })).resolvedHyperparameters;
    const cell = (name) => page.textContent(`form.start [data-hyperparameter=${name}] td:last-child`);
    await until(`the ${strategy} defaults`, async () =>
      await cell('learningRate') === String(want.learningRate) && await cell('epochs') === String(want.epochs)
      && await cell('batchSize') === String(want.batchSize));
    return want;
  };
  await shownFor('STRATEGY_SCRATCH');
  await shownFor('STRATEGY_FULL');
  await page.screenshot({ path: path.join(shots, 'start-defaults.png'), fullPage: true });
  assert.equal((await api('FineTuneService/ListJobs', {})).jobs.length, jobsBefore);

  await show(page, '#/datasets', 'datasets');
  const form = 'form[data-upload="kaizen.v1.DatasetService/UploadDataset"]';

  // A folder, packed into a tar by the page.
  await page.fill(`${form} input[name=name]`, 'pets');
  await page.setInputFiles(`${form} input[name=folder]`, path.join(work, 'folder', 'pets'));
  await page.click(`${form} [data-upload=submit]`);
  await page.waitForSelector('[data-dataset="pets"]', { timeout: 120_000 });
  const pets = await api('DatasetService/GetDataset', { name: 'pets' });
  assert.equal(Number(pets.numExamples), 8);
  assert.deepEqual(pets.classes.map((c) => [c.className, Number(c.count)]), [['boot', 4], ['sandal', 4]]);
  assert.deepEqual(pets.report.failedFiles.map((f) => f.path), ['pets/sandal/broken.png']);
  assert.equal(await page.$$eval('[data-dataset="pets"] .bar-row', (rows) => rows.length), 2);
  assert.match(await page.textContent('[data-dataset="pets"]'), /broken\.png/);

  // A text dataset's card counts texts.
  assert.match(await page.textContent('[data-dataset="sentences"]'), /128 texts, 2 classes/);
  // No cap asked for: the server's default (none here) and no line for it.
  assert.equal(Number(pets.report.maxStoredShorterSide || 0), 0);
  assert.equal(await page.$$eval('[data-dataset="pets"] [data-stored-cap]', (p) => p.length), 0);

  // An archive stored under a cap on the shorter side (its 28×28 images
  // stored at 16×16), with the bar full at the end.
  await page.fill(`${form} input[name=name]`, 'pets-archive');
  await page.fill(`${form} input[name=maxStoredShorterSide]`, '16');
  await page.setInputFiles(`${form} input[name=file]`, path.join(work, 'pets.tar.gz'));
  await page.click(`${form} [data-upload=submit]`);
  await page.waitForSelector('[data-dataset="pets-archive"]', { timeout: 120_000 });
  const archived = await api('DatasetService/GetDataset', { name: 'pets-archive' });
  assert.equal(archived.sha256, sha256(path.join(work, 'pets.tar.gz')));
  assert.equal(Number(archived.numExamples), 8);
  assert.equal(Number(archived.report.maxStoredShorterSide), 16);
  assert.equal(Number(archived.report.downscaledImages), 8);
  assert.match(await page.textContent('[data-dataset="pets-archive"] [data-stored-cap="16"]'),
    /at most 16 px on the shorter side: 8 images downscaled/);
  await page.fill(`${form} input[name=maxStoredShorterSide]`, '');
  await page.screenshot({ path: path.join(shots, 'datasets-upload.png'), fullPage: true });

  // The same archive again: the service's refusal, shown on the form.
  await page.fill(`${form} input[name=name]`, 'pets');
  await page.setInputFiles(`${form} input[name=file]`, path.join(work, 'pets.tar.gz'));
  await page.click(`${form} [data-upload=submit]`);
  await page.waitForSelector(`${form} .error`);
  assert.match(await page.textContent(`${form} .error`), /ALREADY_EXISTS/);
  assert.equal(await page.$eval(`${form} [data-upload=progress]`, (p) => p.value), 1);

  // The newest version of the job's model downloads as kaizenctl's file...
  await show(page, '#/models', 'models');
  await page.click('[data-model="shoes-model"] a');
  await page.waitForSelector('.detail [data-download]');
  const version = await page.$eval('.detail tr[data-version]:last-child', (tr) => tr.dataset.version);
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.click(`.detail [data-download="${version}"]`),
  ]);
  assert.equal(download.suggestedFilename(), `shoes-model-v${version}.pt`);
  const saved = path.join(work, 'browser.pt');
  await download.saveAs(saved);
  const cli = path.join(work, 'cli.pt');
  ctl(['models', 'download', `shoes-model:${version}`, cli]);
  assert.equal(sha256(saved), sha256(cli));

  // ... which uploads again as a model of its own.
  const models = 'form[data-upload="kaizen.v1.ModelService/UploadModel"]';
  await page.fill(`${models} input[name=name]`, 'shoes-copy');
  await page.setInputFiles(`${models} input[name=file]`, saved);
  await page.click(`${models} [data-upload=submit]`);
  await page.waitForSelector('[data-model="shoes-copy"]', { timeout: 120_000 });
  const copy = await api('ModelService/GetModel', { name: 'shoes-copy' });
  assert.equal(copy.source, 'MODEL_SOURCE_UPLOADED');
  assert.equal(copy.sha256, sha256(saved));
  // The browser logs the refused upload's 409; nothing else.
  assert.deepEqual(errors.map((e) => (/status of 409 .*UploadDataset/.test(e) ? '409' : e)), ['409']);
}));

test('a reader sees no button that changes anything, and the API refuses them one', LIMIT, guard(async () => {
  const errors = [];
  // A job that runs while the reader looks at it.
  const running = await api('FineTuneService/StartFineTune', {
    baseModel: 'cnn-small', dataset: 'shoes', strategy: 'STRATEGY_SCRATCH', outputModel: 'shoes-long',
    hyperparameters: { epochs: 1000, batchSize: 20 },
  });
  await until('the job to run', async () =>
    (await api('FineTuneService/GetJob', { id: running.id })).state === 'JOB_STATE_RUNNING');
  const adminPage = await openPage(admin, errors);
  await adminPage.waitForSelector('form.start[data-mutates]');  // an admin has the start form
  await show(adminPage, `#/jobs/${running.id}`, 'job');
  await adminPage.waitForSelector('.job-header [data-state=running]');
  assert.deepEqual(await adminPage.$$eval('.buttons [data-mutates]', (b) => b.map((x) => x.textContent)),
    ['Cancel', 'Pause']);

  const page = await openPage(reader, errors);
  await page.waitForSelector('text=console-reader (reader)');
  const pages = [
    ['#/jobs', 'jobs', `[data-job="${running.id}"]`],
    [`#/jobs/${running.id}`, 'job', '.job-header [data-state=running]'],
    ['#/models', 'models', '[data-model="shoes-model"]'],
    ['#/datasets', 'datasets', '[data-dataset="shoes"]'],
    ['#/predict', 'predict', 'select[name=model] option[value="shoes-model"]'],
  ];
  for (const [hash, name, ready] of pages) {
    await show(page, hash, name);
    await page.waitForSelector(ready, { state: 'attached' });
    assert.equal((await page.$$('[data-mutates]')).length, 0, `no mutating element on ${hash}`);
  }
  await show(page, `#/jobs/${running.id}`, 'job');
  await page.screenshot({ path: path.join(shots, 'job-as-reader.png'), fullPage: true });
  const refused = await api('FineTuneService/CancelJob', { id: running.id }, reader, true);
  assert.equal(refused.httpStatus, 403);
  assert.equal(refused.body.code, 7);
  assert.equal((await api('FineTuneService/GetJob', { id: running.id })).state, 'JOB_STATE_RUNNING');
  await api('FineTuneService/CancelJob', { id: running.id });
  assert.deepEqual(errors, []);
}));
