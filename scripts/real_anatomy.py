"""The real-anatomy fine-tune of the interaction network, from start to candidate weights.

    python scripts/real_anatomy.py members            # the shipped ensemble's members -> runs/members
    python scripts/real_anatomy.py candidate RUN OUT  # RUN/interaction.ckpt + member 0 -> OUT.pt

``members`` writes the shipped weights' two interaction networks as weights files of their own
(``init_weights`` of the configs in ``docs/training/real_anatomy/``); ``candidate`` exports the
run's interaction network over the shipped memory network and scorer and pairs it with the
shipped one-slice member, the layout of the shipped weights (``training.weights.ensemble``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from napari_limnet.engine.model import default_weights_path
from napari_limnet.training.weights import ensemble, export, split_ensemble

MEMBERS = Path("runs/members")


def main(argv: list[str]) -> int:
    if argv[:1] == ["members"]:
        for p in split_ensemble(default_weights_path(), MEMBERS):
            print(p)
        return 0
    if argv[:1] == ["candidate"] and len(argv) == 3:
        run, out = Path(argv[1]), Path(argv[2])
        member1 = MEMBERS / "limnet_default_member1.pt"
        alone = export(run, out.with_name(out.stem + "_member.pt"), base=member1)
        ensemble([MEMBERS / "limnet_default_member0.pt", alone], out)
        print(out)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
