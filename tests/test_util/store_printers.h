// GoogleTest printers for the stores' plain structs, so that a failed
// comparison shows their fields.
#pragma once

#include <ostream>

#include "server/store/metadata_store.h"

namespace kaizen::store {

inline void PrintTo(const MetadataStore::LoadingMarker& m, std::ostream* os) {
  *os << "{" << m.name << ", " << m.version << ", \"" << m.owner << "\"}";
}

}  // namespace kaizen::store
