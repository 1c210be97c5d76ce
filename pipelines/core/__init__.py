"""Code shared by the job types (no job type lives here). Importing it needs only the stdlib."""
