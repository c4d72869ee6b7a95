"""Ray: encoding a sharded build on a cluster and serving shards from Ray actors (the ``ray`` extra).

Rule: imports :mod:`fastdpr.index` and the layers below it; nothing above imports Ray except through here.
"""
