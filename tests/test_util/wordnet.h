// WordNet (Debian's wordnet-base) as labelled text: every synset's gloss
// (definitions and quoted examples) with its lexicographer file, the
// category a lexicographer filed it under ("noun.animal", "verb.motion").
#pragma once

#include <string>
#include <vector>

namespace kaizen::test_util {

struct WordNetGloss {
  std::string gloss;
  std::string category;  // the lexicographer file's name
};

// The glosses of the four data files (noun, verb, adj, adv), in file order;
// empty when wordnet-base is not installed.
std::vector<WordNetGloss> WordNetGlosses();

}  // namespace kaizen::test_util
