// The precompiled header of kaizen_imaging, reused by the targets that need
// LibTorch's full C++ frontend but not the trainer (kaizen_serving).
#pragma once
#include <torch/script.h>
#include <torch/torch.h>
