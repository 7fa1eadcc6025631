"""The hand-off: proxied and pushed payloads wait in a bounded queue off the request path
(:mod:`.queue`), then the analyser (:mod:`.analyser`) runs them through the protocol adapters
and, per model, the engines (drift, the label join, segments).
"""
