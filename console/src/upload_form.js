// The upload forms of the datasets and models pages: a file (or, for a
// dataset, a folder packed into a tar here) sent with a progress bar.
import { createTar } from 'nanotar';
import { upload } from './api.js';
import { errorBox, h } from './dom.js';

// The longest path a plain (ustar) tar header holds, in UTF-8 bytes.
const TAR_NAME_BYTES = 100;

// A tar of the files a folder input chose (their webkitRelativePath:
// "folder/class/image.jpg"). Paths too long for a tar header are refused by
// name rather than cut.
export async function folderTar(files) {
  const encoder = new TextEncoder();
  const long = [];
  const entries = [];
  for (const file of files) {
    let name = file.webkitRelativePath || file.name;
    // The server allows one top folder above the class folders: drop it when
    // that makes the path fit.
    if (encoder.encode(name).length > TAR_NAME_BYTES) name = name.slice(name.indexOf('/') + 1);
    if (encoder.encode(name).length > TAR_NAME_BYTES) {
      long.push(file.webkitRelativePath);
      continue;
    }
    entries.push({ name, data: new Uint8Array(await file.arrayBuffer()) });
  }
  if (long.length) {
    throw new Error(`paths longer than ${TAR_NAME_BYTES} bytes (pack the folder as a .tar.gz or .zip instead): ${long.slice(0, 5).join(', ')}`);
  }
  return new Blob([createTar(entries)], { type: 'application/octet-stream' });
}

// A form: `fields` (inputs named by the header's fields), a file input and,
// when `folders`, a folder input; it uploads to `method` and calls
// `onDone(stored)`. Its parts carry data-upload for the tests.
export function uploadForm({ method, title, accept, folders, onDone, fields }) {
  const name = h('input', { name: 'name', required: true, pattern: '[a-z0-9][a-z0-9._\\-]*', maxlength: 128, placeholder: 'name (a-z 0-9 . _ -)' });
  const description = h('input', { name: 'description', placeholder: 'description (optional)' });
  const file = h('input', { type: 'file', name: 'file', accept });
  const folder = folders ? h('input', { type: 'file', name: 'folder', webkitdirectory: true, multiple: true }) : null;
  const bar = h('progress', { max: 1, value: 0, hidden: true, dataset: { upload: 'progress' } });
  const status = h('span', { class: 'muted', dataset: { upload: 'status' } });
  const out = h('div');
  const button = h('button', { type: 'submit', dataset: { mutates: '', upload: 'submit' } }, 'Upload');
  const form = h('form', { class: 'upload', dataset: { upload: method } },
    h('h3', {}, title), name, description, fields || [], h('label', {}, 'file ', file),
    folder ? h('label', {}, ' or folder ', folder) : '', button, bar, status, out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    button.disabled = true;
    try {
      let blob;
      let fileName;
      if (folder?.files.length) {
        status.textContent = 'Packing the folder…';
        blob = await folderTar([...folder.files]);
        fileName = `${folder.files[0].webkitRelativePath.split('/')[0] || name.value}.tar`;
      } else if (file.files.length) {
        [blob] = file.files;
        fileName = blob.name;
      } else {
        throw new Error('choose a file' + (folder ? ' or a folder' : ''));
      }
      const header = { name: name.value, description: description.value };
      // An empty optional field leaves the header's default.
      for (const input of form.querySelectorAll('[data-header]')) {
        if (input.value !== '') header[input.dataset.header] = input.value;
      }
      bar.hidden = false;
      bar.value = 0;
      const stored = await upload(method, header, blob, fileName, (sent, total) => {
        bar.value = total ? sent / total : 0;
        status.textContent = sent < total ? `${Math.round((100 * sent) / total)}% sent` : 'Sent; the server is checking it…';
      });
      bar.value = 1;
      status.textContent = `Uploaded ${stored.name}.`;
      onDone?.(stored);
    } catch (e) {
      status.textContent = '';
      out.append(errorBox(e));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}
