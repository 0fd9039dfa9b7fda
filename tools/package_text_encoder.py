"""Packages a TorchScript text encoder for `kaizenctl models upload`.

Kaizen reads a text model's input from the file itself: `kaizen.json` (the
Model message in proto3 JSON, with `textInput`: the tokenizer kind, its
SHA-256, vocabulary size, framing ids, maximum length and pooling) and
`kaizen_tokenizer` (BERT's vocab.txt or a SentencePiece .model), both extra
files of the TorchScript archive. This script writes them next to the
module's code and weights:

  package_text_encoder.py OUT.pt --traced=bert.pt --tokenizer=vocab.txt \\
      --kind=wordpiece --max_length=128 [--pooling=first_token|masked_mean] \\
      [--uncased|--cased] [--architecture=bert-base-uncased] [--description=...]

The encoder's forward(input_ids, attention_mask) (both int64 [N, T]) may
return hidden states [N, T, H], a tuple whose first element they are (a
Hugging Face BertModel traced with return_dict=False), or one vector per
text [N, H]. The server checks that in its sandbox and puts a classification
head on it; a FEATURE_EXTRACTION, FINE_TUNE or FULL job fits it to a
dataset's classes.

WordPiece framing ids ([CLS], [SEP], [PAD], [MASK]) are looked up in the
vocabulary; SentencePiece models take --first_id, --last_id, --pad_id and
--mask_id (-1 for none) and --vocab_size.

  package_text_encoder.py OUT.pt --tiny_bert --vocab_from=texts.csv

writes a small BERT-like encoder (2 layers, hidden 32, random weights, traced
here with torch.jit.trace, returning (last_hidden_state, pooler_output) as
Hugging Face's BertModel does) with a WordPiece vocabulary of the words of a
CSV's `text` column: the fixture of the upload tests, and a way to try the
upload path without downloading a model.
"""
import argparse
import csv
import hashlib
import io
import json
import re
import sys

import torch


def tiny_bert(vocab_size, max_length, hidden=32, layers=2, heads=2, seed=5):
    """A BERT-shaped encoder: embeddings, a ModuleList of post-LN layers, a pooler."""
    torch.manual_seed(seed)

    class Embeddings(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embeddings = torch.nn.Embedding(vocab_size, hidden)
            self.position_embeddings = torch.nn.Embedding(max_length, hidden)
            self.LayerNorm = torch.nn.LayerNorm(hidden)

        def forward(self, ids):
            positions = torch.arange(ids.size(1), device=ids.device).unsqueeze(0)
            return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(positions))

    class Layer(torch.nn.Module):
        """BERT's: self-attention as query, key and value projections, then a GELU block."""

        def __init__(self):
            super().__init__()
            self.query = torch.nn.Linear(hidden, hidden)
            self.key = torch.nn.Linear(hidden, hidden)
            self.value = torch.nn.Linear(hidden, hidden)
            self.output = torch.nn.Linear(hidden, hidden)
            self.norm1 = torch.nn.LayerNorm(hidden)
            self.ffn = torch.nn.Sequential(torch.nn.Linear(hidden, 4 * hidden), torch.nn.GELU(),
                                           torch.nn.Linear(4 * hidden, hidden))
            self.norm2 = torch.nn.LayerNorm(hidden)

        def forward(self, x, bias):
            n, t, _ = x.shape
            split = lambda y: y.view(n, t, heads, hidden // heads).transpose(1, 2)
            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            scores = q @ k.transpose(-1, -2) / (hidden // heads) ** 0.5 + bias
            a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, hidden)
            x = self.norm1(x + self.output(a))
            return self.norm2(x + self.ffn(x))

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.ModuleList([Layer() for _ in range(layers)])

        def forward(self, x, bias):
            for layer in self.layer:
                x = layer(x, bias)
            return x

    class Pooler(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = torch.nn.Linear(hidden, hidden)

        def forward(self, h):
            return torch.tanh(self.dense(h[:, 0]))

    class TinyBert(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = Embeddings()
            self.encoder = Encoder()
            self.pooler = Pooler()

        def forward(self, input_ids, attention_mask):
            bias = (1.0 - attention_mask.float())[:, None, None, :] * -10000.0
            h = self.encoder(self.embeddings(input_ids), bias)
            return h, self.pooler(h)

    model = TinyBert().eval()
    ids = torch.randint(5, vocab_size, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        return torch.jit.trace(model, (ids, mask), check_trace=False)


def vocab_from(csv_path):
    """[PAD], [UNK], [CLS], [SEP], [MASK], then every lower-cased word and mark of the texts."""
    words = set()
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            words.update(re.findall(r"\w+|[^\w\s]", row["text"].lower()))
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--traced", help="a TorchScript encoder (torch.jit.trace or script)")
    p.add_argument("--tokenizer", help="vocab.txt (wordpiece) or a SentencePiece .model")
    p.add_argument("--kind", choices=["wordpiece", "sentencepiece"], default="wordpiece")
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--pooling", choices=["first_token", "masked_mean"], default="first_token")
    p.add_argument("--cased", action="store_true", help="WordPiece: keep case and accents")
    p.add_argument("--vocab_size", type=int, help="SentencePiece: the number of pieces")
    for name in ("first_id", "last_id", "pad_id", "mask_id"):
        p.add_argument(f"--{name}", type=int, help="SentencePiece framing ids")
    p.add_argument("--architecture", default="")
    p.add_argument("--description", default="")
    p.add_argument("--tiny_bert", action="store_true", help="write the test fixture instead")
    p.add_argument("--vocab_from", help="--tiny_bert: the CSV whose words make the vocabulary")
    a = p.parse_args()

    if a.tiny_bert:
        if not a.vocab_from:
            sys.exit("--tiny_bert needs --vocab_from=CSV")
        tokens = vocab_from(a.vocab_from)
        tokenizer = ("\n".join(tokens) + "\n").encode("utf-8")
        module = tiny_bert(len(tokens), a.max_length)
        a.kind = "wordpiece"
        a.architecture = a.architecture or "tiny-bert"
    else:
        if not a.traced or not a.tokenizer:
            sys.exit("give --traced and --tokenizer (or --tiny_bert)")
        module = torch.jit.load(a.traced, map_location="cpu")
        tokenizer = open(a.tokenizer, "rb").read()
        # One token a line, as the server reads vocab.txt: split on "\n" only
        # (str.splitlines would split on other characters too), trailing
        # white space trimmed, a final newline ending the last line.
        tokens = ([t.rstrip() for t in tokenizer.decode("utf-8").removesuffix("\n").split("\n")]
                  if a.kind == "wordpiece" else None)

    text_input = {
        "tokenizerSha256": hashlib.sha256(tokenizer).hexdigest(),
        "maxLength": a.max_length,
        "pooling": "TEXT_POOLING_" + a.pooling.upper(),
    }
    if a.kind == "wordpiece":
        index = {t: i for i, t in enumerate(tokens)}
        missing = [t for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]") if t not in index]
        if missing:
            sys.exit(f"the vocabulary lacks {', '.join(missing)}")
        text_input.update(tokenizer="TOKENIZER_KIND_WORDPIECE", vocabSize=len(tokens),
                          firstId=index["[CLS]"], lastId=index["[SEP]"], padId=index["[PAD]"],
                          maskId=index.get("[MASK]", -1),
                          wordpiece={"lowerCase": not a.cased, "stripAccents": not a.cased})
    else:
        if a.vocab_size is None or a.pad_id is None:
            sys.exit("a SentencePiece model needs --vocab_size and --pad_id")
        text_input.update(tokenizer="TOKENIZER_KIND_SENTENCEPIECE", vocabSize=a.vocab_size,
                          firstId=-1 if a.first_id is None else a.first_id,
                          lastId=-1 if a.last_id is None else a.last_id, padId=a.pad_id,
                          maskId=-1 if a.mask_id is None else a.mask_id)
    metadata = {"architecture": a.architecture, "description": a.description,
                "textInput": text_input}
    buffer = io.BytesIO()
    torch.jit.save(module, buffer, _extra_files={"kaizen.json": json.dumps(metadata),
                                                 "kaizen_tokenizer": tokenizer})
    with open(a.out, "wb") as f:
        f.write(buffer.getvalue())
    print(f"{a.out}: {a.kind} tokenizer, {text_input['vocabSize']} ids, max_length {a.max_length}")


if __name__ == "__main__":
    main()
