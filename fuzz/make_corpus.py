#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (checked in).

Small versions of what the tests build: JPEG/PNG images in the variants the
decoder handles, image-folder archives (tar, tar.gz, tar.xz, zip), IDX pairs
(plain and gzip), a .kds file, a .krf record file, OIP tensors and a small SentencePiece
model with texts. Run with Debian's interpreter (it needs PIL and python3-sentencepiece):
/usr/bin/python3 fuzz/make_corpus.py
"""
import gzip
import io
import os
import struct
import tarfile
import zipfile
import zlib

from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    with open(os.path.join(ROOT, target, name), "wb") as f:
        f.write(data)


def image(mode, size, seed):
    w, h = size
    bands = len(mode) if mode in ("L", "RGB", "RGBA", "LA") else 1
    data = bytes(((x * 7 + y * 13 + seed * 31 + b * 5) % 256)
                 for y in range(h) for x in range(w) for b in range(bands))
    return Image.frombytes(mode, size, data)


def encode(img, fmt, **kw):
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def orientation_exif(value):
    exif = Image.Exif()
    exif[0x0112] = value  # Orientation
    return exif.tobytes()


def images():
    seeds = {
        "grey.jpg": encode(image("L", (8, 8), 1), "JPEG", quality=80),
        "rgb.jpg": encode(image("RGB", (16, 8), 2), "JPEG", quality=80),
        "progressive.jpg": encode(image("RGB", (16, 16), 3), "JPEG", progressive=True),
        "cmyk.jpg": encode(image("RGB", (8, 8), 4).convert("CMYK"), "JPEG"),
        # A phone photo: EXIF APP1 with Orientation 6 (turn 90 degrees clockwise).
        "exif_orientation.jpg": encode(image("RGB", (16, 8), 10), "JPEG", exif=orientation_exif(6)),
        "grey.png": encode(image("L", (8, 8), 5), "PNG"),
        "rgba.png": encode(image("RGBA", (8, 4), 6), "PNG"),
        "palette.png": encode(image("RGB", (8, 8), 7).convert("P"), "PNG"),
        "interlaced.png": encode(image("RGB", (9, 7), 8), "PNG", interlace=1),
        "grey16.png": encode(image("L", (4, 4), 9).convert("I;16"), "PNG"),
    }
    for name, data in seeds.items():
        write("image_decoder", name, data)
    return seeds


def archives(seeds):
    entries = [("cats/1.jpg", seeds["grey.jpg"]), ("cats/2.png", seeds["grey.png"]),
               ("dogs/1.jpg", seeds["rgb.jpg"]), ("dogs/2.png", seeds["palette.png"]),
               ("dogs/.hidden.png", seeds["grey.png"]), ("README.txt", b"stray file")]

    def tar(mode):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode=mode) as t:
            for path, data in entries:
                info = tarfile.TarInfo("top/" + path)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return out.getvalue()

    write("archive_ingest", "images.tar", tar("w"))
    write("archive_ingest", "images.tar.gz", tar("w:gz"))
    write("archive_ingest", "images.tar.xz", tar("w:xz"))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in entries:
            z.writestr(path, data)
    write("archive_ingest", "images.zip", out.getvalue())


def idx():
    def images_file(n, rows, cols):
        return struct.pack(">IIII", 0x803, n, rows, cols) + bytes(
            (i * 17 + j) % 256 for i in range(n) for j in range(rows * cols))

    def labels_file(labels):
        return struct.pack(">II", 0x801, len(labels)) + bytes(labels)

    def pair(images, labels):
        return struct.pack("<H", len(images)) + images + labels

    imgs, labs = images_file(6, 4, 3), labels_file([0, 1, 2, 0, 1, 2])
    write("idx_ingest", "plain", pair(imgs, labs))
    write("idx_ingest", "gzip", pair(gzip.compress(imgs, mtime=0), gzip.compress(labs, mtime=0)))
    write("idx_ingest", "header_only", pair(struct.pack(">IIII", 0x803, 2, 65535, 65535),
                                            labels_file([0, 1])))


def gzip_members():
    # The first byte picks the read size; then one member, two members (with
    # a stored block and a named header), and a plain file.
    data = bytes((i // 784 + (i % 7) * 3) % 256 for i in range(20000))
    write("gzip_reader", "one_member", b"\x05" + gzip.compress(data, mtime=0))
    named = io.BytesIO()
    with gzip.GzipFile(filename="images", mode="wb", fileobj=named, mtime=0, compresslevel=0) as g:
        g.write(data[:3000])
    write("gzip_reader", "two_members",
          b"\x00" + gzip.compress(data[:9000], compresslevel=9, mtime=0) + named.getvalue())
    write("gzip_reader", "plain", b"\x10" + data[:2000])


def kds():
    names = [b"cats", b"dogs"]
    records = [(0, 2, 2, 1, 0), (1, 1, 2, 3, 4)]
    pixels = bytes(range(10))
    body = b"KZDS" + struct.pack("<IIQQ", 1, len(names), len(records), len(pixels))
    for n in names:
        body += struct.pack("<I", len(n)) + n
    for r in records:
        body += struct.pack("<iiiiq", *r)
    body += pixels
    write("kds_reader", "small.kds", body + struct.pack("<I", zlib.crc32(body)))


def krf():
    """A record file (server/datasets/record_file.h): a raw 2x2 grey record and a
    4-byte "encoded" one, two classes."""
    page = 4096
    records = [(1, 2, 2, 1, 0, bytes([1, 2, 3, 4])), (0, 1, 1, 3, 2, b"\x89PNG")]
    body = b"KZRF" + struct.pack("<I", 1) + bytes(page - 8)
    entries = b""
    for label, h, w, c, encoding, data in records:
        entries += struct.pack("<QQiiiiII", len(body), len(data), label, h, w, c, encoding,
                               zlib.crc32(data))
        body += data
    body += bytes(-len(body) % page)
    index = b"".join(struct.pack("<I", len(n)) + n for n in [b"cats", b"dogs"]) + entries
    trailer = b"KZRF" + struct.pack("<IQQQIII", 1, len(body), len(index), len(records), 2,
                                    zlib.crc32(index), 0)
    write("record_file_reader", "small.krf", body + index + trailer +
          struct.pack("<I", zlib.crc32(trailer)))


def oip():
    elements = [b"\xff\xd8\xffjpeg", b"\x89PNG\r\n\x1a\n", b""]
    raw = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    write("oip_tensor", "bytes", b"\x00" + raw)
    chw = bytes([1, 2, 2])
    values = struct.pack("<4f", 0.0, 0.5, -1.0, 2.0)
    write("oip_tensor", "fp32_chw_raw", b"\x03" + bytes([3]) +
          struct.pack("<3q", 1, 2, 2) + chw + values)
    write("oip_tensor", "fp32_nchw_contents", b"\x01" + bytes([4]) +
          struct.pack("<4q", 1, 1, 2, 2) + chw + values)


def sentencepiece_models():
    """Small unigram models (python3-sentencepiece's trainer) with texts:
    4-byte little-endian model length, the model, the text. One model keeps
    the default NFKC normaliser (its precompiled character map is most of
    its 238 KB); the others normalise nothing and stay small."""
    import sentencepiece as spm
    lines = ["the quick brown fox jumps over the lazy dog",
             "a small model for the fuzzer, trained on a few lines of text",
             "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \u0420\u0443\u0441 12345"] * 20

    def model(rule):
        out = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out,
                                       vocab_size=48, model_type="unigram",
                                       character_coverage=1.0, normalization_rule_name=rule,
                                       minloglevel=2)
        return out.getvalue()

    nfkc, identity = model("nmt_nfkc"), model("identity")
    for name, m, text in [("nfkc_unicode", nfkc, "na\u00efve \u65e5\u672c \uff21".encode()),
                          ("ascii", identity, b"the lazy fox"),
                          ("empty", identity, b""),
                          ("invalid_utf8", identity, b"ab\xffcd")]:
        write("sentencepiece_tokenizer", name, struct.pack("<I", len(m)) + m + text)
    # text_model_input: the model, one byte of options (bit 0 keeps the end;
    # the rest is max_length - 3), then texts one per line; some over the
    # fuzzer's 64-byte cut with a multi-byte character where it falls.
    long = "\u00e9" * 40
    for name, options, texts in [("batch", 0b1010, ["the lazy fox", "", "caf\u00e9 " * 3]),
                                 ("cut_start", 0b0110, [long, "x" + long]),
                                 ("cut_end", 0b0111, [long + "x", "\u65e5\u672c" * 30])]:
        write("text_model_input", name, struct.pack("<I", len(identity)) + identity +
              bytes([options]) + "\n".join(texts).encode())
    write("text_model_input", "invalid_utf8", struct.pack("<I", len(identity)) + identity +
          bytes([20]) + b"ok\nab\xffcd\n\xc3")


def text_tables():
    # The first byte: the format (mod 3: CSV, TSV, JSON Lines) and the split.
    csv = (b'text,label\r\n"one, ""two""",a\r\n"multi\nline",b\r\n'
           b'bad \xff,a\nthree,fields,here\n"open')
    tsv = b'\xef\xbb\xbflabel\ttext\nx\tt\tab\n\ny\t"q\tq"\n'
    jsonl = (b'{"text": "caf\\u00e9", "label": 3}\n{"text": 1, "label": "a"}\n  \n'
             b'{"text": "n\\u0000", "label": "b"}\n[[[[[[[[[[]]]]]]]]]]\n{"label": 2.5}')
    write("text_table", "csv", bytes([3 * 40]) + csv)
    write("text_table", "tsv", bytes([1 + 3 * 10]) + tsv)
    write("text_table", "jsonl", bytes([2 + 3 * 70]) + jsonl)


def wordpiece():
    # 2-byte vocabulary length, the vocabulary, one byte of options, the text.
    vocab = "[UNK]\n[CLS]\nthe\ncat\n##s\nun\n##aff\n##able\n!\ncafe\n\u65e5\n".encode()
    for name, flags, text in [("bert", 0b11111, "The cats unaffable! Caf\u00e9 \u65e5\u672c"),
                              ("cased_raw", 0b00000, "MiXeD \x01 ctrl\u200b \u0130stanbul"),
                              ("short_words", 0b00111111, "unaffable supercalifragilistic")]:
        write("wordpiece_tokenizer", name,
              struct.pack("<H", len(vocab)) + vocab + bytes([flags]) + text.encode())


if __name__ == "__main__":
    wordpiece()
    text_tables()
    sentencepiece_models()
    archives(images())
    idx()
    gzip_members()
    kds()
    krf()
    oip()
