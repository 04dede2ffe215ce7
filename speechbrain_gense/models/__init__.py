"""Models of the project (codecs, enhancers) and their losses."""

from .simcodec import SimCodec, reorganize, to_stage2  # noqa: F401
