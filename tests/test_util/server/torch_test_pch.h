// The precompiled header of the test binaries that use LibTorch: LibTorch's
// headers (as server/imaging/imaging_pch.h) and the test headers of
// tests/test_util/test_pch.h. Sharing one saves an end-to-end test file about
// 4 s of its 10 s compile (tests/CMakeLists.txt).
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#include "tests/test_util/test_pch.h"
