"""Setting up a member's machine: onboarding, the crontab, doctor."""
