// Early-return helpers that keep the happy path readable.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define KAIZEN_CONCAT_INNER_(a, b) a##b
#define KAIZEN_CONCAT_(a, b) KAIZEN_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                 \
  do {                                        \
    const ::absl::Status _kaizen_st = (expr); \
    if (!_kaizen_st.ok()) return _kaizen_st;  \
  } while (0)

// ASSIGN_OR_RETURN(auto x, FunctionReturningStatusOr());
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(KAIZEN_CONCAT_(_kaizen_sor_, __LINE__), lhs, expr)

#define ASSIGN_OR_RETURN_IMPL_(sor, lhs, expr) \
  auto sor = (expr);                           \
  if (!sor.ok()) return sor.status();          \
  lhs = std::move(sor).value()
