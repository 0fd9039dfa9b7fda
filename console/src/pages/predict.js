// The predict playground: drop or pick images, or type texts for a text
// model (one per line), and see the top-k labels and probabilities from the
// newest (or a chosen) version of a model.
import { call } from '../api.js';
import { clear, errorBox, h, percent } from '../dom.js';

function base64(buffer) {
  let binary = '';
  const bytes = new Uint8Array(buffer);
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

export async function predictPage(section) {
  const results = h('div', { class: 'results' });
  const model = h('select', { name: 'model', required: true });
  const version = h('input', { name: 'version', type: 'number', min: 0, placeholder: 'newest' });
  const topK = h('input', { name: 'topk', type: 'number', min: 1, max: 20, value: 3 });
  const files = h('input', { name: 'images', type: 'file', accept: 'image/*', multiple: true });
  const drop = h('div', { class: 'drop' }, 'Drop images here, or pick them: ', files);
  const texts = h('textarea', { name: 'texts', rows: 4, cols: 60, placeholder: 'One text per line (text models)' });
  const form = h('form', { class: 'predict' },
    h('label', {}, 'Model ', model), h('label', {}, 'Version ', version),
    h('label', {}, 'Top k ', topK), drop, h('label', {}, 'Texts ', texts),
    h('button', { type: 'submit' }, 'Predict'));
  section.append(h('h1', {}, 'Predict'), form, results);
  try {
    const { models = [] } = await call('kaizen.v1.ModelService/ListModels', {});
    for (const m of models) model.append(h('option', { value: m.name }, m.name));
  } catch (e) {
    section.append(errorBox(e));
  }
  const ranked = (prediction) => h('ol', {}, (prediction?.classes || []).map((c) =>
    h('li', { dataset: { label: c.label } }, `${c.label} `, h('span', { class: 'muted' }, percent(c.probability)))));
  const ask = async (inputs) => {
    const request = { model: model.value, inputs, topK: Number(topK.value) || 3 };
    if (version.value) request.version = version.value;
    return call('kaizen.v1.InferenceService/Predict', request);
  };
  const predictTexts = async (lines) => {
    clear(results).append(h('p', { class: 'muted' }, 'Predicting…'));
    try {
      const answer = await ask(lines.map((text) => ({ text })));
      clear(results).append(
        h('p', {}, `${answer.model} version ${answer.version}`),
        ...lines.map((text, i) => h('figure', { class: 'prediction text' },
          h('figcaption', {}, h('q', {}, text), ranked(answer.predictions[i])))),
      );
    } catch (e) {
      clear(results).append(errorBox(e));
    }
  };
  const predict = async (chosen) => {
    if (!chosen.length) return;
    clear(results).append(h('p', { class: 'muted' }, 'Predicting…'));
    try {
      const inputs = await Promise.all(chosen.map(async (f) => ({ encodedImage: base64(await f.arrayBuffer()) })));
      const answer = await ask(inputs);
      clear(results).append(
        h('p', {}, `${answer.model} version ${answer.version}`),
        ...chosen.map((f, i) => {
          const url = URL.createObjectURL(f);
          return h('figure', { class: 'prediction', dataset: { image: f.name } },
            h('img', { src: url, alt: f.name, onload: () => URL.revokeObjectURL(url) }),
            h('figcaption', {}, h('strong', {}, f.name), ranked(answer.predictions[i])));
        }),
      );
    } catch (e) {
      clear(results).append(errorBox(e));
    }
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const lines = texts.value.split('\n').map((t) => t.trim()).filter((t) => t);
    if (lines.length) predictTexts(lines);
    else predict([...files.files]);
  });
  drop.addEventListener('dragover', (e) => e.preventDefault());
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    predict([...e.dataTransfer.files].filter((f) => f.type.startsWith('image/')));
  });
  return null;
}
