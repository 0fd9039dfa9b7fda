// The precompiled header of the test binaries that do not use LibTorch:
// GoogleTest, gMock, gRPC and the generated services, which nearly every
// test file includes and whose parsing was most of a short test file's
// compile (CMake forces it into each file; tests/CMakeLists.txt).
#pragma once

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "inference/grpc_service.grpc.pb.h"
#include "kaizen/v1/dataset_service.grpc.pb.h"
#include "kaizen/v1/finetune_service.grpc.pb.h"
#include "kaizen/v1/inference_service.grpc.pb.h"
#include "kaizen/v1/model_service.grpc.pb.h"
