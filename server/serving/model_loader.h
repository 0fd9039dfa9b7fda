// ModelLoader: turns a stored version's TorchScript file into a LoadedModel
// ready to serve. ModelServer loads every version through one, so that a test
// can give it a fake that fails, succeeds at once, or outlives a deletion.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/serving/loaded_model.h"

namespace kaizen::serving {

// Loads the file at `path` (the version `metadata` describes) and warms it up
// at `warmup_batch_sizes`. Errors as LoadedModel::Load.
using ModelLoader = std::function<absl::StatusOr<std::shared_ptr<const LoadedModel>>(
    const std::string& path, const kaizen::v1::Model& metadata,
    const std::vector<int64_t>& warmup_batch_sizes)>;

// LoadedModel::Load onto `device`, frozen and optimised when `optimize`.
ModelLoader TorchScriptLoader(torch::Device device, bool optimize);

}  // namespace kaizen::serving
