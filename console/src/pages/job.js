// A job: its state and progress, loss and accuracy curves that grow as
// epochs finish (points keyed by epoch: a reload or a resumed job never
// draws one twice), per-class accuracy, checkpoints with the best and the
// latest marked, the resolved hyperparameters, errors, and the buttons its
// state and the caller's role allow.
import uPlot from 'uplot';
import { call, watchJob } from '../api.js';
import { allowed } from '../main.js';
import { clear, duration, errorBox, h, number, percent, shade, table } from '../dom.js';
import { etaSeconds, isFinal, progressOf, stateName } from './jobs.js';

function chart(title, series) {
  const el = h('div', { class: 'chart', dataset: { chart: title.toLowerCase(), epochs: '' } });
  const plot = new uPlot(
    {
      title,
      width: 460,
      height: 240,
      scales: { x: { time: false } },
      axes: [{ label: 'epoch' }, {}],
      series: [{ label: 'epoch' }, ...series.map(([label, stroke]) => ({ label, stroke, width: 2 }))],
    },
    [[], ...series.map(() => [])],
    el,
  );
  return { el, plot };
}

export async function jobPage(section, id) {
  let job;
  try {
    job = await call('kaizen.v1.FineTuneService/GetJob', { id });
  } catch (e) {
    section.append(h('h1', {}, id), errorBox(e));
    return null;
  }
  const epochs = new Map(); // epoch -> EpochMetrics
  const header = h('div', { class: 'job-header' });
  const progress = h('p', { class: 'progress' });
  const buttons = h('div', { class: 'buttons' });
  const loss = chart('Loss', [['train', '#2563eb'], ['validation', '#dc2626']]);
  const accuracy = chart('Accuracy', [['train', '#2563eb'], ['validation', '#dc2626']]);
  const perClass = h('div', { dataset: { perClass: '' } });
  const checkpoints = h('div');
  const status = h('div'); // the job's own error and pause reason, redrawn with it
  const errors = h('div'); // errors of the stream and of the buttons, kept
  const hyper = h('pre', { class: 'hyper' });
  section.append(
    h('h1', {}, `Job ${id}`), header, progress, buttons, status, errors,
    h('div', { class: 'charts' }, loss.el, accuracy.el),
    h('h2', {}, 'Per-class accuracy (latest epoch)'), perClass,
    h('h2', {}, 'Checkpoints'), checkpoints,
    h('h2', {}, 'Resolved hyperparameters'), hyper,
  );

  const draw = () => {
    const sorted = [...epochs.values()].sort((a, b) => a.epoch - b.epoch);
    const x = sorted.map((e) => e.epoch);
    // Doubles may arrive as "NaN" or "Infinity" (proto3 JSON): uPlot takes numbers.
    const y = (key) => sorted.map((e) => Number(e[key]));
    // An epoch without validation (a dataset too small to split) prints its
    // validation fields as 0: a gap, not a point.
    const validated = (key) =>
      sorted.map((e) => (Number(e.valLoss) > 0 || Number(e.valAccuracy) > 0 ? Number(e[key]) : null));
    loss.plot.setData([x, y('trainLoss'), validated('valLoss')]);
    accuracy.plot.setData([x, y('trainAccuracy'), validated('valAccuracy')]);
    loss.el.dataset.epochs = accuracy.el.dataset.epochs = x.join(',');
    const last = sorted[sorted.length - 1];
    const classes = Object.entries(last?.perClassAccuracy || {}).sort();
    clear(perClass).append(
      classes.length
        ? table(['class', 'accuracy'], classes.map(([name, a]) => {
          const cell = shade(h('td', {}, percent(a)), a);
          return h('tr', {}, h('td', {}, name), cell);
        }))
        : h('p', { class: 'muted' }, 'After the first epoch with validation.'),
    );
  };

  const drawHeader = () => {
    const r = job.request || {};
    clear(header).append(
      h('p', {},
        h('span', { class: `state ${stateName(job.state)}`, dataset: { state: stateName(job.state) } },
          stateName(job.state)),
        ` ${String(r.strategy || '').replace('STRATEGY_', '').toLowerCase()} of ${r.baseModel} on `,
        h('a', { href: '#/datasets' }, r.dataset), ` into `, h('a', { href: '#/models' }, r.outputModel),
        job.device ? ` on ${job.device}` : ''),
    );
    const share = progressOf(job);
    // The trainer's own estimate while it streams progress; else one from the time spent.
    const eta = job.state === 'JOB_STATE_RUNNING' && etaFromStream > 0 ? etaFromStream : etaSeconds(job);
    progress.textContent = `epoch ${job.epoch}/${job.totalEpochs}, step ${job.step}/${job.totalSteps}` +
      ` (${percent(share)})` + (eta > 0 ? `, about ${duration(eta)} left` : '') +
      (samplesPerSecond > 0 ? `, ${samplesPerSecond.toFixed(0)} samples/s` : '');
    clear(status);
    if (job.error) status.append(h('p', { class: 'error', role: 'alert' }, job.error));
    if (job.state === 'JOB_STATE_PAUSED' && job.pauseReason) {
      status.append(h('p', { class: 'muted' }, `paused: ${job.pauseReason}`));
    }
    hyper.textContent = JSON.stringify(job.resolvedHyperparameters || {}, null, 2);
    drawButtons();
  };

  const act = (method, label) =>
    h('button', {
      dataset: { mutates: '' },
      onclick: async () => {
        try {
          const answer = await call(`kaizen.v1.FineTuneService/${method}`, { id });
          // The stream may have told more already (PauseJob answers while the
          // job still runs): keep whichever is newer.
          if (Number(answer.lastSequence) >= seen) {
            job = answer;
            drawHeader();
          }
        } catch (e) {
          clear(errors).append(errorBox(e));
        }
      },
    }, label);

  const drawButtons = () => {
    clear(buttons);
    if (isFinal(job.state)) return;
    if (allowed('kaizen.v1.FineTuneService/CancelJob')) buttons.append(act('CancelJob', 'Cancel'));
    if (job.state === 'JOB_STATE_PAUSED') {
      if (allowed('kaizen.v1.FineTuneService/ResumeJob')) buttons.append(act('ResumeJob', 'Resume'));
    } else if (allowed('kaizen.v1.FineTuneService/PauseJob')) {
      buttons.append(act('PauseJob', 'Pause'));
    }
  };

  let checkpointLoads = 0;
  const loadCheckpoints = async () => {
    const mineLoad = ++checkpointLoads;
    try {
      const { models = [] } = await call('kaizen.v1.ModelService/ListModels', {
        name: job.request.outputModel,
        allVersions: true,
      });
      if (mineLoad !== checkpointLoads) return; // a newer load draws
      const mine = models.filter((m) => m.jobId === id);
      clear(checkpoints).append(
        mine.length
          ? table(['version', 'metrics', '', ''], mine.map((m) => h('tr', {},
            h('td', {}, m.version),
            h('td', {}, Object.entries(m.metrics || {}).sort().map(([k, v]) => `${k} ${number(v)}`).join(', ')),
            h('td', {}, m.version === job.bestVersion ? h('span', { class: 'tag' }, 'best') : ''),
            h('td', {}, m.version === job.latestVersion ? h('span', { class: 'tag' }, 'latest') : ''))))
          : h('p', { class: 'muted' }, 'None yet.'),
      );
    } catch (e) {
      clear(checkpoints).append(errorBox(e));
    }
  };

  let seen = Number(job.lastSequence || 0); // the newest event applied
  let etaFromStream = 0;
  let samplesPerSecond = 0;
  for (const e of job.history || []) epochs.set(e.epoch, e);
  draw();
  drawHeader();
  loadCheckpoints();

  const stop = watchJob(id, seen, (name, event) => {
    seen = Math.max(seen, Number(event.sequence));
    if (name === 'epoch_summary') {
      epochs.set(event.epochSummary.epoch, event.epochSummary);
      job.epoch = Math.max(job.epoch, event.epochSummary.epoch);
      draw();
      drawHeader();
    } else if (name === 'progress') {
      const p = event.progress;
      Object.assign(job, { epoch: p.epoch, step: p.step, totalSteps: p.totalSteps });
      etaFromStream = Number(p.etaSeconds);
      samplesPerSecond = Number(p.samplesPerSecond);
      drawHeader();
    } else if (name === 'checkpoint') {
      job.latestVersion = event.checkpoint.version;
      if (event.checkpoint.isBest) job.bestVersion = event.checkpoint.version;
      loadCheckpoints();
    } else if (name === 'state') {
      job.state = event.state;
      drawHeader();
    } else if (name === 'error') {
      errors.append(h('p', { class: 'error', role: 'alert' }, event.error));
    }
  }, async (error) => {
    if (error) {
      errors.append(errorBox(error));
      return true;
    }
    // The stream ended: at a final state, or because the server stops (then
    // reconnect after its last event).
    try {
      job = await call('kaizen.v1.FineTuneService/GetJob', { id });
      seen = Math.max(seen, Number(job.lastSequence));
      for (const e of job.history || []) epochs.set(e.epoch, e);
      draw();
      drawHeader();
      loadCheckpoints();
    } catch {
      return false;
    }
    return isFinal(job.state);
  });
  return { stop };
}
