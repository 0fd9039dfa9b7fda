// Precompiled header of the training engine (and its tests). The optimisers
// and functional losses live in torch/torch.h, which only training code pulls
// in; everything else in the server makes do with torch/script.h.
#pragma once
#include <torch/script.h>
#include <torch/torch.h>
