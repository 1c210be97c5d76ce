"""The lab's analysis code, shipped to the clusters and run there by `python -m pipelines run`.

It runs without labctl or database access: the watchdog ships the inputs into a job folder,
runs one job type's `run(...)`, and collects what it wrote into the outputs folder.
"""
