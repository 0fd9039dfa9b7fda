#include "tests/test_util/wordnet.h"

#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace kaizen::test_util {
namespace {

// The lexicographer files by number, as lexnames(5) lists them (Debian's
// package leaves the lexnames file out).
constexpr const char* kLexNames[] = {"adj.all",          "adj.pert",           "adv.all",
                                     "noun.Tops",        "noun.act",           "noun.animal",
                                     "noun.artifact",    "noun.attribute",     "noun.body",
                                     "noun.cognition",   "noun.communication", "noun.event",
                                     "noun.feeling",     "noun.food",          "noun.group",
                                     "noun.location",    "noun.motive",        "noun.object",
                                     "noun.person",      "noun.phenomenon",    "noun.plant",
                                     "noun.possession",  "noun.process",       "noun.quantity",
                                     "noun.relation",    "noun.shape",         "noun.state",
                                     "noun.substance",   "noun.time",          "verb.body",
                                     "verb.change",      "verb.cognition",     "verb.communication",
                                     "verb.competition", "verb.consumption",   "verb.contact",
                                     "verb.creation",    "verb.emotion",       "verb.motion",
                                     "verb.perception",  "verb.possession",    "verb.social",
                                     "verb.stative",     "verb.weather",       "adj.ppl"};

}  // namespace

std::vector<WordNetGloss> WordNetGlosses() {
  std::vector<WordNetGloss> out;
  for (const char* part : {"noun", "verb", "adj", "adv"}) {
    std::ifstream in(absl::StrCat("/usr/share/wordnet/data.", part));
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("  ", 0) == 0) continue;  // the licence header
      const size_t bar = line.find(" | ");
      if (bar == std::string::npos) continue;
      // "<offset> <lex_filenum> <ss_type> ..."
      const std::vector<absl::string_view> head =
          absl::StrSplit(absl::string_view(line).substr(0, 32), ' ');
      int lex = -1;
      if (head.size() < 2 || !absl::SimpleAtoi(head[1], &lex) || lex < 0 ||
          lex >= static_cast<int>(std::size(kLexNames))) {
        continue;
      }
      std::string gloss = line.substr(bar + 3);
      while (!gloss.empty() && (gloss.back() == ' ' || gloss.back() == '\r')) gloss.pop_back();
      out.push_back({std::move(gloss), kLexNames[lex]});
    }
  }
  return out;
}

}  // namespace kaizen::test_util
