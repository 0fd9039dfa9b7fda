// Datasets: counts per class as bars, and each upload's report (files that
// failed and why, duplicates, ignored files, warnings); a form that uploads
// an archive or a folder with a progress bar.
import { call } from '../api.js';
import { clear, errorBox, h } from '../dom.js';
import { allowed } from '../main.js';
import { uploadForm } from '../upload_form.js';

function classBars(dataset) {
  const classes = dataset.classes || [];
  const most = Math.max(1, ...classes.map((c) => Number(c.count)));
  return h('div', { class: 'bars', dataset: { classes: classes.length } },
    classes.map((c) => {
      const fill = h('span', { class: 'bar-fill' });
      fill.style.width = `${((100 * Number(c.count)) / most).toFixed(1)}%`;
      return h('div', { class: 'bar-row' },
        h('span', { class: 'bar-label' }, c.className || String(c.label)),
        h('span', { class: 'bar wide' }, fill),
        h('span', { class: 'bar-count' }, Number(c.count).toLocaleString()));
    }));
}

function report(r = {}) {
  const parts = [];
  if (r.failedFiles?.length) {
    parts.push(h('h4', {}, `${r.failedFiles.length} files failed`),
      h('ul', {}, r.failedFiles.map((f) => h('li', {}, h('code', {}, f.path), `: ${f.reason}`))));
  }
  if (Number(r.duplicateCount) > 0) {
    parts.push(h('h4', {}, `${r.duplicateCount} duplicates`),
      h('ul', {}, (r.duplicates || []).map((d) => h('li', {}, h('code', {}, d.path), ' = ',
        h('code', {}, d.duplicateOf)))));
  }
  if (r.ignoredFiles?.length) {
    parts.push(h('h4', {}, `${r.ignoredFiles.length} files ignored`),
      h('ul', {}, r.ignoredFiles.map((f) => h('li', {}, h('code', {}, f)))));
  }
  if (r.warnings?.length) {
    parts.push(h('h4', {}, 'Warnings'), h('ul', {}, r.warnings.map((w) => h('li', {}, w))));
  }
  if (r.imageSizes?.length) parts.push(h('p', { class: 'muted' }, `Image sizes: ${r.imageSizes.join(', ')}`));
  return parts.length ? parts : h('p', { class: 'muted' }, 'Clean upload: nothing failed, duplicated or ignored.');
}

export async function datasetsPage(section) {
  section.append(h('h1', {}, 'Datasets'));
  if (allowed('kaizen.v1.DatasetService/UploadDataset')) {
    section.append(uploadForm({
      method: 'kaizen.v1.DatasetService/UploadDataset',
      title: 'Upload an image folder',
      accept: '.tar,.tgz,.gz,.bz2,.xz,.zip',
      folders: true,
      fields: [
        h('input', { type: 'hidden', dataset: { header: 'format' }, value: 'DATASET_FORMAT_IMAGE_FOLDER' }),
        // Empty: the server's --max_stored_shorter_side.
        h('label', { title: 'Images whose shorter side is longer are stored downscaled to it; empty: the server\'s default' },
          'store at most ',
          h('input', { type: 'number', name: 'maxStoredShorterSide', min: 1, max: 65535, step: 1, placeholder: 'any', dataset: { header: 'maxStoredShorterSide' } }),
          ' px on the shorter side'),
      ],
      onDone: () => datasetsPage(clear(section)),
    }));
  }
  try {
    const { datasets = [] } = await call('kaizen.v1.DatasetService/ListDatasets', {});
    if (!datasets.length) section.append(h('p', { class: 'muted' }, 'No datasets yet: upload an archive or a folder of class folders above, or use kaizenctl datasets upload.'));
    for (const d of datasets) {
      section.append(h('article', { class: 'card', dataset: { dataset: d.name } },
        h('h2', {}, d.name),
        h('p', {}, `${Number(d.numExamples).toLocaleString()} ${String(d.format || '').includes('TEXT') ? 'texts' : 'images'}, ${(d.classes || []).length} classes,`,
          ` ${String(d.format || '').replace('DATASET_FORMAT_', '').toLowerCase()}`,
          Number(d.report?.imbalanceRatio) > 0 ? `, imbalance ${Number(d.report.imbalanceRatio).toFixed(2)}` : ''),
        Number(d.report?.maxStoredShorterSide) > 0
          ? h('p', { class: 'muted', dataset: { storedCap: d.report.maxStoredShorterSide } },
            `Stored at most ${d.report.maxStoredShorterSide} px on the shorter side:`,
            ` ${Number(d.report.downscaledImages || 0).toLocaleString()} images downscaled.`)
          : '',
        classBars(d), h('h3', {}, 'Upload report'), report(d.report)));
    }
  } catch (e) {
    section.append(errorBox(e));
  }
  return null;
}
