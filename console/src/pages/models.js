// Models: each model's newest version with its metrics; a model's versions,
// and its test evaluation with the confusion matrix as a heat map.
import { call, downloadModel } from '../api.js';
import { clear, errorBox, h, number, percent, shade, table } from '../dom.js';
import { allowed } from '../main.js';
import { uploadForm } from '../upload_form.js';

function bytes(n) {
  const v = Number(n);
  if (!(v > 0)) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  const i = Math.min(units.length - 1, Math.floor(Math.log(v) / Math.log(1024)));
  return `${(v / 1024 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
}

function metrics(m) {
  return Object.entries(m.metrics || {}).sort().map(([k, v]) => `${k} ${number(v)}`).join(', ');
}

// Rows: true classes; columns: predicted classes; cells: counts, shaded by
// their share of the row.
export function confusionMatrix(evaluation) {
  const rows = (evaluation.classes || []).map((c) => c.name);
  const cols = evaluation.predictedClasses || [];
  const counts = (evaluation.confusion || []).map(Number);
  if (!rows.length || !cols.length || counts.length !== rows.length * cols.length) return null;
  return h('table', { class: 'confusion', dataset: { confusion: '' } },
    h('thead', {}, h('tr', {}, h('th', {}, 'true \\ predicted'), cols.map((c) => h('th', {}, c)))),
    h('tbody', {}, rows.map((name, r) => {
      const row = counts.slice(r * cols.length, (r + 1) * cols.length);
      const total = row.reduce((a, b) => a + b, 0) || 1;
      return h('tr', {}, h('th', {}, name), row.map((n) => shade(h('td', {}, n), n / total)));
    })));
}

function evaluationView(e, text) {
  return h('div', { class: 'evaluation' },
    h('p', {}, `Test accuracy ${percent(e.accuracy, 2)} on ${e.examples} ${text ? 'texts' : 'images'} of “${e.dataset}”`,
      e.topK > 1 ? `, top-${e.topK} ${percent(e.topKAccuracy, 2)}` : '',
      `, mean loss ${number(e.meanLoss)}`),
    table(['class', 'support', 'precision', 'recall', 'F1'], (e.classes || []).map((c) => h('tr', {},
      h('td', {}, c.name), h('td', {}, c.support), h('td', {}, percent(c.precision)),
      h('td', {}, percent(c.recall)), h('td', {}, percent(c.f1))))),
    confusionMatrix(e) || '');
}

// Saves the version's TorchScript file as NAME-vVERSION.pt.
function downloadButton(name, version) {
  const button = h('button', { dataset: { download: version } }, 'Download');
  button.addEventListener('click', async () => {
    button.disabled = true;
    button.nextSibling?.remove();
    try {
      await downloadModel(name, version, `${name}-v${version}.pt`);
    } catch (e) {
      button.after(errorBox(e));
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

let detailLoads = 0;

async function details(name, into) {
  const mine = ++detailLoads;
  clear(into).append(h('p', { class: 'muted' }, 'Loading…'));
  try {
    const { models = [] } = await call('kaizen.v1.ModelService/ListModels', { name, allVersions: true });
    const newest = await call('kaizen.v1.ModelService/GetModel', { name });
    if (mine !== detailLoads) return; // another model was chosen meanwhile
    clear(into).append(
      h('h2', {}, name),
      h('p', {}, `${newest.architecture}, ${Number(newest.parameterCount).toLocaleString()} parameters,`,
        ` ${(newest.classNames || []).length} classes: ${(newest.classNames || []).join(', ')}`),
      table(['version', 'job', 'metrics', 'size', '', ''], models.map((m) => h('tr', { dataset: { version: m.version } },
        h('td', {}, m.version), h('td', {}, m.jobId ? h('a', { href: `#/jobs/${m.jobId}` }, m.jobId) : ''),
        h('td', {}, metrics(m)), h('td', {}, bytes(m.sizeBytes)),
        h('td', {}, m.version === newest.bestVersion ? h('span', { class: 'tag' }, 'best') : ''),
        h('td', {}, allowed('kaizen.v1.ModelService/DownloadModel') ? downloadButton(name, m.version) : '')))),
      newest.testEvaluation?.examples > 0
        ? h('div', {}, h('h3', {}, 'Evaluation'), evaluationView(newest.testEvaluation, Boolean(newest.textInput)))
        : h('p', { class: 'muted' }, 'No test evaluation (start a job with a test dataset).'),
    );
  } catch (e) {
    clear(into).append(errorBox(e));
  }
}

export async function modelsPage(section) {
  const list = h('div');
  const detail = h('div', { class: 'detail' });
  section.append(h('h1', {}, 'Models'));
  if (allowed('kaizen.v1.ModelService/UploadModel')) {
    section.append(uploadForm({
      method: 'kaizen.v1.ModelService/UploadModel',
      title: 'Upload a TorchScript model',
      accept: '.pt,.pth,.zip',
      folders: false,
      onDone: () => modelsPage(clear(section)),
    }));
  }
  section.append(list, detail);
  try {
    const { models = [] } = await call('kaizen.v1.ModelService/ListModels', {});
    list.append(models.length
      ? table(['model', 'newest', 'best', 'architecture', 'classes', 'metrics', 'source'],
        models.map((m) => h('tr', { dataset: { model: m.name } },
          h('td', {}, h('a', { href: '#/models', onclick: (ev) => { ev.preventDefault(); details(m.name, detail); } }, m.name)),
          h('td', {}, m.latestVersion), h('td', {}, m.bestVersion), h('td', {}, m.architecture),
          h('td', {}, (m.classNames || []).length), h('td', {}, metrics(m)),
          h('td', {}, String(m.source || '').replace('MODEL_SOURCE_', '').toLowerCase()))))
      : h('p', { class: 'muted' }, 'No models yet.'));
    if (models.length) details(models[0].name, detail);
  } catch (e) {
    list.append(errorBox(e));
  }
  return null;
}
