# Writes small hand-built tokenizer.json files, one per group of components, for tests/TianGong.Tests/Tokenizers.
import json, os, sys
out = sys.argv[1]
strings = json.load(open(sys.argv[2]))
chars = sorted({c for s in strings for c in s} | set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "))

def save(name, d):
    json.dump(d, open(os.path.join(out, name + ".json"), "w"), ensure_ascii=False, indent=1)

def added(i, content, special=True, **flags):
    return {"id": i, "content": content, "single_word": flags.get("single_word", False), "lstrip": flags.get("lstrip", False),
            "rstrip": flags.get("rstrip", False), "normalized": flags.get("normalized", not special), "special": special}

def template(bos, bos_id, eos=None, eos_id=None):
    single = [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]
    st = {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}
    if eos:
        single.append({"SpecialToken": {"id": eos, "type_id": 0}})
        st[eos] = {"id": eos, "ids": [eos_id], "tokens": [eos]}
    return {"type": "TemplateProcessing", "single": single, "pair": single + [{"Sequence": {"id": "B", "type_id": 1}}] + single[-1:], "special_tokens": st}

# 1. Unigram with Metaspace (prepend first, split), NFKC + Replace + Strip, byte fallback, Metaspace/ByteFallback/Fuse decoders.
pieces = [["<unk>", 0.0], ["<s>", 0.0], ["</s>", 0.0]] + [[f"<0x{b:02X}>", -20.0] for b in range(256)]
words = ["▁the", "▁quick", "▁brown", "▁fox", "▁hello", "▁world", "▁中", "文", "▁", "he", "llo", "wor", "ld", "th", "e", "▁a", "a", "b", "c", "s", "t", "n", "i", "o", "r", "l", "d", "h", "w", "▁is", "ing", "▁run", "ning", "▁😀", "1", "2", "3", "▁1", "12", "123"]
for i, w in enumerate(words):
    pieces.append([w, -1.0 - (i % 7) * 0.5 - len(w) * 0.1])
save("unigram_metaspace", {"version": "1.0", "truncation": None, "padding": None,
    "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}, {"type": "Strip", "strip_left": False, "strip_right": True}]},
    "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True},
    "post_processor": template("<s>", 1, "</s>", 2),
    "decoder": {"type": "Sequence", "decoders": [{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True}, {"type": "ByteFallback"}, {"type": "Fuse"}]},
    "model": {"type": "Unigram", "unk_id": 0, "vocab": pieces, "byte_fallback": True}})

# 2. WordPiece over every char, so the tokens show where each pre-tokenizer split (a word starts without ##).
wp = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"] + [c for c in chars] + ["##" + c for c in chars] + ["the", "##he", "qu", "##ick"]
def wordpiece(pre, normalizer=None, name=None, post=None, decoder=None):
    return {"version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(i, t) for i, t in enumerate(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"])],
        "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": post or {"type": "BertProcessing", "sep": ["[SEP]", 2], "cls": ["[CLS]", 1]},
        "decoder": decoder or {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 12, "vocab": {t: i for i, t in enumerate(dict.fromkeys(wp))}}}
save("wordpiece_bert", wordpiece({"type": "BertPreTokenizer"},
    {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": True, "lowercase": False}))
save("wordpiece_splits", wordpiece({"type": "Sequence", "pretokenizers": [
    {"type": "WhitespaceSplit"},
    {"type": "Punctuation", "behavior": "Contiguous"},
    {"type": "Digits", "individual_digits": True},
    {"type": "CharDelimiterSplit", "delimiter": "e"},
    {"type": "Split", "pattern": {"String": "o"}, "behavior": "MergedWithNext", "invert": False},
    {"type": "Split", "pattern": {"Regex": "[A-Z]"}, "behavior": "MergedWithPrevious", "invert": False}]},
    {"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"}, {"type": "Lowercase"}, {"type": "Prepend", "prepend": "x"}]},
    post={"type": "RobertaProcessing", "sep": ["[SEP]", 2], "cls": ["[CLS]", 1], "trim_offsets": True, "add_prefix_space": False}))
save("wordpiece_whitespace", wordpiece({"type": "Sequence", "pretokenizers": [{"type": "Whitespace"}, {"type": "Split", "pattern": {"Regex": "\\p{N}+"}, "behavior": "Contiguous", "invert": True}]},
    {"type": "NFKD"}, decoder={"type": "Sequence", "decoders": [{"type": "WordPiece", "prefix": "##", "cleanup": False}, {"type": "Strip", "content": " ", "start": 1, "stop": 1}]},
    post={"type": "Sequence", "processors": [{"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}, template("[CLS]", 1)]}))

# 3. BPE with an end-of-word suffix (CLIP style), Whitespace pre-tokenizer, BPEDecoder.
vocab = {}
for c in chars:
    vocab.setdefault(c, len(vocab)); vocab.setdefault(c + "</w>", len(vocab))
merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o</w>"), ("t", "h"), ("th", "e</w>"), ("w", "o"), ("r", "l"), ("rl", "d</w>"), ("wo", "rld</w>")]
for a, b in merges:
    vocab.setdefault(a + b, len(vocab))
vocab.setdefault("<unk>", len(vocab))
save("bpe_suffix", {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [added(vocab["<unk>"], "<unk>")],
    "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
    "decoder": {"type": "BPEDecoder", "suffix": "</w>"},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None, "end_of_word_suffix": "</w>",
              "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": vocab, "merges": [[a, b] for a, b in merges]}})

# 4. Byte-level BPE (add_prefix_space) under Lowercase, with special, single_word, lstrip/rstrip and normalized added tokens.
# GPT-2's byte-to-char alphabet.
bl = {}
m = {}; n = 256
for b in range(256):
    m[b] = chr(b) if (33 <= b <= 126 or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF) else None
for b in range(256):
    if m[b] is None: m[b] = chr(n); n += 1
for b in range(256): bl[m[b]] = b
bmerges = [(m[32], "h"), ("h", "e"), (m[32] + "h", "e"), ("l", "l"), (m[32] + "he", "ll"), (m[32] + "hell", "o")]
for a, b2 in bmerges: bl.setdefault(a + b2, len(bl))
nb = len(bl)
save("bytelevel_added", {"version": "1.0", "truncation": None, "padding": None,
    "added_tokens": [added(nb, "<|endoftext|>"), added(nb + 1, "[MASK]", special=True, lstrip=True, rstrip=True),
                     added(nb + 2, "hello", special=False, single_word=True, normalized=True),
                     added(nb + 3, "<tool>", special=False, normalized=False), added(nb + 4, "WORLD", special=False, normalized=True)],
    "normalizer": {"type": "Lowercase"},
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
              "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": bl, "merges": [[a, b2] for a, b2 in bmerges]}})
