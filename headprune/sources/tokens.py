"""Tokens as a reader sees them: byte-level BPE markers (`Ġ` for a space, `Ċ` for a newline) decoded to text."""
from __future__ import annotations

from typing import Sequence


def display_tokens(tokenizer, ids: Sequence[int]) -> list[str]:
    """One readable label per token id: the decoded text of the token (so `Ġgood` reads `good`), a visible
    `␣` / `⏎` for tokens that are only white space, and the raw token where decoding gives nothing."""
    raw = tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    out = []
    for token_id, token in zip(ids, raw):
        text = tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)
        if text.strip():
            out.append(text.strip())
        elif text:
            out.append(text.replace("\n", "⏎").replace(" ", "␣").replace("\t", "⇥"))
        else:
            out.append(str(token))
    return out
