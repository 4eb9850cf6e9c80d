"""What people look at: matplotlib figures (plots) and the static token atlas (atlas).

Imports: core and io (images). They draw reports; they compute nothing of the method.
"""
