"""The job domain: states, the queue, submitting, the batch script, code versions."""
