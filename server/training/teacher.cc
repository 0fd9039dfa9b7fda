#include "server/training/teacher.h"

#include <torch/torch.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/models/torch_errors.h"

namespace kaizen::training {

Teacher::Teacher(torch::jit::Module module, std::vector<int64_t> teacher_shape,
                 std::vector<int64_t> student_shape, imaging::Normalizer normalizer)
    : module_(std::move(module)),
      teacher_shape_(std::move(teacher_shape)),
      student_shape_(std::move(student_shape)),
      normalizer_(std::move(normalizer)) {}

absl::StatusOr<std::unique_ptr<Teacher>> Teacher::Create(
    const torch::jit::Module& module, const kaizen::v1::Model& metadata,
    const std::vector<int64_t>& student_input_shape, int64_t num_classes,
    const torch::Device& device) {
  if (metadata.input_shape_size() != 3 || student_input_shape.size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("teacher ", metadata.name(), ": its metadata has no [C, H, W] input_shape"));
  }
  std::vector<int64_t> shape(metadata.input_shape().begin(), metadata.input_shape().end());
  const int64_t tc = shape[0], sc = student_input_shape[0];
  if ((tc != 1 && tc != 3) || (sc != 1 && sc != 3)) {
    return absl::InvalidArgumentError(
        absl::StrCat("teacher ", metadata.name(), " takes ", tc, " channels and the student ", sc,
                     "; distillation converts between 1 and 3 channels only"));
  }
  try {
    // A copy of its own: the trainer's teacher never shares state with a
    // module that serves or trains elsewhere.
    torch::jit::Module copy = module.clone();
    copy.eval();
    copy.to(device);
    std::unique_ptr<Teacher> teacher(
        new Teacher(std::move(copy), shape, student_input_shape,
                    imaging::Normalizer(metadata.normalization(), tc, device)));
    // One image through the whole path: the output must be a row of logits
    // per image, one per class.
    const torch::Tensor probe =
        torch::zeros({1, student_input_shape[0], student_input_shape[1], student_input_shape[2]},
                     torch::TensorOptions().device(device));
    const torch::Tensor out = teacher->Logits(probe);
    teacher->forward_batches_ = 0;
    if (out.dim() != 2 || out.size(0) != 1 || out.size(1) != num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "teacher ", metadata.name(), ": its output for one image has shape [",
          absl::StrJoin(out.sizes(), ", "), "]; distillation needs [1, ", num_classes, "]"));
    }
    return teacher;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("teacher ", metadata.name(), " cannot run: ", models::TorchErrorSummary(e)));
  }
}

torch::Tensor Teacher::TeacherInput(const torch::Tensor& unit_images) const {
  torch::Tensor x = unit_images;
  if (student_shape_[0] == 1 && teacher_shape_[0] == 3) {
    x = x.expand({-1, 3, -1, -1});
  } else if (student_shape_[0] == 3 && teacher_shape_[0] == 1) {
    // Luminance (ITU-R 601), as image conversion makes grey images.
    const torch::Tensor w = torch::tensor({0.299f, 0.587f, 0.114f}, x.options()).view({1, 3, 1, 1});
    x = (x * w).sum(/*dim=*/1, /*keepdim=*/true);
  }
  if (x.size(2) != teacher_shape_[1] || x.size(3) != teacher_shape_[2]) {
    namespace F = torch::nn::functional;
    x = F::interpolate(x, F::InterpolateFuncOptions()
                              .size(std::vector<int64_t>{teacher_shape_[1], teacher_shape_[2]})
                              .mode(torch::kBilinear)
                              .align_corners(false));
  }
  return normalizer_.Normalize(x);
}

torch::Tensor Teacher::Logits(const torch::Tensor& unit_images) {
  torch::NoGradGuard no_grad;
  ++forward_batches_;
  return module_.forward({TeacherInput(unit_images)}).toTensor().to(torch::kFloat);
}

TeacherLogitCache::TeacherLogitCache(Teacher* teacher, torch::Tensor images, int64_t batch_size)
    : teacher_(teacher),
      images_(std::move(images)),
      batch_size_(std::max<int64_t>(1, batch_size)) {}

torch::Tensor TeacherLogitCache::Rows(const torch::Tensor& indices) {
  if (!logits_.defined()) {
    std::vector<torch::Tensor> chunks;
    const int64_t n = images_.size(0);
    for (int64_t begin = 0; begin < n; begin += batch_size_) {
      const int64_t count = std::min(batch_size_, n - begin);
      chunks.push_back(
          teacher_->Logits(imaging::Normalizer::ToUnit(images_.narrow(0, begin, count))));
    }
    logits_ = torch::cat(chunks);
  }
  return logits_.index_select(0, indices);
}

}  // namespace kaizen::training
