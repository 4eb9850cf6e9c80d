"""The base layer: what every other layer may use and nothing of ours is imported by it.

errors (the one-line error boundary of the commands), sharding (meshes, multi-host start-up),
imagenet (the 1000-class list), trees (flattening parameter trees to '/'-joined paths).
"""
