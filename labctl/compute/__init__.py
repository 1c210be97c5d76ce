"""Where jobs run: commands and transfers, SLURM or plain processes, clusters, mounts."""
