// The JSON API over HTTP (README: "The JSON API over HTTP"): every call is
// POST /api/<package.Service>/<Method> with the request in proto3 JSON. The
// bearer token lives in this tab's sessionStorage and travels only in the
// Authorization header, never in a URL.

const TOKEN_KEY = 'kaizen.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const h = { ...extra };
  if (token()) h.Authorization = `Bearer ${token()}`;
  return h;
}

// An error answer of the API: {code, status, message} and the HTTP status.
export class ApiError extends Error {
  constructor(httpStatus, body) {
    super(body.message || `HTTP ${httpStatus}`);
    this.httpStatus = httpStatus;
    this.code = body.code;
    this.status = body.status;
  }
}

async function answer(response) {
  const text = await response.text();
  let body = {};
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = { message: text };
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// Calls `method` ("kaizen.v1.FineTuneService/GetJob") with `request`.
export async function call(method, request = {}) {
  const response = await fetch(`/api/${method}`, {
    method: 'POST',
    headers: headers({ 'Content-Type': 'application/json' }),
    body: JSON.stringify(request),
  });
  return answer(response);
}

// Who the token names and which routes their role may call.
export async function session() {
  return answer(await fetch('/api/session', { headers: headers() }));
}

// Follows a job's events (Server-Sent Events read with fetch, since
// EventSource cannot send the Authorization header). `onEvent(name, data)`
// gets each event; on a dropped connection (or one silent for longer than
// three keep-alives) it reconnects with the last id it saw (Last-Event-ID),
// so no event is seen twice or missed. When the server ends the stream,
// `onEnd(null)` decides: false reconnects (the job is not over: the server
// was stopping), anything else stops. A refusal ends it with `onEnd(error)`.
// Returns a function that stops it.
export function watchJob(id, afterSequence, onEvent, onEnd) {
  let last = afterSequence;
  let stopped = false;
  let attempt = null; // the AbortController of the connection open now
  let wake = null; // ends the wait between attempts
  const stop = () => {
    stopped = true;
    attempt?.abort();
    wake?.();
  };
  const deliver = (name, data) => {
    try {
      onEvent(name, data);
    } catch (e) {
      // A drawing bug must not drop the stream nor replay the event.
      setTimeout(() => {
        throw e;
      });
    }
  };
  (async () => {
    let delay = 1000;
    while (!stopped) {
      let finished = false;
      const controller = new AbortController();
      attempt = controller;
      let watchdog = 0;
      const quiet = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => controller.abort(), 45000);
      };
      let reader = null;
      try {
        quiet();
        const response = await fetch('/api/kaizen.v1.FineTuneService/WatchJob', {
          method: 'POST',
          headers: headers({
            'Content-Type': 'application/json',
            Accept: 'text/event-stream',
            'Last-Event-ID': String(last),
          }),
          body: JSON.stringify({ id }),
          signal: controller.signal,
        });
        if (!response.ok) {
          const error = await answer(response).catch((e) => e);
          // A server restarting answers 5xx for a moment: try again.
          if (response.status < 500) {
            onEnd?.(error);
            return;
          }
        } else {
          reader = response.body.getReader();
          const decoder = new TextDecoder();
          let buffered = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            quiet();
            delay = 1000;
            buffered += decoder.decode(value, { stream: true });
            let end;
            while ((end = buffered.indexOf('\n\n')) >= 0) {
              const frame = buffered.slice(0, end);
              buffered = buffered.slice(end + 2);
              const event = parseFrame(frame);
              if (!event) continue;
              if (event.name === 'stream_end') {
                finished = true;
              } else if (event.name === 'stream_error') {
                const data = JSON.parse(event.data);
                // Too far behind: resume after the last event seen.
                if (data.status !== 'RESOURCE_EXHAUSTED') {
                  onEnd?.(new ApiError(0, data));
                  return;
                }
              } else {
                if (event.id) last = Number(event.id);
                deliver(event.name, JSON.parse(event.data));
              }
            }
          }
        }
      } catch {
        // Dropped, silent too long, or stopped: the loop decides.
      } finally {
        clearTimeout(watchdog);
        reader?.cancel().catch(() => {});
      }
      if (stopped) return;
      if (finished && (await onEnd?.(null)) !== false) return;
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, delay);
      });
      delay = Math.min(delay * 2, 15000);
    }
  })();
  return stop;
}

function parseFrame(frame) {
  const event = { name: 'message', data: '' };
  let any = false;
  for (const line of frame.split('\n')) {
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'id') event.id = value;
    else if (field === 'event') event.name = value;
    else if (field === 'data') event.data += (event.data ? '\n' : '') + value;
    else continue;
    any = true;
  }
  return any && event.data ? event : null;
}

// JSON escapes every character outside printable ASCII, so that the text can
// travel in an HTTP header (Kaizen-Upload-Header).
function asciiJson(value) {
  return JSON.stringify(value).replace(/[^\x20-\x7e]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

// Uploads `blob` as the one part of an upload (`method`:
// "kaizen.v1.DatasetService/UploadDataset" or ".../ModelService/UploadModel")
// with `header` (its header message, proto3 JSON; parts are filled in).
// XMLHttpRequest, not fetch: only it reports upload progress, to
// `onProgress(sentBytes, totalBytes)`. Resolves to the stored message.
export function upload(method, header, blob, fileName, onProgress) {
  const full = { ...header, parts: [{ fileName, sizeBytes: String(blob.size) }] };
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/api/${method}`);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.setRequestHeader('Kaizen-Upload-Header', asciiJson(full));
    if (token()) xhr.setRequestHeader('Authorization', `Bearer ${token()}`);
    xhr.upload.onprogress = (e) => onProgress?.(e.loaded, e.lengthComputable ? e.total : blob.size);
    xhr.onload = () => {
      let body = {};
      try {
        body = xhr.responseText ? JSON.parse(xhr.responseText) : {};
      } catch {
        body = { message: xhr.responseText };
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    };
    xhr.onerror = () => reject(new ApiError(0, { message: 'the upload was cut off (network error)' }));
    xhr.send(blob);
  });
}

// Downloads a model version's TorchScript file and hands it to the browser
// as `fileName`. The answer is cut short (a network error here) when the
// server's checksum of the file does not match.
export async function downloadModel(name, version, fileName) {
  const response = await fetch('/api/kaizen.v1.ModelService/DownloadModel', {
    method: 'POST',
    headers: headers({ 'Content-Type': 'application/json' }),
    body: JSON.stringify({ name, version: String(version) }),
  });
  if (!response.ok) await answer(response);
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = fileName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}
