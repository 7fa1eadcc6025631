"""The sidecar process: its state and lifecycle (:mod:`.state`), the two listeners and
``serve()`` (:mod:`.listeners`), the admin port's endpoints (:mod:`.admin`) with the bearer
token (:mod:`.auth`) and the push API (:mod:`.push`), background jobs (:mod:`.scheduler`) and
the file-descriptor budget (:mod:`.fds`).
"""
