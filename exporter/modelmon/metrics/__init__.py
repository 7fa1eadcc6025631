"""``/metrics``: the metric catalogue, defined once (:mod:`.catalogue`, the contract that rules,
dashboards and docs are generated from), the hot-path instruments (:mod:`.instruments`),
bounded label values (:mod:`.cardinality`), the exposition that serves a scrape in slices
(:mod:`.exposition`), and docs/metrics.md's generator (:mod:`.docs`).
"""
