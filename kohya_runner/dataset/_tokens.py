"""CLIP token counts for captions: the real tokenizer when its folder is there, else an estimate."""

from __future__ import annotations

import math
import re
from pathlib import Path

from ..tokenizers import CLIP_L
from ._probe import short_message

TOKENIZER_FOLDER = CLIP_L.folder  # inside sd-scripts' --tokenizer_cache_dir


def estimate_clip_tokens(text: str) -> int:
    """A rough CLIP BPE count without the vocabulary: common words are one token, long or rare ones
    split, digits are one token each, punctuation runs about one token per two characters."""
    count = 0
    for piece in re.findall(r"'(?:s|t|re|ve|m|ll|d)|[^\W\d_]+|\d|[^\s\w]+|_+", text.lower()):
        if piece[0].isdigit():
            count += 1
        elif piece[0].isalpha():
            count += 1 if len(piece) <= 10 else math.ceil(len(piece) / 5)
        else:
            count += max(1, math.ceil(len(piece) / 2))
    return count


def _token_upper_bound(text: str) -> int:
    # every BPE token covers at least one non-space byte, so this can never be below the real count
    return len("".join(text.lower().split()).encode("utf-8"))


class TokenCounter:
    """Counts CLIP tokens with the real tokenizer when one is given, else estimates.

    The tokenizer (transformers) is loaded only when some caption could exceed `limit`.
    """

    def __init__(self, tokenizer_dir: Path | None, limit: int):
        self.tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else None
        self.limit = limit
        self.method = "estimate"
        self.problem: str | None = None
        self._tokenizer = None
        self._tried = False

    def count(self, text: str, *, always: bool = False) -> int:
        """Exact when possible and worthwhile (over the limit, or `always`), else the estimate."""
        if (always or _token_upper_bound(text) > self.limit) and self._load():
            return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        return estimate_clip_tokens(text)

    def _load(self) -> bool:
        if self._tried:
            return self._tokenizer is not None
        self._tried = True
        if self.tokenizer_dir is None:
            return False
        folder = self.tokenizer_dir / TOKENIZER_FOLDER
        if not (folder / "vocab.json").is_file():
            self.problem = f"no CLIP tokenizer files in {folder}"
            return False
        try:
            from transformers import CLIPTokenizer

            self._tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # ImportError, broken files
            self.problem = f"cannot load the CLIP tokenizer from {folder}: {short_message(exc)}"
            return False
        self.method = "clip"
        return True
