"""The paper's tables from a recipe: `python -m explain.report --config configs/imagenet.py`.

Reads WORKDIR/iem_{ce,re,te}/metrics.jsonl (Table 1), WORKDIR/sample_{arch}/report.json
(Table 2) and WORKDIR/table5/table5.json (Table 5), writes WORKDIR/tables.md and tables.json with
the paper's numbers beside ours, and prints the Markdown. Steps not run yet show as 'not run'.
"""

from __future__ import annotations

import sys

from absl import app, logging
from ml_collections import config_flags

from cortex_jax.core import errors
from cortex_jax.experiments import recipe

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/imagenet.py[:runlocal]")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if _CONFIG.value is None:
        sys.exit("error: pass --config configs/imagenet.py (or :runlocal)")
    with errors.one_line_errors():
        _, text = recipe.tables(_CONFIG.value)
    print(text)


if __name__ == "__main__":
    app.run(main)
