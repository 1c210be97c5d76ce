"""The job domain: the queue, submitting, bulk actions, code versions, usage, provenance."""
