"""Telling a job's owner that it completed, failed, or waits for their session to a cluster.

`notifyconfig` holds the settings (SMTP, the lab's webhook) and each member's choice, `messages`
writes the texts, `channels` sends them (smtplib, urllib). The watchdog's `jobs` stage sends
what is due (`labctl.stages.notices`); the events are recorded on the jobs by `labctl.jobs.queue`.
"""
