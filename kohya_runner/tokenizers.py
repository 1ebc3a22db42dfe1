"""Offline CLIP tokenizer folders for sd-scripts' `--tokenizer_cache_dir` (contract §6.3).

sd-scripts never reads tokenizers from the model; it loads them by Hub id, or from
`<tokenizer_cache_dir>/<id with / replaced by _>` when that folder exists. kr writes those folders
itself, from the CLIP BPE vocabulary `bpe_simple_vocab_16e6.txt.gz` that ships inside the
open-clip-torch package (an installed `open_clip`, or an `open_clip_torch-*.whl` file read as a zip),
so no machine of kr's ever talks to the Hub.

vocab.json and merges.txt are derived the way CLIP's own tokenizer builds its table: the 256 byte
symbols, the same with "</w>", one token per merge (the first 48,894 merges), then the two special
tokens: 49,408 entries in all.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import atomic
from .errors import BadInput, Failed

BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
BPE_MEMBER = f"open_clip/{BPE_NAME}"
MERGE_COUNT = 49152 - 256 - 2  # CLIP keeps merges[1 : 49152-256-2+1] of the file: 48,894 of them
VOCAB_SIZE = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class TokenizerSpec:
    folder: str  # sd-scripts' name: the Hub id with "/" replaced by "_"
    hub_id: str
    pad_token: str


# Both Hub folders pad with <|endoftext|>. SDXL's second text encoder was trained with pad id 0 ("!"),
# which sd-scripts forces after loading (`tokenizer2.pad_token_id = 0`, library/strategy_sdxl.py); that
# only renames the pad token. A folder that *declares* "!" as its pad token is different: transformers
# then registers "!" as a special token and every "!" in a caption becomes a bare id 0 instead of the BPE
# tokens "!</w>"/"!!!</w>" (diffusers#4153). So the bigG folder declares <|endoftext|>, like the Hub's,
# and sd-scripts' override gives exactly the ids it gets online.
CLIP_L = TokenizerSpec("openai_clip-vit-large-patch14", "openai/clip-vit-large-patch14", EOS)
CLIP_BIGG = TokenizerSpec("laion_CLIP-ViT-bigG-14-laion2B-39B-b160k", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", EOS)
SDXL_TE2_PAD_ID = 0  # what sd-scripts sets on the bigG tokenizer at run time
TOKENIZERS = (CLIP_L, CLIP_BIGG)

HOW_TO_GET = (
    "On a machine with internet access run `pip download --no-deps open-clip-torch -d DIR`, carry DIR "
    "over, and pass that folder (or the .whl file) as the source; or install open-clip-torch into kr's "
    "own environment."
)


# --- where the folders live -------------------------------------------------------------------------


def folder_for(home: Path, spec_or_folder: object = None) -> Path:
    """The tokenizer cache folder: the spec's `model.tokenizer_cache_dir` (or a folder given as such),
    with `~` expanded and made absolute, else the workspace's `<home>/tokenizers`.

    The one rule: rendered configs, the dataset checks, doctor and `kr vendor` all ask here, so a run
    and the checks before it always read the same tokenizers. Raises nothing.
    """
    model = getattr(spec_or_folder, "model", None)
    folder = model.tokenizer_cache_dir if model is not None else spec_or_folder
    if folder:
        return Path(str(folder)).expanduser().resolve()
    from .workspace import tokenizers_dir

    return tokenizers_dir(Path(home))


def existing_folder_for(home: Path, spec_or_folder: object = None) -> Path | None:
    """folder_for(...) when that folder exists, else None (the dataset checks then estimate token counts).

    Raises nothing.
    """
    folder = folder_for(home, spec_or_folder)
    return folder if folder.is_dir() else None


# --- the BPE source --------------------------------------------------------------------------------


def read_bpe(source: Path | None = None) -> tuple[bytes, str]:
    """The gzipped BPE file's bytes and where they came from: a wheel, a folder or the installed open_clip.

    Raises BadInput when the source holds no BPE vocabulary (the message says how to get one).
    """
    if source is None:
        return _from_installed_open_clip()
    source = Path(source)
    if source.is_file():
        return _from_file(source)
    if source.is_dir():
        return _from_folder(source)
    raise BadInput(f"The tokenizer source {source} does not exist. {HOW_TO_GET}")


def _from_file(path: Path) -> tuple[bytes, str]:
    if path.name == BPE_NAME:
        return path.read_bytes(), str(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as wheel:
            if BPE_MEMBER in wheel.namelist():
                return wheel.read(BPE_MEMBER), f"{path}!{BPE_MEMBER}"
        raise BadInput(f"{path} is a zip file but holds no {BPE_MEMBER}; it is not an open-clip-torch wheel. {HOW_TO_GET}")
    raise BadInput(f"{path} is neither an open-clip-torch wheel nor {BPE_NAME}. {HOW_TO_GET}")


def _from_folder(folder: Path) -> tuple[bytes, str]:
    for candidate in (folder / BPE_NAME, folder / "open_clip" / BPE_NAME):
        if candidate.is_file():
            return candidate.read_bytes(), str(candidate)
    wheels = sorted(folder.glob("open_clip_torch-*.whl"))
    if wheels:
        return _from_file(wheels[-1])  # the highest version when several were downloaded
    raise BadInput(f"The folder {folder} holds no open_clip_torch-*.whl and no {BPE_NAME}. {HOW_TO_GET}")


def _from_installed_open_clip() -> tuple[bytes, str]:
    import importlib.util

    # find_spec on a top-level name locates the package without importing it (open_clip imports torch)
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(f"No tokenizer source was given and open_clip is not installed here. {HOW_TO_GET}")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / BPE_NAME
        if candidate.is_file():
            return candidate.read_bytes(), str(candidate)
    raise BadInput(f"The installed open_clip package has no {BPE_NAME}. {HOW_TO_GET}")


def parse_merges(gz_bytes: bytes, origin: str) -> list[tuple[str, str]]:
    """The merge pairs of the gzipped BPE file. Raises BadInput when it is not a CLIP BPE file."""
    try:
        lines = gzip.decompress(gz_bytes).decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BadInput(f"{origin} is not a readable gzipped CLIP BPE file ({exc}). {HOW_TO_GET}") from None
    merges = [tuple(line.split()) for line in lines[1 : MERGE_COUNT + 1]]  # line 0 is a version header
    if len(merges) != MERGE_COUNT or any(len(pair) != 2 for pair in merges):
        raise BadInput(f"{origin} does not hold CLIP's {MERGE_COUNT} BPE merges; it is not CLIP's vocabulary. {HOW_TO_GET}")
    return merges  # type: ignore[return-value]


# --- deriving the vocabulary ------------------------------------------------------------------------


def byte_symbols() -> list[str]:
    """CLIP's (and GPT-2's) reversible byte -> printable-character table, in CLIP's vocabulary order.

    Bytes that already print as themselves keep their character; the 68 others (control characters,
    space, a few Latin-1 ones) are mapped to 256, 257, ... in byte order, then listed after them.
    Raises nothing.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [byte for byte in range(256) if byte not in printable]
    return [chr(byte) for byte in printable] + [chr(256 + index) for index in range(len(others))]


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's token table from the merges. Raises Failed when it does not come out at VOCAB_SIZE entries."""
    symbols = byte_symbols()
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(pair) for pair in merges] + [BOS, EOS]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise Failed(
            f"The CLIP vocabulary came out with {len(vocab)} distinct tokens instead of {VOCAB_SIZE}; the BPE file is not CLIP's."
        )
    return vocab


# --- the Hub-format files ---------------------------------------------------------------------------


def _added_token(content: str) -> dict:
    return {"content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": True}


def special_tokens_map(spec: TokenizerSpec) -> dict:
    """special_tokens_map.json of one folder. Raises nothing."""
    return {
        "bos_token": _added_token(BOS),
        "eos_token": _added_token(EOS),
        "unk_token": _added_token(EOS),
        "pad_token": spec.pad_token,
    }


def tokenizer_config(spec: TokenizerSpec) -> dict:
    # The fields of the Hub's CLIPTokenizer folders (openai/clip-vit-large-patch14 and the laion bigG one)
    """tokenizer_config.json of one folder. Raises nothing."""
    return {
        "unk_token": {**_added_token(EOS), "__type": "AddedToken"},
        "bos_token": {**_added_token(BOS), "__type": "AddedToken"},
        "eos_token": {**_added_token(EOS), "__type": "AddedToken"},
        "pad_token": spec.pad_token,
        "add_prefix_space": False,
        "errors": "replace",
        "do_lower_case": True,
        "name_or_path": spec.hub_id,
        "model_max_length": 77,
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
    }


def folder_files(spec: TokenizerSpec, vocab: dict[str, int], merges: list[tuple[str, str]]) -> dict[str, str]:
    """File name -> text of one tokenizer folder. Raises nothing."""
    merges_text = "#version: 0.2\n" + "".join(f"{first} {second}\n" for first, second in merges)
    return {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": merges_text,
        "tokenizer_config.json": json.dumps(tokenizer_config(spec), indent=2) + "\n",
        "special_tokens_map.json": json.dumps(special_tokens_map(spec)) + "\n",
    }


def build_tokenizer_cache(cache_dir: Path, *, source: Path | None = None) -> list[Path]:
    """Write both SDXL tokenizer folders (CLIP-L and bigG) into cache_dir; returns the folders written.

    Each folder is written beside its final place and renamed in, so a reader never sees half a folder.
    Raises BadInput (no usable source), Failed (a vocabulary of the wrong size).
    """
    gz_bytes, origin = read_bpe(source)
    merges = parse_merges(gz_bytes, origin)
    vocab = clip_vocab(merges)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    return [_write_folder(cache_dir / spec.folder, folder_files(spec, vocab, merges)) for spec in TOKENIZERS]


def _write_folder(target: Path, files: dict[str, str]) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.kr-new-", dir=target.parent))
    try:
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        atomic.swap_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# --- status -----------------------------------------------------------------------------------------


def tokenizer_status(cache_dir: Path) -> dict:
    """{"cache_dir", "complete", "folders": {folder: {"present", "missing_files", "vocab_size", "pad_token"}}}

    Raises nothing.
    """
    cache_dir = Path(cache_dir)
    folders = {spec.folder: _folder_status(cache_dir / spec.folder) for spec in TOKENIZERS}
    complete = all(
        info["present"] and not info["missing_files"] and info["vocab_size"] == VOCAB_SIZE for info in folders.values()
    )
    return {"cache_dir": str(cache_dir), "complete": complete, "folders": folders}


def _folder_status(folder: Path) -> dict:
    info = {"present": folder.is_dir(), "missing_files": [], "vocab_size": None, "pad_token": None}
    if not info["present"]:
        return info
    info["missing_files"] = [name for name in FILES if not (folder / name).is_file()]
    try:
        info["vocab_size"] = len(json.loads((folder / "vocab.json").read_text(encoding="utf-8")))
        info["pad_token"] = json.loads((folder / "special_tokens_map.json").read_text(encoding="utf-8")).get("pad_token")
    except (OSError, ValueError):
        pass  # reported through missing_files / vocab_size None
    return info
