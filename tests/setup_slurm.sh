#!/usr/bin/env bash
# Install what tests/test_slurm*.py need: Debian's Slurm (`slurm-wlm`: slurmctld, slurmd and the client commands)
# and `munge` (Slurm's authentication). The tests start a one-node cluster on localhost from these binaries, with
# its configuration and state in a temporary folder (tests/slurm_cluster.py); nothing here configures or starts a
# system service.
#
# Idempotent: does nothing when the binaries exist. Installs with apt-get only where apt-get is available and we are
# root (or have passwordless sudo); otherwise prints why and exits 0, and the Slurm tests skip with that reason
# (they fail instead when the binaries exist but the cluster does not start, or when CI is set).
set -euo pipefail
source "$(dirname "$0")/apt_install.sh"
export PATH="$PATH:/usr/sbin:/sbin"  # slurmctld, slurmd, munged

missing=""
for cmd in sbatch squeue scancel scontrol sinfo slurmctld slurmd munged; do
    command -v "$cmd" >/dev/null 2>&1 || missing="$missing $cmd"
done
if [ -z "$missing" ]; then
    echo "setup_slurm: Slurm present ($(slurmd -V 2>/dev/null || echo 'version unknown'))"
    exit 0
fi
# The packages' post-install scripts try to start services; in a container without systemd they cannot, harmlessly.
apt_install "setup_slurm:$missing missing" slurm-wlm munge || exit 0
slurmd -V
