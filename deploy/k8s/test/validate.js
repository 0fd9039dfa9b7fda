#!/usr/bin/env node
// Validates Kaizen's rendered Kubernetes manifests (validate.sh renders them
// with `kubectl kustomize`). Three layers, each of which fails the run:
//
//  1. Schemas: every object against the Kubernetes / Prometheus Operator JSON
//     schemas of kubernetes-models and @kubernetes-models/prometheus-operator
//     (ajv: types, enums, required fields, formats).
//  2. Field names: those schemas allow unknown properties, so a misspelt
//     field (`readOnlyRootFilesytem`) would pass them and be dropped by the
//     API server. Every object is therefore also type-checked by the
//     TypeScript compiler against the same packages' interfaces, whose
//     excess-property check rejects any field the API does not have.
//  3. Consistency across objects: ports (container, Service, probes,
//     ServiceMonitor, NetworkPolicy, server flags), volumes and mounts,
//     Secrets against the ones the README tells operators to create,
//     graceful-shutdown timing, security settings, the image's user and
//     exposed ports (--dockerfile), and what each overlay promises (tls:
//     mutual TLS and tokens, no --insecure; gpu: a GPU).
//
// Usage: node validate.js --readme=README.md [--dockerfile=Dockerfile]
//                         [--self-test] NAME=FILE.yaml ...
// NAME is the kustomization's name (base, gpu, tls, gpu-tls, replicas):
// overlays whose name contains "tls" must serve TLS with tokens, those
// containing "gpu" must request a GPU, those containing "replicas" must run
// several replicas on PostgreSQL and a ReadWriteMany volume (the others: one
// replica, Recreate). NAME "export" is a job exported to a PyTorchJob
// (ExportJob's manifest): its replica types are checked as PodTemplates,
// with the export's own consistency checks (checkExport). --self-test first
// feeds deliberately broken copies of the rendered objects through the same
// checks and fails unless each is caught.
"use strict";

const fs = require("fs");
const path = require("path");
const YAML = require("yaml");
const ts = require("typescript");

// ---------------------------------------------------------------------------
// Loading.

function loadObjects(file) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  const objects = [];
  for (const doc of docs) {
    if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0].message}`);
    const obj = doc.toJS();
    if (obj !== null && obj !== undefined) objects.push(obj);
  }
  return objects;
}

// A PyTorchJob (kubeflow.org/v1, a CRD with no model here) as what the
// layers can check: one PodTemplate per replica type, named
// <job>-<Master|Worker> and labelled kaizen.dev/replicas with its count.
// Everything else passes through.
function splitPyTorchJobs(objects) {
  const out = [];
  for (const o of objects) {
    if (!o || o.kind !== "PyTorchJob") {
      out.push(o);
      continue;
    }
    if (o.apiVersion !== "kubeflow.org/v1") out.push({kind: "PyTorchJob", apiVersion: o.apiVersion});
    const specs = (o.spec || {}).pytorchReplicaSpecs || {};
    for (const [type, r] of Object.entries(specs)) {
      out.push({
        apiVersion: "v1",
        kind: "PodTemplate",
        metadata: {name: `${o.metadata.name}-${type}`, labels: {"kaizen.dev/replicas": String(r.replicas)}},
        template: r.template,
      });
    }
  }
  return out;
}

function objectName(obj) {
  return `${obj && obj.kind}/${obj && obj.metadata && obj.metadata.name}`;
}

// "apps/v1" + "Deployment" -> the module that models it.
function modelModule(apiVersion, kind) {
  const slash = apiVersion.indexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
  if (group === "monitoring.coreos.com") {
    return `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`;
  }
  return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}

function resolveModel(obj) {
  if (!obj || typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") {
    return {error: "no apiVersion/kind"};
  }
  const mod = modelModule(obj.apiVersion, obj.kind);
  let exported;
  try {
    exported = require(mod);
  } catch (e) {
    return {error: `no schema for ${obj.apiVersion} ${obj.kind} (${mod})`};
  }
  if (typeof exported[obj.kind] !== "function") return {error: `${mod} has no ${obj.kind}`};
  return {module: mod, Model: exported[obj.kind], typeName: `I${obj.kind}`};
}

// ---------------------------------------------------------------------------
// 1. JSON schemas (ajv, through the models' validate()).

function schemaErrors(obj) {
  const model = resolveModel(obj);
  if (model.error) return [model.error];
  try {
    new model.Model(obj).validate();
    return [];
  } catch (e) {
    const details = Array.isArray(e.errors)
      ? e.errors.map((x) => `${x.instancePath || "/"} ${x.message}`)
      : [String(e.message || e)];
    return details.map((d) => `schema: ${d}`);
  }
}

// ---------------------------------------------------------------------------
// 2. Field names and types: the TypeScript compiler on a generated file
// `const o0: IDeployment = {...};`. The file is virtual, placed in this
// folder so that module resolution finds node_modules.

const TS_OPTIONS = {
  strict: true,
  noEmit: true,
  skipLibCheck: true,
  target: ts.ScriptTarget.ES2020,
  module: ts.ModuleKind.CommonJS,
  moduleResolution: ts.ModuleResolutionKind.Node10,
  types: [],
};

const VIRTUAL_FILE = path.join(__dirname, "__rendered_manifests__.ts");
let virtualSource = "";
// One compiler host for every run, caching parsed declaration files, so that
// the self-test's many small programs cost little after the first.
const host = (() => {
  const h = ts.createCompilerHost(TS_OPTIONS, true);
  const cache = new Map();
  const getSourceFile = h.getSourceFile.bind(h);
  h.getSourceFile = (name, lang, ...rest) => {
    if (path.resolve(name) === VIRTUAL_FILE) return ts.createSourceFile(name, virtualSource, lang, true);
    if (!cache.has(name)) cache.set(name, getSourceFile(name, lang, ...rest));
    return cache.get(name);
  };
  const fileExists = h.fileExists.bind(h);
  h.fileExists = (name) => path.resolve(name) === VIRTUAL_FILE || fileExists(name);
  const readFile = h.readFile.bind(h);
  h.readFile = (name) => (path.resolve(name) === VIRTUAL_FILE ? virtualSource : readFile(name));
  return h;
})();

function typeErrors(objects) {
  const errors = objects.map(() => []);
  const lines = [];
  const owner = [];  // line index -> object index
  const emit = (text, index) => {
    for (const l of text.split("\n")) {
      lines.push(l);
      owner.push(index);
    }
  };
  objects.forEach((obj, i) => {
    const model = resolveModel(obj);
    if (model.error) return;  // reported by the schema layer
    emit(`import type { ${model.typeName} as T${i} } from ${JSON.stringify(model.module)};`, i);
    emit(`export const o${i}: T${i} = ${JSON.stringify(obj, null, 1)};`, i);
  });
  virtualSource = lines.join("\n") + "\n";
  const fileName = VIRTUAL_FILE;
  const program = ts.createProgram([fileName], TS_OPTIONS, host);
  for (const d of ts.getPreEmitDiagnostics(program)) {
    let message = ts.flattenDiagnosticMessageText(d.messageText, "\n").split("\n")[0];
    if (message.length > 240) message = `${message.slice(0, 240)}...`;
    if (!d.file || path.resolve(d.file.fileName) !== fileName) {
      // A broken toolchain must not look like a pass.
      errors.forEach((list) => list.push(`types: ${message}`));
      continue;
    }
    const {line} = d.file.getLineAndCharacterOfPosition(d.start);
    errors[owner[line]].push(`types: ${message} (at: ${lines[line].trim()})`);
  }
  return errors;
}

// ---------------------------------------------------------------------------
// README: the Secrets operators are told to create, with their keys.

function documentedSecrets(readmeText) {
  const secrets = new Map();
  const re = /kubectl\b[^\n]*?\bcreate secret (tls|generic) ([a-z0-9.-]+)([^\n]*)/g;
  let m;
  while ((m = re.exec(readmeText)) !== null) {
    const [, type, name, rest] = m;
    const keys = new Set();
    if (type === "tls") {
      keys.add("tls.crt");
      keys.add("tls.key");
    }
    for (const f of rest.matchAll(/--from-(?:file|literal)=([^\s\\]+)/g)) {
      const spec = f[1];
      keys.add(spec.includes("=") ? spec.slice(0, spec.indexOf("=")) : path.basename(spec));
    }
    secrets.set(name, keys);
  }
  return secrets;
}

// The Dockerfile's final stage: its user and exposed ports.

function dockerfileFacts(text) {
  const lines = text.replace(/\\\n/g, " ").split("\n").map((l) => l.trim());
  let user;
  let exposed = [];
  let entrypoint = "";
  for (const l of lines) {
    const m = /^(\w+)\s+(.*)$/.exec(l);
    if (!m || l.startsWith("#")) continue;
    const [, instr, rest] = m;
    switch (instr.toUpperCase()) {
      case "FROM": user = undefined; exposed = []; entrypoint = ""; break;
      case "USER": user = rest.split(":")[0]; break;
      case "EXPOSE": exposed.push(...rest.split(/\s+/).map((x) => Number(x.split("/")[0]))); break;
      case "ENTRYPOINT": entrypoint = rest; break;
    }
  }
  return {user, exposed, entrypoint};
}

// ---------------------------------------------------------------------------
// 3. Consistency.

function parseArgs(args, problems) {
  const flags = new Map();
  for (const a of args || []) {
    const m = /^--([a-z0-9_]+)(?:=(.*))?$/.exec(a);
    if (!m) {
      problems.push(`argument ${JSON.stringify(a)} is not --flag or --flag=value`);
      continue;
    }
    if (flags.has(m[1])) problems.push(`--${m[1]} is given twice`);
    flags.set(m[1], m[2] === undefined ? true : m[2]);
  }
  return flags;
}

function labelsMatch(selector, labels) {
  if (!selector || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels && labels[k] === v);
}

function intFlag(flags, name, problems) {
  const v = flags.get(name);
  if (v === undefined || v === true || !/^-?\d+(\.\d+)?$/.test(String(v))) {
    problems.push(`--${name} is missing or not a number (${v})`);
    return NaN;
  }
  return Number(v);
}

// An exported job (ExportJob's manifest, split by splitPyTorchJobs), held
// to exactly what ExportJob writes where it matters: one Master and
// optional Workers, each one "pytorch" container running kaizen-worker with
// the export's folder of one claim read-only at /job, its out/ writable at
// /job/out and an emptyDir at /tmp (no other mount, volume, container or
// token), hardened; and the NetworkPolicy that selects exactly the export's
// pods and lets them reach each other and port 53, nothing else.
function canonical(x) {
  if (Array.isArray(x)) return `[${x.map(canonical).join(",")}]`;
  if (x && typeof x === "object") {
    return `{${Object.keys(x).sort().map((k) => `${JSON.stringify(k)}:${canonical(x[k])}`).join(",")}}`;
  }
  return JSON.stringify(x);
}

function checkExport(objects) {
  const p = [];
  const same = (a, b) => canonical(a) === canonical(b);
  const templates = objects.filter((o) => o && o.kind === "PodTemplate");
  const netpols = objects.filter((o) => o && o.kind === "NetworkPolicy");
  const master = templates.find((t) => t.metadata.name.endsWith("-Master"));
  if (!master) p.push("no Master replica");
  else if (master.metadata.labels["kaizen.dev/replicas"] !== "1") p.push("the Master is not one pod");
  if (netpols.length !== 1) p.push(`expected one NetworkPolicy, found ${netpols.length}`);
  const folders = new Set();
  const claims = new Set();
  for (const t of templates) {
    const name = t.metadata.name;
    if (!/-(Master|Worker)$/.test(name) || !(Number(t.metadata.labels["kaizen.dev/replicas"]) >= 1)) {
      p.push(`${name}: not a Master or Worker replica type with at least one pod`);
    }
    const labels = ((t.template || {}).metadata || {}).labels || {};
    const spec = (t.template || {}).spec || {};
    const containers = spec.containers || [];
    const c = containers[0] || {};
    if (containers.length !== 1 || c.name !== "pytorch" || (spec.initContainers || []).length) {
      p.push(`${name}: not exactly one container, named pytorch (the operator looks for it)`);
    }
    if (!same(c.command, ["kaizen-worker", "--spec=/job/spec.json"])) {
      p.push(`${name}: the command is not kaizen-worker --spec=/job/spec.json`);
    }
    const jobMount = (c.volumeMounts || []).find((m) => m.mountPath === "/job") || {};
    const folder = String(jobMount.subPath || "").replace(/^exports\//, "");
    folders.add(folder);
    if (!/^ft-[0-9a-f]+-[0-9a-f]{6}$/.test(folder)) p.push(`${name}: /job is not an export's folder`);
    if (labels["kaizen.dev/export"] !== folder) p.push(`${name}: its pods are not labelled with the export`);
    if (!same(c.volumeMounts, [
      {name: "job", mountPath: "/job", subPath: `exports/${folder}`, readOnly: true},
      {name: "job", mountPath: "/job/out", subPath: `exports/${folder}/out`},
      {name: "tmp", mountPath: "/tmp"},
    ])) {
      p.push(`${name}: mounts other than the folder read-only at /job, its out/ at /job/out and /tmp`);
    }
    const vols = spec.volumes || [];
    const claim = ((vols[0] || {}).persistentVolumeClaim || {}).claimName;
    claims.add(claim);
    if (!same(vols, [{name: "job", persistentVolumeClaim: {claimName: claim}}, {name: "tmp", emptyDir: {}}])) {
      p.push(`${name}: volumes other than the claim and an emptyDir`);
    }
    const psc = spec.securityContext || {};
    if (spec.automountServiceAccountToken !== false || psc.runAsNonRoot !== true ||
        psc.fsGroupChangePolicy !== "OnRootMismatch") {
      p.push(`${name}: a service account token, root, or a recursive chown of the shared volume`);
    }
    const sc = c.securityContext || {};
    if (sc.readOnlyRootFilesystem !== true || sc.allowPrivilegeEscalation !== false ||
        !same(sc.capabilities, {drop: ["ALL"]})) {
      p.push(`${name}: the container is not hardened`);
    }
    const res = c.resources || {};
    const memory = (res.requests || {}).memory;
    if (!(res.requests || {}).cpu || !/^[1-9][0-9]*Mi$/.test(String(memory)) ||
        !same(res.limits, {memory})) {
      p.push(`${name}: not CPUs requested and memory requested and limited alike, in Mi`);
    }
  }
  if (folders.size !== 1 || claims.size !== 1) p.push("the replica types mount different folders or claims");
  const folder = [...folders][0];
  const own = {podSelector: {matchLabels: {"kaizen.dev/export": folder}}};
  const expected = {
    podSelector: own.podSelector,
    policyTypes: ["Ingress", "Egress"],
    ingress: [{from: [own]}],
    egress: [{to: [own]}, {ports: [{protocol: "UDP", port: 53}, {protocol: "TCP", port: 53}]}],
  };
  if (netpols[0] && !same(netpols[0].spec, expected)) {
    p.push("NetworkPolicy: not exactly the export's pods to each other and port 53");
  }
  return p;
}

function checkConsistency(name, objects, ctx) {
  if (name === "export") return checkExport(objects);
  const secretsDoc = ctx.secrets;
  const p = [];
  const byKind = (kind) => objects.filter((o) => o && o.kind === kind);
  const one = (kind) => {
    const list = byKind(kind);
    if (list.length !== 1) p.push(`expected exactly one ${kind}, found ${list.length}`);
    return list[0];
  };
  const deploy = one("Deployment");
  const service = one("Service");
  const monitor = one("ServiceMonitor");
  const pdb = one("PodDisruptionBudget");
  const netpol = one("NetworkPolicy");
  const pvcs = byKind("PersistentVolumeClaim");
  if (!deploy) return p;

  const spec = deploy.spec || {};
  const podSpec = (spec.template || {}).spec || {};
  const podLabels = ((spec.template || {}).metadata || {}).labels || {};
  const containers = podSpec.containers || [];
  const c = containers.find((x) => x.name === "kaizen");
  if (!c) {
    p.push("Deployment has no container named kaizen");
    return p;
  }

  // The Deployment itself: one replica on SQLite, or (overlays named
  // "replicas") several on PostgreSQL and a volume they can all mount.
  const replicated = name.includes("replicas");
  if (!replicated) {
    if (spec.replicas !== 1) p.push(`replicas is ${spec.replicas}; the SQLite catalogue needs exactly 1`);
    if (!spec.strategy || spec.strategy.type !== "Recreate") {
      p.push("strategy must be Recreate (two pods must never share the data volume)");
    }
  } else {
    if (!(spec.replicas >= 2)) p.push(`a replicas overlay runs ${spec.replicas} replica(s), not several`);
    for (const pvc of pvcs) {
      const modes = (pvc.spec || {}).accessModes || [];
      if (!modes.includes("ReadWriteMany")) {
        p.push(`PVC ${pvc.metadata.name} is ${modes.join(",")}; replicas share it: ReadWriteMany`);
      }
    }
  }
  if (!labelsMatch((spec.selector || {}).matchLabels, podLabels)) {
    p.push("Deployment selector does not match the pod template's labels");
  }

  // Container ports and the flags that open them.
  const ports = new Map((c.ports || []).map((x) => [x.name, x.containerPort]));
  const resolvePort = (port) => {
    if (typeof port === "number") return [...ports.values()].includes(port) ? port : undefined;
    return ports.get(port);
  };
  const flags = parseArgs(c.args, p);
  for (const [flag, portName] of [["grpc_port", "grpc"], ["metrics_port", "metrics"], ["health_port", "health"]]) {
    const value = intFlag(flags, flag, p);
    if (!ports.has(portName)) p.push(`container has no port named ${portName}`);
    else if (ports.get(portName) !== value) {
      p.push(`--${flag}=${flags.get(flag)} but container port "${portName}" is ${ports.get(portName)}`);
    }
  }

  // Probes: gRPC health on the plaintext health port, liveness on a real port.
  const healthPort = ports.get("health");
  for (const probeName of ["startupProbe", "readinessProbe"]) {
    const probe = c[probeName];
    if (!probe || !probe.grpc) {
      p.push(`${probeName} must be a gRPC probe`);
    } else if (probe.grpc.port !== healthPort) {
      p.push(`${probeName} probes port ${probe.grpc.port}, not the health port ${healthPort}`);
    } else if (probe.grpc.service) {
      p.push(`${probeName} asks for service "${probe.grpc.service}"; the overall status ("") is what drains`);
    }
  }
  const live = c.livenessProbe;
  if (!live) p.push("no livenessProbe");
  else {
    const action = live.tcpSocket || live.httpGet || live.grpc;
    if (!action || resolvePort(action.port) === undefined) {
      p.push(`livenessProbe port ${action && action.port} is not a container port`);
    }
  }

  // Several replicas: the catalogue in PostgreSQL (--database or
  // $KAIZEN_DATABASE_URL from a Secret, never a password in the manifest)
  // and a name per replica for the job leases.
  if (replicated) {
    const env = new Map((c.env || []).map((e) => [e.name, e]));
    const fromSecret = (n) => env.has(n) && ((env.get(n).valueFrom || {}).secretKeyRef || null);
    const db = flags.get("database");
    if (typeof db === "string") {
      if (!/^postgres(ql)?:\/\//.test(db)) p.push(`--database=${db} is not a postgresql:// URL`);
      if (/:\/\/[^/@]*:[^/@]*@/.test(db)) p.push("--database carries a password; use $PGPASSWORD from a Secret");
    } else if (!fromSecret("KAIZEN_DATABASE_URL")) {
      p.push("a replicas overlay needs --database or KAIZEN_DATABASE_URL from a Secret");
    }
    const id = flags.get("replica_id");
    if (typeof id !== "string" || !id.includes("$(")) {
      p.push("a replicas overlay needs --replica_id from the pod (e.g. $(POD_NAME)), unique per replica");
    } else {
      for (const m of id.matchAll(/\$\(([A-Z_]+)\)/g)) {
        if (!env.has(m[1])) p.push(`--replica_id uses $(${m[1]}), which the container's env does not define`);
      }
    }
    for (const e of c.env || []) {
      const ref = (e.valueFrom || {}).secretKeyRef;
      if (!ref) continue;
      const keys = ctx.secrets.get(ref.name);
      if (!keys) p.push(`env ${e.name} reads Secret ${ref.name}, which the README does not tell operators to create`);
      else if (!keys.has(ref.key)) p.push(`env ${e.name} reads key ${ref.key} of Secret ${ref.name}, which the README does not create`);
    }
  } else if (flags.has("database") || flags.has("replica_id")) {
    p.push("--database/--replica_id in an overlay not named replicas (one replica keeps SQLite)");
  }

  // Graceful shutdown.
  const drain = intFlag(flags, "drain_seconds", p);
  const grace = intFlag(flags, "shutdown_grace_seconds", p);
  const tgps = podSpec.terminationGracePeriodSeconds;
  if (!(typeof tgps === "number" && tgps > drain + grace)) {
    p.push(`terminationGracePeriodSeconds (${tgps}) must be more than --drain_seconds (${drain}) + ` +
           `--shutdown_grace_seconds (${grace})`);
  }
  const ready = c.readinessProbe || {};
  const noticed = (ready.periodSeconds || 10) * (ready.failureThreshold || 3) + (ready.timeoutSeconds || 1);
  if (!(noticed < drain)) {
    p.push(`readiness notices NOT_SERVING after up to ${noticed} s, not within --drain_seconds (${drain})`);
  }

  // Transport: the server's own rule, and what TLS overlays promise.
  const tlsFlags = ["tls_cert", "tls_key", "tls_client_ca", "tokens_file"];
  const secured = flags.has("tls_cert") || flags.has("tokens_file");
  const host = flags.get("host");
  if (host === undefined || host === true) p.push("--host is missing (the server's default is 127.0.0.1)");
  else if (host !== "127.0.0.1" && !secured && !flags.has("insecure")) {
    p.push(`--host=${host} without TLS or tokens needs --insecure (the server refuses to start)`);
  }
  const mounts = c.volumeMounts || [];
  const volumes = new Map((podSpec.volumes || []).map((v) => [v.name, v]));
  if (name.includes("tls")) {
    if (flags.has("insecure")) p.push("a tls overlay must not pass --insecure");
    for (const f of tlsFlags) {
      const file = flags.get(f);
      if (typeof file !== "string" || !file.startsWith("/")) {
        p.push(`a tls overlay needs --${f}=/absolute/path`);
        continue;
      }
      const mount = mounts.find((m) => file.startsWith(m.mountPath.replace(/\/?$/, "/")));
      if (!mount) {
        p.push(`--${f}=${file} is not under any volumeMount`);
        continue;
      }
      const volume = volumes.get(mount.name);
      if (!volume || !volume.secret) {
        p.push(`--${f}=${file} is on volume ${mount.name}, which is not a Secret`);
        continue;
      }
      if (!mount.readOnly) p.push(`the mount of ${mount.name} (--${f}) must be readOnly`);
      if (mount.subPath) p.push(`the mount of ${mount.name} uses subPath, which never sees updates`);
      const rel = file.slice(mount.mountPath.replace(/\/?$/, "/").length);
      const items = volume.secret.items;
      const key = items ? (items.find((it) => it.path === rel) || {}).key : rel;
      if (items && key === undefined) {
        p.push(`--${f}=${file}: Secret volume ${mount.name} projects no file ${rel}`);
      } else if (secretsDoc.has(volume.secret.secretName) &&
                 !secretsDoc.get(volume.secret.secretName).has(key)) {
        p.push(`--${f} reads key ${key} of Secret ${volume.secret.secretName}, which the README ` +
               `does not create (it creates: ${[...secretsDoc.get(volume.secret.secretName)].join(", ")})`);
      }
    }
  } else {
    for (const f of tlsFlags) if (flags.has(f)) p.push(`--${f} in an overlay not named tls`);
  }

  // GPU.
  const limits = (c.resources || {}).limits || {};
  const gpus = Number(limits["nvidia.com/gpu"] || 0);
  const image = String(c.image || "");
  if (name.includes("gpu")) {
    if (!(gpus >= 1)) p.push("a gpu overlay must limit nvidia.com/gpu to 1 or more");
    if (!/cuda/.test(image.slice(image.lastIndexOf(":") + 1))) p.push(`image ${image} is not a CUDA tag`);
    if (!(podSpec.tolerations || []).some((t) => t.key === "nvidia.com/gpu")) {
      p.push("a gpu overlay must tolerate the nvidia.com/gpu taint");
    }
  } else if (gpus) {
    p.push("nvidia.com/gpu requested outside a gpu overlay");
  } else if (/cuda/.test(image)) {
    p.push(`CUDA image ${image} outside a gpu overlay`);
  }

  // Resources.
  const requests = (c.resources || {}).requests || {};
  if (!requests.cpu || !requests.memory) p.push("resources.requests needs cpu and memory");
  if (!limits.memory) p.push("resources.limits needs memory");

  // Security.
  const psc = podSpec.securityContext || {};
  const csc = c.securityContext || {};
  if (psc.runAsNonRoot !== true && csc.runAsNonRoot !== true) p.push("runAsNonRoot must be true");
  if ((csc.runAsUser ?? psc.runAsUser) !== 10001) p.push("runAsUser must be 10001 (the image's user)");
  if (psc.fsGroup === undefined) p.push("fsGroup must be set (the data volume must be writable)");
  if (csc.readOnlyRootFilesystem !== true) p.push("readOnlyRootFilesystem must be true");
  if (csc.allowPrivilegeEscalation !== false) p.push("allowPrivilegeEscalation must be false");
  if (!((csc.capabilities || {}).drop || []).includes("ALL")) p.push("capabilities must drop ALL");
  const seccomp = (csc.seccompProfile || psc.seccompProfile || {}).type;
  if (seccomp !== "RuntimeDefault") p.push(`seccompProfile is ${seccomp}, not RuntimeDefault`);
  if (!(c.env || []).some((e) => e.name === "OMP_WAIT_POLICY" && e.value === "PASSIVE")) {
    p.push("OMP_WAIT_POLICY=PASSIVE is missing (README: Threads)");
  }

  // The image: the user the pod runs as, the ports the manifests open.
  if (ctx.docker) {
    const uid = csc.runAsUser ?? psc.runAsUser;
    if (String(uid) !== ctx.docker.user) p.push(`runAsUser ${uid} is not the Dockerfile's USER ${ctx.docker.user}`);
    for (const [portName, port] of ports) {
      if (!ctx.docker.exposed.includes(port)) p.push(`container port ${portName} (${port}) is not EXPOSEd by the Dockerfile`);
    }
    if (!ctx.docker.entrypoint.includes("kaizen-server")) p.push("the Dockerfile's ENTRYPOINT is not kaizen-server");
  }

  // Volumes and mounts.
  for (const m of mounts) if (!volumes.has(m.name)) p.push(`volumeMount ${m.name} has no volume`);
  const mounted = new Set(containers.flatMap((x) => (x.volumeMounts || []).map((m) => m.name)));
  for (const v of volumes.keys()) if (!mounted.has(v)) p.push(`volume ${v} is mounted nowhere`);
  const mountAt = (dir) => mounts.find((m) => m.mountPath.replace(/\/$/, "") === dir);
  const dataDir = flags.get("data_dir");
  const dataMount = typeof dataDir === "string" ? mountAt(dataDir.replace(/\/$/, "")) : undefined;
  if (!dataMount) p.push(`--data_dir=${dataDir} is not a volumeMount`);
  else {
    const claim = ((volumes.get(dataMount.name) || {}).persistentVolumeClaim || {}).claimName;
    if (!claim) p.push(`--data_dir is on volume ${dataMount.name}, which is not a PersistentVolumeClaim`);
    else if (!pvcs.some((x) => x.metadata.name === claim)) p.push(`PersistentVolumeClaim ${claim} is not rendered`);
    if (dataMount.readOnly) p.push("the data directory is mounted readOnly");
  }
  const tmpMount = mountAt("/tmp");
  if (!tmpMount || !(volumes.get(tmpMount.name) || {}).emptyDir) {
    p.push("/tmp must be an emptyDir (the root filesystem is read-only)");
  }

  // Secrets: only the ones the README tells operators to create.
  for (const v of volumes.values()) {
    const secretName = v.secret && v.secret.secretName;
    if (!secretName) continue;
    if (!secretsDoc.has(secretName)) {
      p.push(`volume ${v.name} needs Secret ${secretName}, which the README never creates ` +
             `(it creates: ${[...secretsDoc.keys()].join(", ") || "none"})`);
      continue;
    }
    for (const it of v.secret.items || []) {
      if (!secretsDoc.get(secretName).has(it.key)) {
        p.push(`volume ${v.name} reads key ${it.key} of Secret ${secretName}, which the README does not create`);
      }
    }
  }

  // Service.
  const servicePorts = new Map();
  if (service) {
    if (!labelsMatch((service.spec || {}).selector, podLabels)) p.push("Service selector does not match the pod");
    for (const sp of (service.spec || {}).ports || []) {
      const target = resolvePort(sp.targetPort === undefined ? sp.port : sp.targetPort);
      if (target === undefined) p.push(`Service port ${sp.name}: targetPort ${sp.targetPort} is not a container port`);
      servicePorts.set(sp.name, target);
    }
    for (const portName of ["grpc", "metrics"]) {
      if (!servicePorts.has(portName)) p.push(`Service has no port named ${portName}`);
      else if (servicePorts.get(portName) !== ports.get(portName)) {
        p.push(`Service port ${portName} reaches container port ${servicePorts.get(portName)}, not ${portName}`);
      }
    }
  }

  // ServiceMonitor.
  if (monitor && service) {
    const ms = monitor.spec || {};
    if (!labelsMatch((ms.selector || {}).matchLabels, (service.metadata || {}).labels)) {
      p.push("ServiceMonitor selector does not match the Service's labels");
    }
    const endpoints = ms.endpoints || [];
    if (endpoints.length === 0) p.push("ServiceMonitor has no endpoints");
    for (const e of endpoints) {
      if (!servicePorts.has(e.port)) p.push(`ServiceMonitor endpoint port ${e.port} is not a Service port name`);
      else if (servicePorts.get(e.port) !== ports.get("metrics")) {
        p.push(`ServiceMonitor scrapes Service port ${e.port}, which is not the metrics port`);
      }
      if ((e.path || "/metrics") !== "/metrics") p.push(`ServiceMonitor path ${e.path} is not /metrics`);
    }
  }

  // PodDisruptionBudget and NetworkPolicy select the pod; policy ports exist.
  if (pdb && !labelsMatch(((pdb.spec || {}).selector || {}).matchLabels, podLabels)) {
    p.push("PodDisruptionBudget selector does not match the pod");
  }
  if (netpol) {
    const ns = netpol.spec || {};
    if (!labelsMatch((ns.podSelector || {}).matchLabels, podLabels)) p.push("NetworkPolicy does not select the pod");
    const allowed = new Set();
    for (const rule of ns.ingress || []) {
      for (const rp of rule.ports || []) {
        const target = resolvePort(rp.port);
        if (target === undefined) p.push(`NetworkPolicy port ${rp.port} is not a container port`);
        allowed.add(target);
      }
    }
    for (const portName of ["grpc", "metrics"]) {
      if (!allowed.has(ports.get(portName))) p.push(`NetworkPolicy lets nothing reach ${portName}`);
    }
  }
  return p;
}

// ---------------------------------------------------------------------------
// Running the layers.

function validate(name, objects, ctx) {
  const problems = [];
  const types = typeErrors(objects);
  objects.forEach((obj, i) => {
    for (const e of schemaErrors(obj).concat(types[i])) problems.push(`${objectName(obj)}: ${e}`);
  });
  for (const e of checkConsistency(name, objects, ctx)) problems.push(e);
  return problems;
}

// Deliberate breakage: every one must be caught, or the checks have lost
// their teeth. `layer` names the check expected to catch it.
function selfTest(rendered, ctx) {
  const clone = (x) => JSON.parse(JSON.stringify(x));
  const find = (objs, kind) => objs.find((o) => o.kind === kind);
  const container = (objs) => find(objs, "Deployment").spec.template.spec.containers[0];
  const cases = [
    ["a misspelt container field", "base", "types",
     (o) => { container(o).imagePullPolicyy = "Always"; }],
    ["a misspelt securityContext field", "base", "types",
     (o) => { const sc = container(o).securityContext; sc.readOnlyRootFilesytem = true; }],
    ["replicas as a string", "base", "schema",
     (o) => { find(o, "Deployment").spec.replicas = "1"; }],
    ["a probe port as a string", "base", "schema",
     (o) => { container(o).readinessProbe.grpc.port = "8081"; }],
    ["a ServiceMonitor interval as a number", "base", "schema",
     (o) => { find(o, "ServiceMonitor").spec.endpoints[0].interval = 30; }],
    ["a misspelt ServiceMonitor endpoint field", "base", "types",
     (o) => { find(o, "ServiceMonitor").spec.endpoints[0].portt = "metrics"; }],
    ["the health container port moved", "base", "consistency",
     (o) => { container(o).ports.find((x) => x.name === "health").containerPort = 8082; }],
    ["Service targetPort renamed", "base", "consistency",
     (o) => { find(o, "Service").spec.ports[0].targetPort = "grpcc"; }],
    ["ServiceMonitor port renamed", "base", "consistency",
     (o) => { find(o, "ServiceMonitor").spec.endpoints[0].port = "http-metrics"; }],
    ["NetworkPolicy port renamed", "base", "consistency",
     (o) => { find(o, "NetworkPolicy").spec.ingress[1].ports[0].port = "metric"; }],
    ["termination grace equal to drain + grace", "base", "consistency",
     (o) => { find(o, "Deployment").spec.template.spec.terminationGracePeriodSeconds = 40; }],
    ["a mount without its volume", "base", "consistency",
     (o) => { find(o, "Deployment").spec.template.spec.volumes.pop(); }],
    ["runAsUser other than the image's", "base", "consistency",
     (o) => { find(o, "Deployment").spec.template.spec.securityContext.runAsUser = 10002; }],
    ["--insecure back in tls", "tls", "consistency",
     (o) => { container(o).args.push("--insecure"); }],
    ["--tls_key outside the Secret mounts", "tls", "consistency",
     (o) => { const a = container(o).args; a[a.findIndex((x) => x.startsWith("--tls_key="))] = "--tls_key=/etc/kaizen/keys/tls.key"; }],
    ["an undocumented Secret in tls", "tls", "consistency",
     (o) => { find(o, "Deployment").spec.template.spec.volumes.find((v) => v.secret).secret.secretName = "kaizen-certs"; }],
    ["no GPU in gpu", "gpu", "consistency",
     (o) => { delete container(o).resources.limits["nvidia.com/gpu"]; }],
    ["one replica in replicas", "replicas", "consistency",
     (o) => { find(o, "Deployment").spec.replicas = 1; }],
    ["a ReadWriteOnce volume in replicas", "replicas", "consistency",
     (o) => { find(o, "PersistentVolumeClaim").spec.accessModes = ["ReadWriteOnce"]; }],
    ["no database in replicas", "replicas", "consistency",
     (o) => { container(o).env = container(o).env.filter((e) => e.name !== "KAIZEN_DATABASE_URL"); }],
    ["the same replica_id for every pod", "replicas", "consistency",
     (o) => { const a = container(o).args; a[a.findIndex((x) => x.startsWith("--replica_id="))] = "--replica_id=kaizen"; }],
    ["two replicas in base", "base", "consistency",
     (o) => { find(o, "Deployment").spec.replicas = 2; }],
    ["an export's folder writable", "export", "consistency",
     (o) => { delete find(o, "PodTemplate").template.spec.containers[0].volumeMounts[0].readOnly; }],
    ["an export's NetworkPolicy open to all egress", "export", "consistency",
     (o) => { find(o, "NetworkPolicy").spec.egress.push({}); }],
    ["an export's pods outside its NetworkPolicy", "export", "consistency",
     (o) => { find(o, "NetworkPolicy").spec.podSelector.matchLabels["kaizen.dev/export"] = "other"; }],
    ["an export's egress to any address (to: [])", "export", "consistency",
     (o) => { find(o, "NetworkPolicy").spec.egress[0].to = []; }],
    ["an export's ingress unconfined", "export", "consistency",
     (o) => { find(o, "NetworkPolicy").spec.policyTypes = ["Egress"]; }],
    ["the whole claim mounted in an export's pod", "export", "consistency",
     (o) => { find(o, "PodTemplate").template.spec.containers[0].volumeMounts.push({name: "job", mountPath: "/data"}); }],
    ["an export's pod without a memory limit", "export", "consistency",
     (o) => { delete find(o, "PodTemplate").template.spec.containers[0].resources.limits; }],
    ["a misspelt field in an export's pod", "export", "types",
     (o) => { find(o, "PodTemplate").template.spec.securityContext.fsGroupChangePolicyy = "Always"; }],
  ];
  let failed = 0;
  for (const [what, overlay, layer, mutate] of cases) {
    if (!rendered.has(overlay)) continue;
    const objects = clone(rendered.get(overlay));
    mutate(objects);
    let problems;
    if (layer === "schema") problems = objects.flatMap(schemaErrors);
    else if (layer === "types") problems = typeErrors(objects).flat();
    else problems = checkConsistency(overlay, objects, ctx);
    if (problems.length === 0) {
      console.error(`self-test FAILED: ${what} (${overlay}) passed the ${layer} check`);
      failed++;
    } else {
      console.log(`self-test: ${what} (${overlay}) rejected by ${layer}: ${problems[0]}`);
    }
  }
  return failed;
}

function main() {
  let readme;
  let dockerfile;
  let runSelfTest = false;
  const rendered = new Map();
  for (const arg of process.argv.slice(2)) {
    if (arg.startsWith("--readme=")) readme = arg.slice("--readme=".length);
    else if (arg.startsWith("--dockerfile=")) dockerfile = arg.slice("--dockerfile=".length);
    else if (arg === "--self-test") runSelfTest = true;
    else if (/^[a-z0-9-]+=/.test(arg)) {
      const eq = arg.indexOf("=");
      const name = arg.slice(0, eq);
      const objects = loadObjects(arg.slice(eq + 1));
      rendered.set(name, name === "export" ? splitPyTorchJobs(objects) : objects);
    } else {
      console.error(`validate.js: unknown argument ${arg}`);
      return 2;
    }
  }
  if (!readme || rendered.size === 0) {
    console.error("usage: node validate.js --readme=README.md [--dockerfile=Dockerfile] [--self-test] NAME=FILE.yaml ...");
    return 2;
  }
  const secretsDoc = documentedSecrets(fs.readFileSync(readme, "utf8"));
  const ctx = {
    secrets: secretsDoc,
    docker: dockerfile ? dockerfileFacts(fs.readFileSync(dockerfile, "utf8")) : undefined,
  };

  let failures = 0;
  if (runSelfTest) failures += selfTest(rendered, ctx);

  const referenced = new Set();
  for (const [name, objects] of rendered) {
    const problems = validate(name, objects, ctx);
    for (const o of objects) {
      const podSpec = ((o.spec || {}).template || {}).spec || {};
      for (const v of podSpec.volumes || []) {
        if (v.secret) referenced.add(v.secret.secretName);
      }
      for (const c of podSpec.containers || []) {
        for (const e of c.env || []) {
          const ref = (e.valueFrom || {}).secretKeyRef;
          if (ref) referenced.add(ref.name);
        }
      }
    }
    if (problems.length) {
      failures += problems.length;
      console.error(`${name}: ${problems.length} problem(s)`);
      for (const x of problems) console.error(`  ${name}: ${x}`);
    } else {
      console.log(`${name}: ${objects.length} objects valid (${objects.map(objectName).join(", ")})`);
    }
  }
  for (const s of secretsDoc.keys()) {
    if (!referenced.has(s)) {
      console.error(`README creates Secret ${s}, which no overlay uses`);
      failures++;
    }
  }
  if (secretsDoc.size === 0) {
    console.error(`${readme} documents no \`kubectl create secret\` command`);
    failures++;
  }
  return failures ? 1 : 0;
}

process.exitCode = main();
