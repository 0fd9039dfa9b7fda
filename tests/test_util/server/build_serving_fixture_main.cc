// kaizen_serving_fixture: trains the serving tests' models once per CTest run
// (see serving_fixture.h). `--rebuild` trains even when the directory exists.
#include <cstdio>
#include <cstring>

#include "tests/test_util/server/serving_fixture.h"

int main(int argc, char** argv) {
  const bool rebuild = argc > 1 && std::strcmp(argv[1], "--rebuild") == 0;
  absl::Status st = rebuild ? kaizen::test_util::RebuildServingFixture()
                            : kaizen::test_util::ServingFixtureDir().status();
  if (!st.ok()) {
    std::fprintf(stderr, "kaizen_serving_fixture: %s\n", st.ToString().c_str());
    return 1;
  }
  std::printf("kaizen_serving_fixture: %s is ready\n",
              kaizen::test_util::ServingFixtureDir().value_or("?").c_str());
  return 0;
}
