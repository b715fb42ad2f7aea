"""Write data/dummy.data: the example pipeline's tiny labelled images, always the same bytes.

Regenerate it with `python data/make_dummy_data.py`, or write elsewhere with
`python data/make_dummy_data.py OUTPUT`. Only the standard library is needed.

Each row is one noisy 4x4 grayscale image of a bar: `label,p0,...,p15`, where label 0 is a
horizontal bar, 1 a vertical one, and p0..p15 are the pixels row by row, 0-255. A few rows
are deliberately bad, a fixed number of each kind in BAD_KINDS, so that the preprocess
filter has real work to do. Lines starting with `#` are comments.
"""

import random
import sys
from pathlib import Path
from typing import Callable, Dict, List

SEED = 1234
NR_ROWS = 1200
SIDE = 4
BAD_PER_KIND = 8
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "dummy.data"

# Noise is a sum of uniforms, not random.gauss: plain + and * give the same bytes on every
# platform, whereas gauss goes through the C library's log and cos.
NOISE = 70
LABEL_NOISE = 0.02


def _noise(rng: random.Random) -> float:
    """Return a bell-shaped value in [-NOISE, NOISE], centred on 0."""
    return (rng.random() + rng.random() + rng.random() - 1.5) / 1.5 * NOISE


def make_image(rng: random.Random, label: int) -> List[int]:
    """Return the 16 pixels of one noisy image: a bright bar on a dim background."""
    line = rng.randrange(SIDE)
    background = rng.uniform(10, 70)
    bar = rng.uniform(120, 230)
    pixels = []
    for row in range(SIDE):
        for column in range(SIDE):
            on_bar = (row if label == 0 else column) == line
            value = (bar if on_bar else background) + _noise(rng)
            pixels.append(min(255, max(0, round(value))))
    return pixels


def _drop_field(rng: random.Random, fields: List[str]) -> List[str]:
    return fields[:-1]


def _nan(rng: random.Random, fields: List[str]) -> List[str]:
    fields[rng.randrange(1, len(fields))] = "nan"
    return fields


def _garbage(rng: random.Random, fields: List[str]) -> List[str]:
    fields[rng.randrange(1, len(fields))] = rng.choice(["x", "12o", "", "N/A", "#"])
    return fields


def _out_of_range(rng: random.Random, fields: List[str]) -> List[str]:
    fields[rng.randrange(1, len(fields))] = str(rng.choice([-1, -40, 256, 300, 999]))
    return fields


def _unknown_label(rng: random.Random, fields: List[str]) -> List[str]:
    fields[0] = rng.choice(["2", "-1", "h", "01x"])
    return fields


# How each kind of bad row is made from a good one; preprocess names the same kinds.
BAD_KINDS: Dict[str, Callable[[random.Random, List[str]], List[str]]] = {
    "wrong field count": _drop_field,
    "nan": _nan,
    "not a number": _garbage,
    "out of range": _out_of_range,
    "unknown label": _unknown_label,
}


def make_lines(seed: int = SEED) -> List[str]:
    """Return every line of the data file, comments first, without line ends."""
    rng = random.Random(seed)
    lines = [
        f"# crude-link example data: {NR_ROWS} noisy 4x4 grayscale images of a bar.",
        "# label 0 = horizontal bar, 1 = vertical bar; p0..p15 = pixels row by row, 0-255.",
        f"# {BAD_PER_KIND} rows of each kind are deliberately bad: {', '.join(BAD_KINDS)}.",
        f"# Made by data/make_dummy_data.py (seed {seed}): python data/make_dummy_data.py",
        "# label," + ",".join(f"p{i}" for i in range(SIDE * SIDE)),
    ]
    bad_rows = rng.sample(range(NR_ROWS), BAD_PER_KIND * len(BAD_KINDS))
    spoil = {row: kind for row, kind in zip(bad_rows, list(BAD_KINDS) * BAD_PER_KIND)}
    for row in range(NR_ROWS):
        label = rng.randrange(2)
        pixels = make_image(rng, label)
        # A few mislabelled images, as in any hand-labelled set: no model gets everything right.
        if rng.random() < LABEL_NOISE:
            label = 1 - label
        fields = [str(label)] + [str(p) for p in pixels]
        if row in spoil:
            fields = BAD_KINDS[spoil[row]](rng, fields)
        lines.append(",".join(fields))
    return lines


def main() -> int:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    output.parent.mkdir(parents=True, exist_ok=True)
    # newline="\n": the same bytes on Windows, so the regeneration test holds there too.
    with output.open("w", encoding="utf-8", newline="\n") as file:
        file.write("\n".join(make_lines()) + "\n")
    print(f"wrote {NR_ROWS} rows to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
