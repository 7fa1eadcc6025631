"""What the sidecar observes outside the payloads, each module a piece of state beside the
collector that exposes it: proxied traffic (:mod:`.traffic`), health probes (:mod:`.health`),
memory and CPU (:mod:`.resources`), and the models with their versions and ages
(:mod:`.models`). The engines' collectors live beside their own state, in ``drift`` and
``labels``.
"""
