#include "server/jobs/job_export.h"

#include <algorithm>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kaizen::jobs {
namespace {

bool IsImageReference(const std::string& image) {
  if (image.empty() || image.size() > 255) return false;
  for (const char c : image) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-' && c != '/' && c != ':' &&
        c != '@') {
      return false;
    }
  }
  return absl::ascii_isalnum(image.front());
}

// A DNS-1123 subdomain, as Kubernetes requires of object names.
bool IsDnsSubdomain(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  for (const char c : name) {
    if (!absl::ascii_islower(c) && !absl::ascii_isdigit(c) && c != '-' && c != '.') return false;
  }
  const auto alnum = [](char c) { return absl::ascii_islower(c) || absl::ascii_isdigit(c); };
  return alnum(name.front()) && alnum(name.back());
}

// `text` for a YAML comment: printable ASCII only.
std::string CommentSafe(const std::string& text) {
  std::string out = text;
  for (char& c : out) {
    if (!absl::ascii_isprint(c)) c = '?';
  }
  return out;
}

// One replica type's pod template, under its replica type's key.
std::string PodTemplate(const PyTorchJobShape& shape, const PyTorchJobSubject& subject) {
  return absl::StrFormat(R"(      template:
        metadata:
          labels:
            app.kubernetes.io/name: kaizen-worker
            kaizen.dev/job: %s
            kaizen.dev/export: %s
        spec:
          automountServiceAccountToken: false
          securityContext:
            runAsNonRoot: true
            runAsUser: 10001
            runAsGroup: 10001
            fsGroup: 10001
            fsGroupChangePolicy: OnRootMismatch
            seccompProfile:
              type: RuntimeDefault
          containers:
            # The operator looks for the container named "pytorch".
            - name: pytorch
              image: "%s"
              command: ["kaizen-worker", "--spec=/job/spec.json"]
              env:
                - name: OMP_WAIT_POLICY
                  value: PASSIVE
                - name: HOME
                  value: /tmp
                - name: GLOO_SOCKET_IFNAME
                  value: eth0
              resources:
                requests:
                  cpu: "%d"
                  memory: "%dMi"
                limits:
                  memory: "%dMi"
              securityContext:
                allowPrivilegeEscalation: false
                readOnlyRootFilesystem: true
                capabilities:
                  drop: ["ALL"]
              volumeMounts:
                - name: job
                  mountPath: /job
                  subPath: exports/%s
                  readOnly: true
                - name: job
                  mountPath: /job/out
                  subPath: exports/%s/out
                - name: tmp
                  mountPath: /tmp
          volumes:
            - name: job
              persistentVolumeClaim:
                claimName: "%s"
            - name: tmp
              emptyDir: {}
)",
                         subject.job_id, subject.folder, shape.image, shape.threads,
                         shape.memory_mb, shape.memory_mb, subject.folder, subject.folder,
                         shape.volume_claim);
}

// Both objects' metadata.
std::string ObjectMetadata(const PyTorchJobSubject& subject) {
  return absl::StrFormat(R"(metadata:
  name: kaizen-%s
  labels:
    app.kubernetes.io/name: kaizen-worker
    kaizen.dev/job: %s
)",
                         subject.folder, subject.job_id);
}

// One replica type of the PyTorchJob: its count and pod template.
std::string ReplicaSpec(absl::string_view type, int replicas, const PyTorchJobShape& shape,
                        const PyTorchJobSubject& subject) {
  return absl::StrCat(absl::StrFormat(R"(    %s:
      replicas: %d
      restartPolicy: OnFailure
)",
                                      type, replicas),
                      PodTemplate(shape, subject));
}

}  // namespace

absl::StatusOr<PyTorchJobShape> ResolvePyTorchJobShape(const kaizen::v1::ExportJobRequest& request,
                                                       int job_world_size) {
  PyTorchJobShape shape;
  if (request.world_size() < 0 || request.world_size() > kMaxExportWorldSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("world_size is %d; an export runs 1 to %d processes", request.world_size(),
                        kMaxExportWorldSize));
  }
  shape.world_size = request.world_size() > 0 ? request.world_size()
                                              : std::clamp(job_world_size, 1, kMaxExportWorldSize);
  if (request.threads() < 0 || request.threads() > kMaxExportThreads) {
    return absl::InvalidArgumentError(absl::StrFormat("threads is %d; each process runs 1 to %d",
                                                      request.threads(), kMaxExportThreads));
  }
  if (request.threads() > 0) shape.threads = request.threads();
  if (request.memory_mb() != 0 &&
      (request.memory_mb() < kMinExportMemoryMb || request.memory_mb() > kMaxExportMemoryMb)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("memory_mb is %d; each pod is given %d to %d MiB (0: computed)",
                        request.memory_mb(), kMinExportMemoryMb, kMaxExportMemoryMb));
  }
  shape.memory_mb = request.memory_mb();
  if (!request.image().empty()) {
    if (!IsImageReference(request.image())) {
      return absl::InvalidArgumentError(
          "image: not an image reference (at most 255 letters, digits and ._-/:@, starting with "
          "a letter or digit)");
    }
    shape.image = request.image();
  }
  if (!request.volume_claim().empty()) {
    if (!IsDnsSubdomain(request.volume_claim())) {
      return absl::InvalidArgumentError(
          "volume_claim: not a PersistentVolumeClaim name (a DNS-1123 subdomain: at most 253 "
          "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)");
    }
    shape.volume_claim = request.volume_claim();
  }
  return shape;
}

int64_t ExportMemoryMb(int64_t image_budget_bytes, int64_t prefix_cache_bytes,
                       int64_t parameter_bytes, int64_t frozen_bytes) {
  constexpr int64_t kMiB = int64_t{1} << 20;
  const auto mib = [&](int64_t bytes) {
    bytes = std::max<int64_t>(0, bytes);
    return bytes / kMiB + (bytes % kMiB != 0 ? 1 : 0);
  };
  // Each term is capped before the sum, which therefore cannot overflow.
  const auto capped = [&](int64_t bytes) { return std::min(mib(bytes), kMaxExportMemoryMb); };
  return std::min(capped(image_budget_bytes) + capped(prefix_cache_bytes) +
                      4 * capped(parameter_bytes) + 2 * capped(frozen_bytes) + kExportRuntimeMb,
                  kMaxExportMemoryMb);
}

std::string PyTorchJobManifest(const PyTorchJobShape& shape, const PyTorchJobSubject& subject) {
  std::string out = absl::StrFormat(
      R"(# Kaizen job %s exported as a Kubeflow PyTorchJob (kubeflow.org/v1, the
# training operator): %s from %s in %d process(es).
# Every pod runs kaizen-worker on /job/spec.json, /job being the folder
#   exports/%s
# of the volume claim %s (ReadWriteMany for pods on several nodes),
# read-only: the job's starting model, its settings and links to its record
# files. Rank 0 writes /job/out/epoch-<N>.pt (a Kaizen model file for
# `kaizenctl models upload`), every rank /job/out/rank-<R>.json. A rank that
# fails fails its peers' collectives within the spec's timeout; the operator
# restarts the group up to backoffLimit times.
#
# First the NetworkPolicy, so that it holds before any pod starts: the
# export's pods reach each other (the rendezvous on the Master, Gloo's
# pairs) and port 53 (DNS), and nothing else, not the Kaizen API in their
# namespace.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
%sspec:
  podSelector:
    matchLabels:
      kaizen.dev/export: %s
  policyTypes: ["Ingress", "Egress"]
  ingress:
    - from:
        - podSelector:
            matchLabels:
              kaizen.dev/export: %s
  egress:
    - to:
        - podSelector:
            matchLabels:
              kaizen.dev/export: %s
    - ports:
        - protocol: UDP
          port: 53
        - protocol: TCP
          port: 53
---
apiVersion: kubeflow.org/v1
kind: PyTorchJob
%sspec:
  runPolicy:
    backoffLimit: %d
  pytorchReplicaSpecs:
)",
      subject.job_id, CommentSafe(subject.strategy), CommentSafe(subject.starts_from),
      shape.world_size, subject.folder, shape.volume_claim, ObjectMetadata(subject), subject.folder,
      subject.folder, subject.folder, ObjectMetadata(subject), subject.max_restarts);
  absl::StrAppend(&out, ReplicaSpec("Master", 1, shape, subject));
  if (shape.world_size > 1) {
    absl::StrAppend(&out, ReplicaSpec("Worker", shape.world_size - 1, shape, subject));
  }
  return out;
}

}  // namespace kaizen::jobs
