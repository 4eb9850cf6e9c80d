"""Train the TE information extractor.

python -m train.iem --config configs/iem_te.py:variant=toy
python -m train.iem --config configs/iem_te.py:variant=imagenet --workdir runs/iem_te_imagenet
"""

from configs import iem_base


def get_config(arg=None):
    return iem_base.get_config("te", arg)
