"""The lab's analysis code, shipped to the clusters and run there by `python -m pipelines run`.

It runs without labctl or database access: the watchdog ships the inputs into a job folder,
runs one job type's `run(...)`, and collects what it wrote into the outputs folder.
"""

MIN_PYTHON = (3, 8)
"""The oldest Python the pipelines run under: the cluster's, which may be older than the lab
server's (an MPCDF module environment, say). Their tests need the lab server's Python."""
