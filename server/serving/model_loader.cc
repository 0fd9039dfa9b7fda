#include "server/serving/model_loader.h"

namespace kaizen::serving {

ModelLoader TorchScriptLoader(torch::Device device, bool optimize) {
  return [device, optimize](const std::string& path, const kaizen::v1::Model& metadata,
                            const std::vector<int64_t>& warmup_batch_sizes) {
    return LoadedModel::Load(path, metadata, device, warmup_batch_sizes, optimize);
  };
}

}  // namespace kaizen::serving
