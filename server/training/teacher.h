// The teacher of a DISTILL job: a trained classifier run in inference mode
// (eval, no gradient) on the very batches the student trains on, augmented
// or not, and the cache of its logits over the training images for when
// those images never change (augmentation off). Owned by the trainer; holds
// its own copy of the teacher's module on the training device.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/imaging/normalizer.h"

namespace kaizen::training {

class Teacher {
 public:
  // `module`: the teacher classifier, with `metadata`'s input_shape [C, H, W]
  // and normalization; it is copied, put in eval mode and moved to `device`.
  // `student_input_shape`: the [C, H, W] of the batches Logits takes; the
  // teacher's input is made from them (1 <-> 3 channels as ConvertImage
  // does, bilinear resize, the teacher's normalisation). InvalidArgument when
  // the teacher has no input shape, takes other channel counts, or its output
  // is not [N, num_classes] (checked with one forward pass).
  static absl::StatusOr<std::unique_ptr<Teacher>> Create(
      const torch::jit::Module& module, const kaizen::v1::Model& metadata,
      const std::vector<int64_t>& student_input_shape, int64_t num_classes,
      const torch::Device& device);

  // Float32 logits [N, num_classes], without gradient, for float images in
  // [0, 1] [N, C, H, W] at the student's input shape on the device.
  torch::Tensor Logits(const torch::Tensor& unit_images);

  // Forward passes so far (tests, and what the cache saves).
  int64_t forward_batches() const { return forward_batches_; }

 private:
  Teacher(torch::jit::Module module, std::vector<int64_t> teacher_shape,
          std::vector<int64_t> student_shape, imaging::Normalizer normalizer);
  torch::Tensor TeacherInput(const torch::Tensor& unit_images) const;

  torch::jit::Module module_;
  std::vector<int64_t> teacher_shape_;
  std::vector<int64_t> student_shape_;
  imaging::Normalizer normalizer_;
  int64_t forward_batches_ = 0;
};

// The teacher's logits of every image of a fixed set, computed in batches on
// first use and kept (float32 [N, K] on the set's device): without
// augmentation a training image looks the same every epoch, so the teacher
// runs over the training set once per run instead of once per epoch.
class TeacherLogitCache {
 public:
  // `images`: uint8 [N, C, H, W] at the student's input shape (kept by
  // reference count, not copied). `teacher` must outlive the cache.
  TeacherLogitCache(Teacher* teacher, torch::Tensor images, int64_t batch_size = 256);
  // Logits the caller computed (float32 [N, K]), e.g. over streamed images.
  explicit TeacherLogitCache(torch::Tensor logits)
      : teacher_(nullptr), batch_size_(1), logits_(std::move(logits)) {}

  // The cached logits of rows `indices` (int64 [B] on the images' device).
  torch::Tensor Rows(const torch::Tensor& indices);
  bool built() const { return logits_.defined(); }

 private:
  Teacher* teacher_;
  torch::Tensor images_;
  int64_t batch_size_;
  torch::Tensor logits_;
};

}  // namespace kaizen::training
