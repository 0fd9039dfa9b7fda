// A data directory in which a server has trained the models that the serving
// tests query, built once per CTest run and copied by each test.
//
// CTest runs `kaizen_serving_fixture --rebuild` first (the setup test of the
// fixture kaizen_serving_fixture, which every end-to-end test requires), so a
// run always serves models trained by the code under test. A test binary run
// on its own builds the directory when it is missing and reuses it otherwise.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kaizen::test_util {

// cnn-small fine-tuned (STRATEGY_FULL, 2 epochs, seed 3) on 20 images of each
// of five Fashion-MNIST classes, named ShoesClasses(); dataset "few".
inline constexpr char kShoesModel[] = "shoes";
const std::vector<std::string>& ShoesClasses();

// cnn-small trained from scratch for one epoch on two classes ("light",
// "dark") of 12 grey 28x28 PNG images each; dataset "oip-shapes".
inline constexpr char kShapesModel[] = "oip-net";

// Starts a server on `data_dir` and trains both models into it. Fails when a
// job does not succeed.
absl::Status TrainServingModels(const std::string& data_dir);

// Trains into a fresh folder and puts it in place of the fixture directory
// (build/test-fixtures/serving), under a lock.
absl::Status RebuildServingFixture();

// The fixture directory, built first if it is missing or incomplete.
absl::StatusOr<std::string> ServingFixtureDir();

// Copies the fixture directory into `data_dir` (which may exist, empty).
absl::Status CopyServingFixture(const std::string& data_dir);

}  // namespace kaizen::test_util
