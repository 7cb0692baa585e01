"""Write the shapes world's drawn edits as an edit-data folder (what ``rollouts.edits`` reads).

    python -m ops.shapes_edits data/edits/shapes --n 64 --seed 0

Each line of ``metadata.jsonl`` holds the source, the instruction, the drawn target and the target and
source captions (:func:`srpo.world.edits.write_edit_folder`); the folder is written atomically.
"""

from __future__ import annotations

import argparse

from srpo.world.edits import draw_edits, write_edit_folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the folder to write (replaced whole if it exists)")
    parser.add_argument("--n", type=int, default=64, help="edits to draw")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n {args.n}: draw at least one edit")
    print(write_edit_folder(draw_edits(args.n, args.seed), args.folder))


if __name__ == "__main__":
    main()
