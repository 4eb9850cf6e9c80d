"""Train the CE information extractor.

python -m train.iem --config configs/iem_ce.py:variant=toy
python -m train.iem --config configs/iem_ce.py:variant=imagenet --workdir runs/iem_ce_imagenet
"""

from configs import iem_base


def get_config(arg=None):
    return iem_base.get_config("ce", arg)
