#!/usr/bin/env bash
# Install what tests/test_slurm.py needs: Debian's Slurm (`slurm-wlm`: slurmctld, slurmd and the client commands)
# and `munge` (Slurm's authentication). The tests start a one-node cluster on localhost from these binaries, with
# its configuration and state in a temporary folder; nothing here configures or starts a system service.
#
# Idempotent: does nothing when the binaries exist. Installs with apt-get only where apt-get is available and we are
# root (or have passwordless sudo); otherwise prints why and exits 0, and the Slurm tests skip with that reason
# (they fail instead when the binaries exist but the cluster does not start, or when CI is set).
set -euo pipefail

NEEDED="sbatch squeue scancel scontrol slurmctld slurmd munged"
missing=""
for cmd in $NEEDED; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing="$missing $cmd"
done
if [ -z "$missing" ]; then
    echo "setup_slurm: Slurm present ($(PATH="$PATH:/usr/sbin" slurmd -V 2>/dev/null || echo "version unknown"))"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_slurm:$missing missing and apt-get not available; Slurm tests will be skipped" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "setup_slurm:$missing missing and not root (no passwordless sudo); Slurm tests will be skipped" >&2
        exit 0
    fi
fi
echo "setup_slurm: installing Debian slurm-wlm and munge with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The packages' post-install scripts try to start services; in a container without systemd they cannot, harmlessly.
$SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge
PATH="$PATH:/usr/sbin" slurmd -V
