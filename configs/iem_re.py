"""Train the RE information extractor.

python -m train.iem --config configs/iem_re.py:variant=toy
python -m train.iem --config configs/iem_re.py:variant=imagenet --workdir runs/iem_re_imagenet
"""

from configs import iem_base


def get_config(arg=None):
    return iem_base.get_config("re", arg)
