"""Writes the walk-through's text sets from WordNet (Debian's wordnet-base) as CSV
(text,label), each gloss labelled by its lexicographer file (noun.animal, ...):

  pretrain.csv  PRETRAIN_PER_CLASS glosses of each of group A's categories
                (every category with 400 glosses or more that is not in group B)
  pretrain-val.csv  20 other glosses of each of group A's categories (validation)
  few.csv       FEW_PER_CLASS glosses of each of group B's 8 categories
  test.csv      TEST_PER_CLASS other glosses of each of group B's categories

Group B is bench/text/text_kshot.cc's: noun.animal, noun.body, noun.food,
noun.location, noun.plant, noun.time, verb.motion, verb.communication. Glosses
are taken spread over each category's file order (they come in related runs).

Usage: make_wordnet_text_sets.py OUT_DIR PRETRAIN_PER_CLASS FEW_PER_CLASS TEST_PER_CLASS
"""
import csv
import sys

LEX_NAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
]
GROUP_B = ["noun.animal", "noun.body", "noun.food", "noun.location", "noun.plant", "noun.time",
           "verb.motion", "verb.communication"]
MIN_PRETRAIN_GLOSSES = 400


def glosses():
    """Category -> glosses in file order, as tests/test_util/wordnet.cc reads them."""
    out = {}
    for part in ("noun", "verb", "adj", "adv"):
        with open(f"/usr/share/wordnet/data.{part}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:
                    continue
                head = line[:32].split(" ")
                if len(head) < 2 or not head[1].isdigit() or int(head[1]) >= len(LEX_NAMES):
                    continue
                gloss = line[line.index(" | ") + 3:].rstrip(" \r\n")
                out.setdefault(LEX_NAMES[int(head[1])], []).append(gloss)
    return out


def spread(items, n):
    """n items spread evenly over the list (all of them when it is shorter)."""
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def write(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)


def pretrain_sets(by_category, pretrain_n):
    """Group A: (pretrain, pretrain_val) rows, pretrain_n and 20 glosses per category."""
    pretrain, pretrain_val = [], []
    for category, texts in sorted(by_category.items()):
        if category in GROUP_B or len(texts) < MIN_PRETRAIN_GLOSSES:
            continue
        chosen = spread(texts, pretrain_n + 20)
        val = set(chosen[1::max(1, len(chosen) // 20)][:20])
        pretrain += [(t, category) for t in chosen if t not in val][:pretrain_n]
        pretrain_val += [(t, category) for t in sorted(val)]
    return pretrain, pretrain_val


def load_glosses():
    by_category = glosses()
    if not by_category:
        sys.exit("wordnet-base is not installed (/usr/share/wordnet/data.noun)")
    return by_category


def main():
    out, pretrain_n, few_n, test_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    by_category = load_glosses()
    pretrain, pretrain_val = pretrain_sets(by_category, pretrain_n)
    few, test = [], []
    for category in GROUP_B:
        chosen = spread(by_category[category], few_n + test_n)
        few += [(t, category) for t in chosen[0::2][:few_n]]
        rest = [t for t in chosen if t not in set(chosen[0::2][:few_n])]
        test += [(t, category) for t in rest[:test_n]]
    write(f"{out}/pretrain.csv", pretrain)
    write(f"{out}/pretrain-val.csv", pretrain_val)
    write(f"{out}/few.csv", few)
    write(f"{out}/test.csv", test)
    print(f"pretrain.csv: {len(pretrain)} glosses of {len({c for _, c in pretrain})} categories; "
          f"few.csv: {len(few)}; test.csv: {len(test)} ({len(GROUP_B)} categories)")


if __name__ == "__main__":
    main()
