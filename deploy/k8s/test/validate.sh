#!/usr/bin/env bash
# Renders the kustomize base and every overlay under deploy/k8s with
# `kubectl kustomize` and validates every rendered object (validate.js):
# Kubernetes / Prometheus Operator schemas, field names, and consistency across
# objects and with the Dockerfile, which is also linted. Registered in CTest as
# k8s_manifests.
#
# Needs kubectl, node and npm: on a machine without them it installs Debian's
# kubernetes-client (kubectl 1.20, the oldest kustomize we support), nodejs and
# npm, as scripts/setup.sh does. The validators come from the npm registry at
# the versions in package-lock.json (`npm ci`, into node_modules here, once per
# lockfile change).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
k8s="$root/deploy/k8s"

missing=()
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "k8s test: needs ${missing[*]} (apt-get install ${missing[*]})" >&2
      exit 1
    fi
    SUDO="sudo"
  fi
  echo "k8s test: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The validators, exactly as locked; reinstalled only when the lockfile changes.
stamp="$here/node_modules/.kaizen-lock.sha256"
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "k8s test: npm ci in deploy/k8s/test"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" >"$stamp"
fi

echo "k8s test: $(kubectl version --client --short 2>/dev/null || kubectl version --client 2>/dev/null | head -1), node $(node --version)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The Dockerfile, statically (no Docker engine needed): instructions, flags
# and arguments (dockerfile-utils, the checker of the Dockerfile language
# server). validate.js also checks its USER and EXPOSE against the manifests.
"$here/node_modules/.bin/dockerfile-utils" lint "$root/Dockerfile"

# Copied patches must stay copies (kustomize cannot share a file between
# overlays): overlays/gpu-tls carries overlays/gpu's.
for f in "$k8s"/overlays/gpu/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] && continue
  if ! cmp -s "$f" "$k8s/overlays/gpu-tls/$(basename "$f")"; then
    echo "k8s test: overlays/gpu-tls/$(basename "$f") differs from overlays/gpu/$(basename "$f")" >&2
    exit 1
  fi
done

rendered=()
for dir in "$k8s/base" "$k8s"/overlays/*/; do
  dir="${dir%/}"
  name="$(basename "$dir")"
  # Deprecation warnings of newer kustomize versions go to stderr; keep them
  # out of the log unless rendering fails.
  if ! kubectl kustomize "$dir" >"$work/$name.yaml" 2>"$work/$name.err"; then
    echo "k8s test: kubectl kustomize ${dir#"$root"/} failed:" >&2
    cat "$work/$name.err" >&2
    exit 1
  fi
  rendered+=("$name=$work/$name.yaml")
done

# A job exported to a PyTorchJob: the example in deploy/pytorchjob is what
# ExportJob writes (JobExportTest.TheExampleInDeployIsWhatAnExportWrites).
rendered+=("export=$root/deploy/pytorchjob/exported.yaml")

node "$here/validate.js" --readme="$root/README.md" --dockerfile="$root/Dockerfile" --self-test \
  "${rendered[@]}"
echo "k8s test: passed"
