"""Files: where models and data come from and go to.

sources (every `load_*`: VQGAN, cin VQGM, MaskGIT, DalleBart, the ResNet classifier, from names,
folders, the hub and foreign checkpoints), folders (our folder format, IEM and GPT folders, the
hub cache), convert (taming / torchvision state dicts → our parameter trees), torch_pickle
(torch checkpoints read without torch or code execution), shards (token datasets, atomic
writes), images (reading and writing images), events (TensorBoard event files), reports (the
sample-level report, typed: `SampleLevelReport`). Imports: core and models.
"""
