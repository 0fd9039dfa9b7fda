// The console: a page per hash route (#/jobs, #/jobs/ID, #/models,
// #/datasets, #/predict), each drawn from the JSON API. The session says
// which routes the token's role may call; a button that changes something
// is drawn only when its route is among them (and carries data-mutates).
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { session, setToken, token } from './api.js';
import { clear, errorBox, h } from './dom.js';
import { datasetsPage } from './pages/datasets.js';
import { jobPage } from './pages/job.js';
import { jobsPage } from './pages/jobs.js';
import { modelsPage } from './pages/models.js';
import { predictPage } from './pages/predict.js';

const view = document.getElementById('view');
const whoami = document.getElementById('whoami');
let current = { stop: () => {} };
let generation = 0; // of route(): a page that finishes loading after a newer route is stopped
let me = null;

// Whether the caller may call `method` ("kaizen.v1.FineTuneService/CancelJob").
export function allowed(method) {
  return !!me && me.methods.includes(`/api/${method}`);
}

async function loadSession() {
  try {
    me = await session();
    whoami.textContent = me.tokensRequired ? `${me.caller} (${me.role})` : 'no tokens: admin';
    return null;
  } catch (e) {
    me = null;
    whoami.textContent = '';
    return e;
  }
}

async function route() {
  const mine = ++generation;
  current.stop();
  current = { stop: () => {} };
  const parts = (location.hash || '#/jobs').slice(2).split('/').map(decodeURIComponent);
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === parts[0]);
  }
  clear(view);
  const error = me ? null : await loadSession();
  if (mine !== generation) return;
  if (error) {
    view.append(
      h('section', {}, h('h1', {}, 'Sign in'), errorBox(error),
        h('p', {}, 'Paste a bearer token above (kaizenctl tokens create prints one).')),
    );
    return;
  }
  const pages = { jobs: jobsPage, models: modelsPage, datasets: datasetsPage, predict: predictPage };
  const page = parts[0] === 'jobs' && parts[1] ? (el) => jobPage(el, parts[1]) : pages[parts[0]];
  if (!page) {
    view.append(h('p', {}, 'No such page.'));
    return;
  }
  const name = parts[0] === 'jobs' && parts[1] ? 'job' : parts[0];
  const section = h('section', { dataset: { page: name } });
  view.append(section);
  const loaded = await page(section);
  if (mine !== generation) {
    loaded?.stop();
    return;
  }
  current = loaded || current;
  section.dataset.ready = '1'; // drawn, with every button its role allows
}

document.getElementById('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = document.getElementById('token');
  setToken(input.value.trim());
  input.value = '';
  me = null;
  route();
});
document.getElementById('token').placeholder = token() ? 'token set (paste another)' : 'bearer token';
window.addEventListener('hashchange', route);
route();
