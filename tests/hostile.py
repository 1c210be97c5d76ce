"""Hostile inputs the tests share: small texts that stand for huge or deep values."""

from __future__ import annotations


def alias_bomb(levels: int = 9) -> str:
    """A YAML "billion laughs": nine aliases per level, 9**levels strings in all (nine levels:
    387 million, some 4 GB once stored) from a few hundred bytes."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{','.join([f'*l{level - 1}'] * 9)}]")
    return "\n".join(lines)


def nested(depth: int) -> str:
    """A flow list nested `depth` levels deep: `[[[...]]]`."""
    return "[" * depth + "]" * depth
