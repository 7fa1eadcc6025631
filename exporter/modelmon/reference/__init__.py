"""Reference profiles: what a model's inputs and outputs looked like in training
(:mod:`.profile`, the format and its loader), built by ``modelmon profile`` (:mod:`.builder`)
from training data read in chunks (:mod:`.datasource`).
"""
