// Jobs: a live table (state, progress, ETA, samples/s), refreshed every two
// seconds, and a form that starts a fine-tune.
import { call } from '../api.js';
import { allowed } from '../main.js';
import { clear, duration, errorBox, h, number, table } from '../dom.js';

const FINAL = new Set(['JOB_STATE_SUCCEEDED', 'JOB_STATE_FAILED', 'JOB_STATE_CANCELLED']);
const STRATEGIES = [
  'STRATEGY_FEATURE_EXTRACTION',
  'STRATEGY_FINE_TUNE',
  'STRATEGY_FULL',
  'STRATEGY_SCRATCH',
  'STRATEGY_INCREMENTAL',
  'STRATEGY_DISTILL',
];
// Text datasets train text models: the built-in transformer-small (SCRATCH
// or MASKED_LM, with a tokenizer trained on the dataset) or a stored model
// that carries a tokenizer (textInput).
const TEXT_STRATEGIES = [
  'STRATEGY_FEATURE_EXTRACTION',
  'STRATEGY_FINE_TUNE',
  'STRATEGY_FULL',
  'STRATEGY_SCRATCH',
  'STRATEGY_MASKED_LM',
];
const TEXT_ENCODER = 'transformer-small';
const isText = (dataset) => String(dataset?.format || '').startsWith('DATASET_FORMAT_TEXT_');

export function stateName(state) {
  return String(state || '').replace('JOB_STATE_', '').toLowerCase();
}

export function isFinal(state) {
  return FINAL.has(state);
}

// Progress as a share of the job's steps (or epochs before the first step).
export function progressOf(job) {
  const steps = Number(job.totalSteps);
  if (steps > 0) return Math.min(1, Number(job.step) / steps);
  return job.totalEpochs > 0 ? Math.min(1, job.epoch / job.totalEpochs) : 0;
}

// The time left from the time spent so far and the share done.
export function etaSeconds(job) {
  if (job.state !== 'JOB_STATE_RUNNING' || !job.startTime) return NaN;
  const done = progressOf(job);
  const spent = (Date.now() - Date.parse(job.startTime)) / 1000;
  return done > 0.01 ? (spent * (1 - done)) / done : NaN;
}

function progressBar(share) {
  const bar = h('span', { class: 'bar-fill' });
  bar.style.width = `${(100 * share).toFixed(1)}%`;
  return h('span', { class: 'bar', title: `${(100 * share).toFixed(1)}%` }, bar);
}

function row(job) {
  const last = job.history?.[job.history.length - 1];
  return h(
    'tr',
    { dataset: { job: job.id, state: stateName(job.state) } },
    h('td', {}, h('a', { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.id)),
    h('td', {}, h('span', { class: `state ${stateName(job.state)}` }, stateName(job.state))),
    h('td', {}, String(job.request?.strategy || '').replace('STRATEGY_', '').toLowerCase()),
    h('td', {}, `${job.request?.baseModel || ''} → ${job.request?.outputModel || ''}`),
    h('td', {}, job.request?.dataset || ''),
    h('td', {}, progressBar(progressOf(job)), ` ${job.epoch}/${job.totalEpochs}`),
    h('td', {}, duration(etaSeconds(job))),
    h('td', {}, last ? number(last.samplesPerSecond, 0) : ''),
  );
}

// Rows "name: value" of a resolved message (nested fields dotted), for the
// defaults table.
function flatten(object, prefix = '') {
  const rows = [];
  for (const [key, value] of Object.entries(object || {}).sort()) {
    const name = prefix + key;
    if (value && typeof value === 'object' && !Array.isArray(value)) rows.push(...flatten(value, `${name}.`));
    else rows.push([name, Array.isArray(value) ? value.join(', ') : String(value)]);
  }
  return rows;
}

// The form's request; `preview` asks only for the checks and the job it
// would queue (validate_only).
function startRequest(form, preview) {
  const f = new FormData(form);
  const request = {
    dataset: f.get('dataset'),
    baseModel: f.get('base'),
    strategy: f.get('strategy'),
    outputModel: f.get('output'),
    validateOnly: preview,
  };
  if (f.get('epochs')) request.hyperparameters = { epochs: Number(f.get('epochs')) };
  return request;
}

function startForm(section, datasets, models) {
  const status = h('p', { class: 'muted' });
  const defaults = h('div', { class: 'defaults', dataset: { defaults: '' } });
  const form = h(
    'form',
    { class: 'start', dataset: { mutates: '' } },
    h('h2', {}, 'Start a fine-tune'),
    h('label', {}, 'Dataset ', h('select', { name: 'dataset', required: true },
      datasets.map((d) => h('option', { value: d.name }, d.name)))),
    h('label', {}, 'Base model ', h('select', { name: 'base', required: true })),
    h('label', {}, 'Strategy ', h('select', { name: 'strategy' })),
    h('label', {}, 'Epochs ', h('input', { name: 'epochs', type: 'number', min: 0, placeholder: 'default' })),
    h('label', {}, 'Output model ', h('input', { name: 'output', required: true, placeholder: 'name' })),
    h('button', { type: 'submit' }, 'Start'),
    status,
    h('p', { class: 'muted' },
      'Fields left empty take the strategy’s defaults for this dataset, shown below as the server resolves them.'),
    defaults,
  );
  // The base models and strategies that fit the chosen dataset's kind.
  const fit = () => {
    const text = isText(datasets.find((d) => d.name === form.querySelector('[name=dataset]').value));
    const base = form.querySelector('[name=base]');
    const strategy = form.querySelector('[name=strategy]');
    const names = text
      ? [TEXT_ENCODER, ...models.filter((m) => m.textInput).map((m) => m.name)]
      : models.filter((m) => !m.textInput).map((m) => m.name);
    const strategies = text ? TEXT_STRATEGIES : STRATEGIES;
    const keepBase = names.includes(base.value) ? base.value : names[0];
    const keepStrategy = strategies.includes(strategy.value) ? strategy.value : null;
    clear(base).append(...names.map((n) => h('option', { value: n }, n)));
    clear(strategy).append(...strategies.map((s) => h('option', { value: s }, s.replace('STRATEGY_', '').toLowerCase())));
    base.value = keepBase;
    strategy.value = keepStrategy || (text ? 'STRATEGY_SCRATCH' : strategies[0]);
  };
  fit();
  form.querySelector('[name=dataset]').addEventListener('change', fit);
  form.querySelector('[name=base]').addEventListener('change', () => {
    // transformer-small has no weights yet: it builds a new encoder.
    const strategy = form.querySelector('[name=strategy]');
    if (form.querySelector('[name=base]').value === TEXT_ENCODER
      && !['STRATEGY_SCRATCH', 'STRATEGY_MASKED_LM'].includes(strategy.value)) strategy.value = 'STRATEGY_SCRATCH';
  });
  // The server's resolution of the form as it stands: each strategy's
  // defaults for the chosen dataset and base (and why it would be refused).
  let asked = 0;
  const preview = async () => {
    const mine = ++asked;
    try {
      const job = await call('kaizen.v1.FineTuneService/StartFineTune', startRequest(form, true));
      if (mine !== asked) return;
      const rows = flatten(job.resolvedHyperparameters);
      form.querySelector('[name=epochs]').placeholder = `default ${job.resolvedHyperparameters?.epochs ?? ''}`;
      clear(defaults).append(h('h3', {}, 'Resolved hyperparameters'),
        table(['hyperparameter', 'value'], rows.map(([k, v]) => h('tr', { dataset: { hyperparameter: k } },
          h('td', {}, k), h('td', {}, v)))));
    } catch (e) {
      if (mine === asked) clear(defaults).append(errorBox(e));
    }
  };
  let timer = 0;
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(preview, 250);
  };
  form.addEventListener('change', soon);
  form.addEventListener('input', soon);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const job = await call('kaizen.v1.FineTuneService/StartFineTune', startRequest(form, false));
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (e) {
      clear(status).append(errorBox(e));
    }
  });
  if (datasets.length && models.length) preview();
  return form;
}

export async function jobsPage(section) {
  const body = h('div');
  section.append(h('h1', {}, 'Jobs'), body);
  let timer = 0;
  let stopped = false;
  const refresh = async () => {
    try {
      const { jobs = [] } = await call('kaizen.v1.FineTuneService/ListJobs', { pageSize: 100 });
      clear(body).append(
        jobs.length
          ? table(['job', 'state', 'strategy', 'model', 'dataset', 'progress', 'ETA', 'samples/s'],
            jobs.map(row))
          : h('p', { class: 'muted' }, 'No jobs yet.'),
      );
    } catch (e) {
      clear(body).append(errorBox(e));
    }
    if (!stopped) timer = setTimeout(refresh, 2000);
  };
  await refresh();
  if (allowed('kaizen.v1.FineTuneService/StartFineTune')) {
    try {
      const [{ datasets = [] }, { models = [] }] = await Promise.all([
        call('kaizen.v1.DatasetService/ListDatasets', {}),
        call('kaizen.v1.ModelService/ListModels', {}),
      ]);
      section.append(startForm(section, datasets, models));
    } catch (e) {
      section.append(errorBox(e));
    }
  }
  return {
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
