// The shape rule both inference protocols share: [C, H, W] is one input,
// [N, C, H, W] is N, anything else is not the model's.
#include "server/common/input_shape.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace kaizen::common {
namespace {

const std::vector<int64_t> kChw = {3, 28, 28};

TEST(InputShape, CountsTheInputsOfTheModelsShape) {
  EXPECT_EQ(InputsInShape(std::vector<int64_t>{3, 28, 28}, kChw), 1);
  EXPECT_EQ(InputsInShape(std::vector<int64_t>{5, 3, 28, 28}, kChw), 5);
  // The batch size is the caller's to bound.
  EXPECT_EQ(InputsInShape(std::vector<int64_t>{0, 3, 28, 28}, kChw), 0);
  EXPECT_EQ(InputsInShape(std::vector<int64_t>{-2, 3, 28, 28}, kChw), -2);
}

TEST(InputShape, OtherShapesAreNotTheModels) {
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{
           {}, {28, 28}, {1, 28, 28}, {2, 1, 28, 28}, {1, 1, 3, 28, 28}, {3, 28, 28, 1}}) {
    EXPECT_EQ(InputsInShape(shape, kChw), std::nullopt) << ShapeText(shape);
  }
}

TEST(InputShape, PrintsShapesInBrackets) {
  EXPECT_EQ(ShapeText(std::vector<int64_t>{2, 1, 28, 28}), "[2, 1, 28, 28]");
  EXPECT_EQ(ShapeText(std::vector<int64_t>{}), "[]");
}

}  // namespace
}  // namespace kaizen::common
