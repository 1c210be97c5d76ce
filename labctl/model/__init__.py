"""The job model, below all that acts on jobs: the `Job` record and the states of its life."""
