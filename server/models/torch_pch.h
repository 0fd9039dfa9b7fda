// Precompiled header shared by every target that uses LibTorch. Only the
// TorchScript API is pulled in: torch/script.h is a fraction of torch/torch.h.
#pragma once
#include <torch/script.h>
